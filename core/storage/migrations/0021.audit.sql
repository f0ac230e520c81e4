-- The audit log (docs/audit.md): who changed what, when, in which tenant, by which request.
--
-- Append-only from the application's side: botloom inserts rows (in the transaction of the change they record)
-- and deletes them only when they are older than BOTLOOM_AUDIT_RETENTION_DAYS; no statement updates one, and
-- the trigger below refuses any that tries. No foreign key to tenants on purpose: a tenant's deletion is itself
-- recorded, and its rows stay until they age out. A row never holds a secret, an end user's address or a
-- message's text (runtime/audit.py).
CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    -- NULL: a deployment-wide action (none yet).
    tenant_id uuid,
    -- Who: 'operator', 'api_key', 'agent' or 'system', and the key's or agent's id (never a secret).
    principal_kind text NOT NULL,
    principal_id text,
    action text NOT NULL,
    -- What was changed: its kind ('bot', 'api_key'...) and id.
    target_kind text NOT NULL,
    target_id text,
    request_id text,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
