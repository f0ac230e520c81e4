-- What tenants teach their bots for the offline engine (#17): synonyms and extra intent examples,
-- and an index over the questions a bot could not answer (its fallbacks), listed as what to teach next.
-- `revision` is bumped by every change of a bot's teaching: the engine reads it each turn (one small
-- query) and reloads the rest only when it changed.

CREATE TABLE bot_teaching (
    bot_id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    synonyms jsonb NOT NULL DEFAULT '{}',
    revision bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE intent_examples (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    intent text NOT NULL CHECK (length(intent) BETWEEN 1 AND 200),
    text text NOT NULL CHECK (length(text) BETWEEN 1 AND 500),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bot_id, intent, text),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);

-- Inbound messages whose turn found no answer (the outcome the runner records has no intent).
CREATE INDEX messages_fallbacks ON messages (bot_id, created_at)
    WHERE direction = 'inbound' AND metadata ? 'outcome' AND (metadata -> 'outcome' ->> 'intent') IS NULL;
