-- The runner looks for a conversation's unanswered inbound messages at least twice a turn;
-- without this index that walks every message of the conversation.
CREATE INDEX messages_pending_inbound ON messages (conversation_id, created_at, id)
    WHERE direction = 'inbound' AND status IN ('received', 'processing');
