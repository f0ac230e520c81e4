-- Events (the agent desk's transitions and whatever else botloom reports to a tenant) and the
-- tenant's webhook endpoints they are delivered to. See docs/webhooks.md.
--
-- events is an outbox: an event is stored, with one webhook_deliveries row per endpoint that wants
-- it, in the transaction that emits it; jobs deliver those rows (at least once, retried with
-- back-off) in the order of `sequence` within a stream (one conversation, or the tenant's events
-- without a conversation). `id` is the event id receivers de-duplicate by; `position` orders a
-- tenant's events for polling (GET /api/v1/events?after=).

CREATE TABLE event_streams (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    stream text NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);

CREATE TABLE events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position bigserial NOT NULL UNIQUE,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id uuid,
    stream text NOT NULL,
    sequence bigint NOT NULL,
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,63}$'),
    data jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (tenant_id, stream, sequence),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX events_tenant_position ON events (tenant_id, position);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url text NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    secret bytea NOT NULL,
    kinds text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id) WHERE active;

CREATE TABLE webhook_deliveries (
    endpoint_id uuid NOT NULL,
    event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL,
    stream text NOT NULL,
    sequence bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    finished_at timestamptz,
    PRIMARY KEY (endpoint_id, event_id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, stream, sequence) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
