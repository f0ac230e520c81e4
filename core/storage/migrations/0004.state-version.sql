-- The version of a conversation's checkpointed graph state, so a turn knows without
-- reading the checkpoint whether the state needs a migration (0: not known yet).
ALTER TABLE conversations ADD COLUMN state_version integer NOT NULL DEFAULT 0;

-- Checkpoint retention: when a conversation's old checkpoints were last pruned, and
-- when a closed conversation's checkpoints were removed (its transcript stays).
ALTER TABLE conversations ADD COLUMN pruned_at timestamptz;
ALTER TABLE conversations ADD COLUMN archived_at timestamptz;
