"""Built-in tool and intent plugins: knowledge search, human handoff, small talk, demo shop."""
