-- Debug forks (docs/debugger-actions.md): a turn of a conversation re-run on a thread of its own, never sent.
-- The fork's state lives in the checkpointer under thread_id; this row scopes it to its tenant and bot,
-- names the original checkpoint it was forked from and keeps the breakpoints it pauses at.
CREATE TABLE debug_forks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    checkpoint_id text NOT NULL,
    thread_id text NOT NULL UNIQUE,
    break_before text[] NOT NULL DEFAULT '{}',
    break_after text[] NOT NULL DEFAULT '{}',
    edited boolean NOT NULL DEFAULT false,  -- its state was edited: a replay of its message alone differs
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX debug_forks_conversation ON debug_forks (tenant_id, conversation_id, created_at DESC);
