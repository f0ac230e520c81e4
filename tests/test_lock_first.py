"""``hold_then`` (#16): the lock and the first statement under it in one round trip, that statement after the lock.

On PostgreSQL the lock statement and ``first``'s go out in one pipeline; the server
runs them in order, so ``first`` must see what the previous holder committed before
letting go (it reads after the lock is taken, not when it was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from botloom.core.storage.database import Database
from botloom.runtime.locks import LocalLocks, PostgresLocks


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A small pool of the test database, as the locks' own pool is."""
    opened = await Database.open(database_url, max_size=3, migrate=False)
    try:
        yield opened
    finally:
        await opened.close()


async def test_first_runs_after_the_lock_and_sees_what_the_last_holder_committed(db: Database) -> None:
    table, key = f"probe_{uuid.uuid4().hex[:8]}", f"conversation-{uuid.uuid4()}"
    async with db.connection() as conn:
        await conn.execute(f"CREATE TABLE {table} (value text)")
        await conn.execute(f"INSERT INTO {table} VALUES ('before')")
    locks = PostgresLocks(db)

    async def first(conn: Any) -> Callable[[], Awaitable[str]]:
        assert conn is not None, "the lock's connection"
        cur = await conn.execute(f"SELECT value FROM {table}")  # queued behind the lock

        async def read() -> str:
            row = await cur.fetchone()
            return str(row["value"])

        return read

    async with locks.hold(key):
        waiting = asyncio.create_task(_enter(locks, key, first))
        for _ in range(600):  # until it waits for the lock (its statement sent behind it)
            if await _waits_for_advisory_lock(db):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("hold_then never waited for the lock")
        assert not waiting.done()
        async with db.connection() as conn:
            await conn.execute(f"UPDATE {table} SET value = 'after'")
    assert await asyncio.wait_for(waiting, 30) == "after"
    async with db.connection() as conn:
        await conn.execute(f"DROP TABLE {table}")


async def _enter(locks: PostgresLocks, key: str, first: Any) -> str:
    async with locks.hold_then(key, first) as found:
        return str(found)


async def _waits_for_advisory_lock(db: Database) -> bool:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        row = await cur.fetchone()
        return bool(row and row["n"])


async def test_a_failing_first_leaves_the_lock_free(db: Database) -> None:
    locks, key = PostgresLocks(db), f"conversation-{uuid.uuid4()}"

    async def broken(conn: Any) -> Callable[[], Awaitable[None]]:
        await conn.execute("SELECT * FROM no_such_table_here")

        async def read() -> None:
            return None

        return read

    with pytest.raises(Exception, match="no_such_table_here"):
        async with locks.hold_then(key, broken):
            pass
    async with locks.try_hold(key) as free:
        assert free, "the lock was let go"


async def test_local_locks_run_first_without_a_connection() -> None:
    async def first(conn: Any) -> Callable[[], Awaitable[str]]:
        async def read() -> str:
            return "pool" if conn is None else "connection"

        return read

    async with LocalLocks().hold_then("k", first) as found:
        assert found == "pool"


async def test_the_first_statement_is_read_once_the_pipeline_has_ended(db: Database) -> None:
    """Read inside the pipeline, the result would cost a round trip of its own before the pipeline's closing sync."""
    locks, key = PostgresLocks(db), f"conversation-{uuid.uuid4()}"
    seen: list[Any] = []

    async def first(conn: Any) -> Callable[[], Awaitable[int]]:
        assert conn._pipeline is not None, "queued in the lock's pipeline"
        cur = await conn.execute("SELECT 41 + 1 AS answer")

        async def read() -> int:
            seen.append(conn._pipeline)
            row = await cur.fetchone()
            return int(row["answer"])

        return read

    async with locks.hold_then(key, first) as found:
        assert found == 42
    assert seen == [None], "read after the pipeline's one sync"


async def test_an_unlock_into_an_aborted_transaction_closes_the_connection(db: Database, database_url: str) -> None:
    """The body leaves the lock's connection in a failed transaction: the lock must still go.

    The unlock fails there; a connection handed back to the pool would keep the session lock
    and block every later turn of the conversation, so it is closed instead.
    """
    import psycopg

    locks, key = PostgresLocks(db), f"conversation-{uuid.uuid4()}"
    held: list[Any] = []

    async def keep(conn: Any) -> Callable[[], Awaitable[None]]:
        held.append(conn)

        async def read() -> None:
            return None

        return read

    async def abort_inside() -> None:
        async with locks.hold_then(key, keep):
            with contextlib.suppress(psycopg.errors.DivisionByZero):
                await held[0].execute("BEGIN")
                await held[0].execute("SELECT 1 / 0")

    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        await abort_inside()
    assert held[0].closed, "the connection that could not unlock was closed"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        cur = await other.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 7))", (key,))
        row = await cur.fetchone()
        assert row is not None and row[0], "another session can take the lock"
