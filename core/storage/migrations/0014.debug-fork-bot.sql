-- A debug fork names its bot within its own tenant (docs/debugger-actions.md): the composite key
-- (tenant_id, bot_id) must be one of that tenant's bots, so a fork can never name another tenant's
-- bot, and deleting a bot deletes its forks' rows. A row that names a bot outside its tenant (which
-- the API never wrote) is removed first so the constraint can be added.
DELETE FROM debug_forks f
WHERE NOT EXISTS (SELECT 1 FROM bots b WHERE b.tenant_id = f.tenant_id AND b.id = f.bot_id);
ALTER TABLE debug_forks
    ADD CONSTRAINT debug_forks_tenant_bot FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id)
    ON DELETE CASCADE;
