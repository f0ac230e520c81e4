-- End users' data rights (docs/data-rights.md): checkpoint threads still to erase.
--
-- A conversation's LangGraph state lives in the checkpointer (PostgreSQL's checkpoint tables, or Redis),
-- outside this schema, so deleting a conversation (a contact's erasure, a bot's or a tenant's deletion)
-- cannot cascade to it. The transaction that deletes the rows records their threads here instead, and
-- runtime/erasure.py deletes them: at once, then once more after every turn or fork run that could still
-- have been writing to them has ended (a turn is bounded by BOTLOOM_TURN_TIMEOUT), then the row goes.
-- No foreign keys on purpose: a row outlives the tenant, bot and conversation it names.
CREATE TABLE checkpoint_erasures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    -- NULL: the conversation's own thread (runtime.turn_context.thread_id); else a debug fork's thread.
    thread_id text,
    reason text NOT NULL CHECK (reason IN ('contact', 'bot', 'tenant', 'retention')),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- When the threads were first deleted (NULL: not yet); the row goes after the second deletion.
    erased_at timestamptz
);
CREATE INDEX checkpoint_erasures_due ON checkpoint_erasures (erased_at NULLS FIRST, id);
CREATE INDEX checkpoint_erasures_tenant ON checkpoint_erasures (tenant_id, id) WHERE erased_at IS NULL;
