"""The PostgreSQL connection pool, opened after migrations have run."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import select
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from botloom.core.settings import Settings
from botloom.core.storage.embedded import start_embedded_postgres
from botloom.core.storage.migrations import apply_migrations

logger = logging.getLogger(__name__)

Connection = AsyncConnection[DictRow]

_joined: contextvars.ContextVar[tuple[Database, Connection] | None] = contextvars.ContextVar(
    "botloom_joined_transaction", default=None
)
"""The transaction :meth:`Database.transaction` opened in this task, which its :meth:`Database.connection` joins."""


def database_url(settings: Settings) -> str:
    """The configured database URL, starting the embedded server when there is none."""
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.data_path)


async def _configure(conn: AsyncConnection[Any]) -> None:
    """Set up a new connection of a botloom pool: pgvector's types, standard-conforming strings.

    The turn's end sends its statements as one string with values bound client-side
    (``runtime/turns.py``); a ``bytea[]`` quoted that way is only read back intact with
    ``standard_conforming_strings`` on (PostgreSQL's default since 9.1; a role or a
    database may still turn it off). Free when it is on: the server reports the setting
    when the connection opens.
    """
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)
    if conn.pgconn.parameter_status(b"standard_conforming_strings") != b"on":
        await conn.execute("SET standard_conforming_strings = on")
        if not conn.autocommit:
            await conn.commit()


POOL_WAIT = 5.0
"""Seconds a borrower waits for a free connection of botloom's pool before ``PoolTimeout``.

Bounded so that a request during an outage is answered (503 with ``Retry-After``)
while the client still waits, not after Twilio's 15 s have passed."""
OUTAGE_WAIT = 1.0
"""Seconds a borrower waits while the database is unreachable (a wait timed out, none succeeded since)."""


def _has_input(conn: AsyncConnection[Any]) -> bool:
    """Whether an idle connection's socket has something to read, or was closed: the server spoke or left."""
    fd = conn.pgconn.socket  # raises OperationalError on a closed connection
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)  # hang-ups and errors are always reported
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - platforms without poll()
    return bool(readable)


class ConnectionCheck:
    """The ``check`` of every botloom pool: a connection that died with the server is never handed out.

    An idle connection has nothing to read. When its socket has (PostgreSQL
    stopped or restarted, or ``pg_terminate_backend`` ended the backend: the server
    sent ``AdminShutdown`` and closed it), the connection is checked for real with
    :meth:`psycopg_pool.AsyncConnectionPool.check_connection` (a round trip); the pool
    discards one that fails and connects a new one. A healthy idle connection costs
    no round trip (a full check on every borrow doubled the cost of a short query).
    When one connection fails, the pool's other idle connections are checked at once
    (they died with the same server), so the next borrowers do not meet them one by one.
    """

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool[Any] | None = None
        self._sweep: asyncio.Task[None] | None = None

    async def __call__(self, conn: AsyncConnection[Any]) -> None:
        """Raise if ``conn`` no longer works; return at once if nothing suggests so."""
        if conn.closed:
            raise psycopg.OperationalError("the connection is closed")
        if not _has_input(conn):
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            self._check_idle_connections()
            raise

    def _check_idle_connections(self) -> None:
        if self.pool is None or (self._sweep is not None and not self._sweep.done()):
            return
        self._sweep = asyncio.create_task(_check_pool(self.pool), name=f"check-{self.pool.name}")


async def _check_pool(pool: AsyncConnectionPool[Any]) -> None:
    try:
        await pool.check()
    except Exception:  # a closed pool, or the server is down: the next borrow finds out
        logger.debug("checking the idle connections of %s failed", pool.name, exc_info=True)


SET_UP_POLL = 0.05
"""Seconds between two tries for a set-up lock while another process holds it."""
SET_UP_WAIT = 120.0
"""Seconds a process waits for another's set-up before it gives up with an error."""


@asynccontextmanager
async def one_process_at_a_time(url: str, lock: int, what: str, *, wait: float = SET_UP_WAIT) -> AsyncIterator[None]:
    """Hold the session advisory lock ``lock`` on a connection of its own while the block runs.

    For a library's set-up that checks, then creates its tables (LangGraph's
    checkpointer, SAQ's queue): two processes starting at once on a new database
    (the servers and workers of a first deployment) would both create, or one
    would use tables the other has not committed yet. ``what`` names the set-up in
    the error after ``wait`` seconds.

    Waiters poll with ``pg_try_advisory_lock`` instead of waiting in ``pg_advisory_lock``:
    a session waiting in a statement holds a snapshot, and a set-up's ``CREATE INDEX
    CONCURRENTLY`` waits for every older snapshot to end, so the two would wait on each
    other forever, unseen by PostgreSQL's deadlock detector.
    """
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as guard:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not await _try_advisory_lock(guard, lock):
            if loop.time() > deadline:
                raise TimeoutError(
                    f"another process has been setting up {what} for {wait:.0f} s; check that it is not stuck "
                    f"(pg_locks: advisory lock {lock}), then start again"
                )
            await asyncio.sleep(SET_UP_POLL)
        try:
            yield
        finally:
            await guard.execute("SELECT pg_advisory_unlock(%s)", (lock,))


