"""A process holding a conversation lock until it is killed: ``python -m tests.lock_holder BACKEND URL KEY``.

``BACKEND`` is ``postgres`` (an advisory lock, :class:`~botloom.runtime.locks.PostgresLocks`)
or ``redis`` (a leased Redis lock, :class:`~botloom.runtime.locks.RedisLocks`, set up
as the services set it up: renewed for at most 2 x a 120 s turn timeout). It prints
``held`` once it holds the lock, then waits for ever.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


async def main(backend: str, url: str, key: str) -> None:
    """Hold ``key``'s lock until killed."""
    from botloom.runtime.locks import PostgresLocks, RedisLocks

    locks: Any
    if backend == "postgres":
        from botloom.core.storage.database import Database

        locks = PostgresLocks(await Database.open(url, max_size=2, migrate=False))
    else:
        from redis.asyncio import Redis

        locks = RedisLocks(Redis.from_url(url), expire=240.0)
    async with locks.hold(key):
        print("held", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
