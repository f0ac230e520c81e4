"""Conversation locks: turns of one conversation run one at a time, across every process.

With Redis configured the lock is a Redis lock held as a lease: a short expiry
(:attr:`RedisLocks.lease`, 5 s) that the holder renews while it lives, so the lock
of a process that died frees within seconds; otherwise a PostgreSQL advisory
lock, which the server releases as soon as the holding connection closes (a
killed process's socket closes with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from botloom.core.storage.database import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")

Read = Callable[[], Awaitable[T]]
First = Callable[[Any], Awaitable[Read[T]]]
"""What runs first under a lock. Called with the lock's PostgreSQL connection, it queues its statements on it
(pipeline mode) and returns how to read their result once they are sent; called with ``None`` (other locks), it
uses the pool."""

LOCK_SQL = "SELECT pg_advisory_lock(hashtextextended(%s, 7))"
UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtextextended(%s, 7))"
UNLOCK_UNLESS_SQL = "SELECT pg_advisory_unlock(hashtextextended(%(lock_key)s, 7)) AS released WHERE NOT EXISTS ({})"
"""Let the lock go unless the query in the braces (with its own named parameters) finds a row."""


class HeldLock:
    """A PostgreSQL conversation lock held by :meth:`PostgresLocks.hold_then`: its connection and key.

    The holder may queue statements on ``conn`` and let the lock go in the same round
    trip (:meth:`queue_release_unless`); the lock's exit then sends no unlock of its own.
    """

    def __init__(self, conn: Any, key: str, released: Callable[[], None]) -> None:
        self.conn = conn
        self.key = key
        self._released = released

    def release_unless(self, query: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """:meth:`queue_release_unless`'s statement and parameters, for a caller that sends it with others.

        Tell the lock what its row said with :meth:`went`.
        """
        return UNLOCK_UNLESS_SQL.format(query), {"lock_key": self.key, **params}

    def went(self, rows: list[dict[str, Any]]) -> bool:
        """Whether the release's rows say the lock went; if so, the lock's exit sends no unlock."""
        released = bool(rows and rows[0]["released"])
        if released:
            self._released()
        return released

    async def queue_release_unless(self, query: str, params: dict[str, Any]) -> Callable[[], Awaitable[bool]]:
        """Queue (pipeline mode) the lock's release unless ``query`` finds a row; how to read whether it went.

        Sent after a transaction's ``COMMIT`` in the same pipeline, the release happens once
        the transaction committed, and only if ``query`` (e.g. "a message still waits") is
        empty at that moment; the holder stops using the lock once it went.
        """
        cur = await self.conn.execute(UNLOCK_UNLESS_SQL.format(query), {"lock_key": self.key, **params})

        async def read() -> bool:
            row = await cur.fetchone()
            released = bool(row and row["released"])
            if released:
                self._released()
            return released

        return read


class ConversationLocks(Protocol):
    """Holds one lock per conversation key."""

    def hold(self, key: str) -> Any:
        """An async context manager that holds the lock for ``key``."""
        ...

    def hold_then(self, key: str, first: First[T]) -> Any:
        """:meth:`hold`, yielding the result of ``first``, run first thing under the lock.

        ``first`` gets the connection that holds a PostgreSQL lock (``None`` for other
        locks): queued on it, its statement goes to the server with the lock's, in one
        round trip, and starts once the lock is taken.
        """
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
    async def hold_then(self, key: str, first: First[T]) -> AsyncIterator[T]:
        """Hold the lock for ``key`` and yield the result of ``first(None)``."""
        async with self._lock(key):
            yield await (await first(None))()

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
        self._released: set[int] = set()

    def held(self, conn: Any, key: str) -> HeldLock:
        """The lock ``hold_then`` holds for ``key`` on ``conn`` (its ``first`` got ``conn``)."""
        return HeldLock(conn, key, lambda: self._released.add(id(conn)))

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the advisory lock for ``key`` on a connection of the pool."""
        async with self.db.connection(wait=self.wait) as conn:
            await conn.execute(LOCK_SQL, (key,))
            try:
                yield
            finally:
                await _unlock_or_close(conn, key)

    @asynccontextmanager
    async def hold_then(self, key: str, first: First[T]) -> AsyncIterator[T]:
        """Hold the advisory lock for ``key`` and yield the result of ``first(conn)``, sent with the lock.

        The lock and ``first``'s statements go out in one pipeline, one round trip (its
        sync as the pipeline ends): the server runs them in order, so they start (and
        take their snapshot) once the lock is held.
        """
        async with self.db.connection(wait=self.wait) as conn:
            try:
                async with conn.pipeline():
                    await conn.execute(LOCK_SQL, (key,))
                    read = await first(conn)
                found = await read()
            except BaseException:
                # the lock may be held (``first`` failed after it): a session lock outlives the failed statement
                try:
                    await conn.execute(UNLOCK_SQL, (key,))
                except Exception:  # noqa: BLE001 - closed, the connection's locks go with it
                    with contextlib.suppress(Exception):
                        await conn.close()
                raise
            try:
                yield found
            finally:
                if id(conn) in self._released:  # let go already (HeldLock.queue_release_unless)
                    self._released.discard(id(conn))
                else:
                    await _unlock_or_close(conn, key)

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


