-- #16 goal 3: a push channel's webhook may acknowledge after storing ONE durable row (BOTLOOM_WEBHOOK_INBOX):
-- the parsed message, keyed by its channel's message id (a provider's retry finds the key and is dropped). A
-- worker turns each row into its conversation, message and turn job (the same idempotent store as the
-- acknowledgement's otherwise), then deletes it; a worker that dies mid-ingest leaves the row for the next.
-- Two indexes (the key and the unique message id), as a route that stores the form in one row.
CREATE TABLE webhook_inbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    channel text NOT NULL,
    idempotency_key text,
    message bytea NOT NULL,
    received_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    UNIQUE (bot_id, channel, idempotency_key),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);
