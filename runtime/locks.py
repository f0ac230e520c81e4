"""Conversation locks: turns of one conversation run one at a time, across every process.

With Redis configured the lock is a Redis lock (with an expiry, so a crashed
process cannot hold it for ever); otherwise a PostgreSQL advisory lock, which
the server releases when the holding connection dies.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from botloom.core.storage.database import Database

logger = logging.getLogger(__name__)


class ConversationLocks(Protocol):
    """Holds one lock per conversation key."""

    def hold(self, key: str) -> Any:
        """An async context manager that holds the lock for ``key``."""
        ...

    def try_hold(self, key: str) -> Any:
        """An async context manager yielding ``True`` holding the lock, or ``False`` if another holds it."""
        ...


class LocalLocks:
    """In-process locks, for a single process with the memory checkpointer."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the in-process lock for ``key``."""
        async with self._lock(key):
            yield

    @asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[bool]:
        """Hold the lock if it is free; yields whether it was taken."""
        lock = self._lock(key)
        if lock.locked():
            yield False
            return
        async with lock:
            yield True


class PostgresLocks:
    """PostgreSQL session advisory locks, one per conversation.

    Each held lock holds a connection of the locks' own pool (checked when
    borrowed, like every pool: a lock is never taken on a connection that died
    with a restarted server). Waiting for one of those connections is waiting for
    a turn slot, so it may take up to ``wait`` seconds, longer than a request's
    bounded wait for the main pool.
    """

    def __init__(self, db: Database, *, wait: float = 30.0) -> None:
        self.db = db
        self.wait = wait

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the advisory lock for ``key`` on a connection of the pool."""
        async with self.db.connection(wait=self.wait) as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", (key,))
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (key,))

    @asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[bool]:
        """Take the advisory lock for ``key`` if it is free; yields whether it was taken."""
        async with self.db.connection(wait=self.wait) as conn:
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 7)) AS taken", (key,))
            row = await cur.fetchone()
            taken = bool(row and row["taken"])
            try:
                yield taken
            finally:
                if taken:
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (key,))


class RedisLocks:
    """Redis locks (redis-py's ``Lock``) that expire if their process dies."""

    def __init__(self, client: Any, *, expire: float = 120.0, wait: float = 300.0) -> None:
        self.client = client
        self.expire = expire
        self.wait = wait

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the Redis lock ``botloom:lock:{key}``."""
        lock = self.client.lock(f"botloom:lock:{key}", timeout=self.expire, blocking_timeout=self.wait)
        if not await lock.acquire():
            raise TimeoutError(f"conversation {key} stayed locked for {self.wait:g}s")
        try:
            yield
        finally:
            await _release(lock)

    @asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[bool]:
        """Take the Redis lock for ``key`` if it is free; yields whether it was taken."""
        lock = self.client.lock(f"botloom:lock:{key}", timeout=self.expire)
        taken = bool(await lock.acquire(blocking=False))
        try:
            yield taken
        finally:
            if taken:
                await _release(lock)


async def _release(lock: Any) -> None:
    """Release a Redis lock; one that expired meanwhile (a very long turn) is only logged."""
    from redis.exceptions import LockError

    try:
        await lock.release()
    except LockError:
        logger.warning("a conversation lock expired before its turn ended; raise BOTLOOM_TURN_TIMEOUT's margin")