async def _unlock_or_close(conn: Any, key: str) -> None:
    """Let the advisory lock for ``key`` go; if that fails, close ``conn`` so the lock goes with its session.

    A connection handed back to the pool still holding a session lock (the unlock
    sent into an aborted transaction, or cancelled) would block every later turn of
    that conversation until the pool recycled it.
    """
    try:
        await conn.execute(UNLOCK_SQL, (key,))
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.close()
        raise


class RedisLocks:
    """Redis locks (redis-py's ``Lock``) held as leases: a short expiry, renewed while the holder lives.

    A holder renews its lease every third of ``lease`` seconds, so the lock of a
    process that died (or lost Redis) frees within ``lease`` seconds. ``expire``
    bounds how long one holder keeps renewing (``None``: as long as it holds the
    lock); a holder still at work then lets the lease lapse, with a warning.

    A holder that finds its lease gone (its process stalled for longer than the
    lease, or Redis was away that long) takes the lock back if it is free; if
    another process took it meanwhile, the holder goes on with a warning: the
    work a lock guards is idempotent (a turn run twice stores its replies under
    the same keys; a delivery claims each part before sending it), so losing the
    lock costs duplicated effort, not a duplicated effect.
    """

    def __init__(self, client: Any, *, lease: float = 5.0, expire: float | None = None, wait: float = 300.0) -> None:
        self.client = client
        self.lease = lease
        self.expire = expire
        self.wait = wait

    def _lock(self, key: str, **kwargs: Any) -> Any:
        return self.client.lock(f"botloom:lock:{key}", timeout=self.lease, thread_local=False, **kwargs)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the Redis lock ``botloom:lock:{key}``, waiting up to ``wait`` seconds for it."""
        lock = self._lock(key, blocking_timeout=self.wait)
        if not await lock.acquire():
            raise TimeoutError(f"conversation {key} stayed locked for {self.wait:g}s")
        async with _Lease(lock, key, self.lease, self.expire).kept():
            yield

    @asynccontextmanager
    async def hold_then(self, key: str, first: First[T]) -> AsyncIterator[T]:
        """Hold the Redis lock for ``key`` and yield the result of ``first(None)``."""
        async with self.hold(key):
            yield await (await first(None))()

    @asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[bool]:
        """Take the Redis lock for ``key`` if it is free; yields whether it was taken."""
        lock = self._lock(key)
        if not await lock.acquire(blocking=False):
            yield False
            return
        async with _Lease(lock, key, self.lease, self.expire).kept():
            yield True


class _Lease:
    """A held Redis lock whose expiry a task renews until the holder lets go (see :class:`RedisLocks`)."""

    def __init__(self, lock: Any, key: str, lease: float, expire: float | None) -> None:
        self.lock = lock
        self.key = key
        self.lease = lease
        self.expire = expire
        self.lost = False

    @asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the lease while the block runs; release the lock after it."""
        renewing = asyncio.create_task(self._renew(), name=f"botloom-lease {self.key}")
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self._release()

    async def _renew(self) -> None:
        from redis.exceptions import LockNotOwnedError, RedisError

        every = self.lease / 3
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            await asyncio.sleep(every)
            if self.expire is not None and loop.time() - began >= self.expire:
                logger.warning("lock %s held for %gs: its lease is no longer renewed", self.key, self.expire)
                self.lost = True
                return
            try:
                await asyncio.wait_for(self.lock.reacquire(), timeout=every)
            except LockNotOwnedError:
                if await self._take_back():
                    logger.warning("the lease of lock %s lapsed (a stall or Redis away); taken back", self.key)
                    continue
                logger.warning(
                    "the lease of lock %s lapsed and another holder took it: this one goes on without it", self.key
                )
                self.lost = True
                return
            except (RedisError, OSError, TimeoutError) as exc:  # the next beat tries again
                logger.warning("the lease of lock %s was not renewed: %s", self.key, exc)

    async def _take_back(self) -> bool:
        """Take the lock again with this holder's token if nobody holds it."""
        try:
            return bool(await self.lock.do_acquire(self.lock.local.token))
        except Exception:  # noqa: BLE001 - Redis away: the next beat tries again
            return False

    async def _release(self) -> None:
        """Release the lock; one whose lease lapsed is only logged (at DEBUG if already reported)."""
        from redis.exceptions import LockError, RedisError

        try:
            await self.lock.release()
        except LockError:
            log = logger.debug if self.lost else logger.warning
            log("lock %s had lapsed before its holder let go", self.key)
        except (RedisError, OSError) as exc:  # its lease frees it within seconds
            logger.warning("lock %s not released (%s): it frees when its lease ends", self.key, exc)
