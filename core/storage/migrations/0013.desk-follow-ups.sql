-- Desk follow-ups (#15): a closed handover records when the bot took its conversation back (the graph's resume).
-- resumed_at NULL on a closed handover: the resume failed and the desk's sweep retries it (resume_attempts).
ALTER TABLE handovers ADD COLUMN resumed_at timestamptz;
ALTER TABLE handovers ADD COLUMN resume_attempts integer NOT NULL DEFAULT 0;
UPDATE handovers SET resumed_at = closed_at WHERE status IN ('resolved', 'returned_to_bot', 'timed_out_to_bot');
CREATE INDEX handovers_resume_pending ON handovers (closed_at)
    WHERE resumed_at IS NULL AND status IN ('resolved', 'returned_to_bot', 'timed_out_to_bot');
