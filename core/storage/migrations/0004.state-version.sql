-- The version of a conversation's checkpointed graph state, so a turn knows without
-- reading the checkpoint whether the state needs a migration (0: not known yet).
ALTER TABLE conversations ADD COLUMN state_version integer NOT NULL DEFAULT 0;
