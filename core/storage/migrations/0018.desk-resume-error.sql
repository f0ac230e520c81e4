-- Desk and debugger polish: a closed handover whose resume failed keeps the last failure's error code (the
-- exception's type name, never a remote server's text), so the desk can show why the bot has not taken it back.
ALTER TABLE handovers ADD COLUMN resume_error text;
