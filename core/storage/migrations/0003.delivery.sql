-- botloom delivery: what happened to each outbound message on its way to a push channel.
-- A reply is stored 'pending'; a delivery job moves it to 'sending', then 'sent' (or, after
-- its last attempt, 'failed': a dead letter the API lists and can retry). Status callbacks of
-- the provider move it on to 'delivered', 'undelivered' or 'failed'.
--
-- A long reply goes out in parts (SMS and WhatsApp limits); each part sent is a row of
-- message_parts, so a delivery re-run after a crash sends only the parts not sent yet, and a
-- provider's status callback finds its part by the provider's id or by the part's reference.

ALTER TABLE messages ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN next_attempt_at timestamptz;

-- What the recovery sweep looks for: messages whose turn or delivery has not finished.
CREATE INDEX messages_unfinished ON messages (created_at)
    WHERE status IN ('received', 'processing', 'pending', 'sending');
CREATE INDEX messages_dead_letters ON messages (bot_id, updated_at DESC)
    WHERE direction = 'outbound' AND status IN ('failed', 'undelivered');
CREATE INDEX messages_turn ON messages (turn_id) WHERE turn_id IS NOT NULL;

CREATE TABLE message_parts (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    part smallint NOT NULL CHECK (part >= 0),
    tenant_id uuid NOT NULL,
    channel text NOT NULL,
    via text NOT NULL CHECK (via IN ('send', 'response')),
    provider_id text,
    status text NOT NULL CHECK (status IN ('sent', 'delivered', 'undelivered', 'failed')),
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, part)
);
CREATE INDEX message_parts_provider ON message_parts (channel, provider_id) WHERE provider_id IS NOT NULL;