async def _try_advisory_lock(conn: AsyncConnection[Any], lock: int) -> bool:
    """Take the session advisory lock ``lock`` if it is free; whether it was taken."""
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock,))).fetchone()
    return bool(row and row[0])


def checked_pool(
    url: str,
    *,
    name: str,
    max_size: int,
    min_size: int = 1,
    timeout: float = POOL_WAIT,
    kwargs: dict[str, Any] | None = None,
    configure: Callable[[Any], Any] | None = None,
) -> AsyncConnectionPool[Any]:
    """A closed psycopg pool whose connections are checked when borrowed (see :class:`ConnectionCheck`).

    Every pool of PostgreSQL connections in botloom is made here: the main pool,
    the conversation locks', the checkpointer's and the job queue's. ``timeout``
    bounds how long a borrower waits for a connection (then ``PoolTimeout``).
    """
    check = ConnectionCheck()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs=kwargs,
        configure=configure,
        check=check,
        timeout=timeout,
        name=name,
    )
    check.pool = pool
    return pool


class Database:
    """An open pool of connections to botloom's PostgreSQL (rows as dicts, autocommit)."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection], *, outage_wait: float = OUTAGE_WAIT) -> None:
        self.url = url
        self.pool = pool
        self.outage_wait = outage_wait
        self.unreachable_since: float | None = None
        """When (``time.monotonic()``) a borrow last timed out, until one succeeds again."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        migrate: bool = True,
        progress: Callable[[str], None] | None = None,
        wait: float = POOL_WAIT,
    ) -> Database:
        """Apply pending migrations (unless ``migrate`` is false), then open the pool.

        ``wait`` bounds how long a borrower waits for a free connection.
        """
        if migrate:
            applied = await asyncio.to_thread(apply_migrations, url, progress=progress)
            if applied:
                logger.info("applied migrations: %s", ", ".join(applied))
        pool: AsyncConnectionPool[Connection] = checked_pool(
            url,
            name="botloom",
            min_size=min_size,
            max_size=max_size,
            timeout=wait,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_configure,
        )
        await pool.open(wait=True, timeout=30)
        return cls(url, pool)

    @asynccontextmanager
    async def connection(self, *, wait: float | None = None) -> AsyncIterator[Connection]:
        """Borrow a connection (autocommit; use ``conn.transaction()`` for several statements).

        Waits up to ``wait`` seconds (the pool's bounded wait by default) for a
        free connection, then raises ``psycopg_pool.PoolTimeout``. While the database
        is unreachable (a wait timed out and no borrow succeeded since) it waits at
        most ``outage_wait``: during an outage requests fail fast instead of queueing.
        """
        joined = _joined.get()
        if joined is not None and joined[0] is self:
            yield joined[1]  # inside Database.transaction(): the same connection, the same transaction
            return
        if wait is None:
            wait = self.pool.timeout
        if self.unreachable_since is not None:
            wait = min(wait, self.outage_wait)
        try:
            conn = await self.pool.getconn(timeout=wait)
        except PoolTimeout:
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                logger.warning("no database connection within %.1fs: failing fast until one succeeds", wait)
            raise
        if self.unreachable_since is not None:
            logger.info("database connections again after %.1fs", time.monotonic() - self.unreachable_since)
            self.unreachable_since = None
        try:
            async with conn:
                yield conn
        finally:
            await self.pool.putconn(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction that every repository call made inside the block joins (commits at its end, or rolls back).

        ``async with db.transaction(): await repo_a.change(...); await audit.append(...)``: the
        repositories borrow :meth:`connection` as usual and get this block's connection, so
        their statements commit together or not at all (a repository's own
        ``conn.transaction()`` becomes a savepoint). The block belongs to the task that
        opened it: keep it short, and run nothing concurrently inside it.
        """
        joined = _joined.get()
        if joined is not None and joined[0] is self:
            async with joined[1].transaction() as _:
                yield joined[1]
            return
        async with self.connection() as conn, conn.transaction():
            token = _joined.set((self, conn))
            try:
                yield conn
            finally:
                _joined.reset(token)

    async def ping(self, within: float = 2.0) -> bool:
        """Whether the database answers a trivial query within ``within`` seconds (for ``/ready``).

        Bounded as a whole, not only the wait for a connection: a server that went
        away without closing its connections (a network partition) never answers.
        """
        try:
            async with asyncio.timeout(within):
                async with self.connection(wait=within) as conn:
                    await conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001
            return False

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self.pool.close()
