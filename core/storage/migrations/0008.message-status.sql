-- Message statuses as botloom.core.statuses defines them (InboundStatus, OutboundStatus, by direction);
-- until now messages.status took any string. Every value botloom has ever written is one of these, so
-- the constraint is checked against the existing rows too. Conversations (0001) and message parts
-- (0003) have had theirs from the start. See docs/architecture.md (Statuses) for what each one means.
ALTER TABLE messages ADD CONSTRAINT messages_status CHECK (
    (direction = 'inbound'
        AND status IN ('received', 'processing', 'answered', 'refused', 'rejected', 'for_agent', 'failed', 'merged'))
    OR (direction = 'outbound'
        AND status IN ('pending', 'sending', 'sent', 'delivered', 'undelivered', 'failed'))
);
