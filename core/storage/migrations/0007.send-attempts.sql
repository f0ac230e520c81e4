-- botloom delivery, exactly once where the provider allows it: a part's attempt is recorded here
-- before the channel hands the part to the provider. A row is an attempt whose outcome botloom
-- does not know: the provider may have the message (the worker died mid-send, the send timed out,
-- the database went away before the provider's id was recorded). The row goes when the part is
-- recorded sent (message_parts) or the provider refused it; a retry that finds one asks a channel
-- that can (the finds_sent capability) whether the message went out since attempted_at before
-- sending it again.
CREATE TABLE message_send_attempts (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    part smallint NOT NULL CHECK (part >= 0),
    tenant_id uuid NOT NULL,
    channel text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    tries integer NOT NULL DEFAULT 1,
    PRIMARY KEY (message_id, part)
);
