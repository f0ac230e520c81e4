"""Processes that start at once on a new database each set up the job queue, and each can enqueue at once.

SAQ creates its tables on a queue's first connect, unless another session holds its
schema lock: then it goes on at once, and on a new database the tables that session is
creating may not be committed yet (``relation "botloom_jobs" does not exist`` on the first
enqueue). botloom serialises the set-up across processes (an advisory lock of its own).
"""

from __future__ import annotations

import asyncio

import psycopg

from botloom.core.settings import Settings
from botloom.runtime.queue import JOBS_TABLE, JobQueue

OPENERS = 6
"""Queues connected at once, each on a pool of its own (as processes would)."""


async def test_queues_connected_at_once_on_a_new_database_all_enqueue(settings: Settings, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:  # the migrated template has no job tables yet
        assert conn.execute("SELECT to_regclass(%s)", (JOBS_TABLE,)).fetchone() == (None,)
    queues = [JobQueue.for_settings(settings, database_url) for _ in range(OPENERS)]

    async def connect_and_enqueue(queue: JobQueue, n: int) -> bool:
        await queue.connect()
        return await queue.enqueue("turns", "noop", key=f"job-{n}")

    try:  # gather starts them in one turn of the loop: their set-ups overlap
        assert await asyncio.gather(*(connect_and_enqueue(q, n) for n, q in enumerate(queues))) == [True] * OPENERS
    finally:
        for queue in queues:
            await queue.close()
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {JOBS_TABLE}").fetchone()
    assert row == (OPENERS,)
