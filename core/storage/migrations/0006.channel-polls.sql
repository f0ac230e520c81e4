-- Where each polling channel (an IMAP mailbox) of each bot left off, and how its last poll went.
CREATE TABLE channel_polls (
    bot_id uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    channel text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    cursor jsonb NOT NULL DEFAULT '{}',
    polled_at timestamptz NOT NULL DEFAULT now(),
    error text,
    PRIMARY KEY (bot_id, channel)
);
