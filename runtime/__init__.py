"""What runs turns and messages.

The turn runner, the one inbound path, delivery, the job queue, locks, polling,
retention, checkpointers and the composition root (``services.py``).
"""
