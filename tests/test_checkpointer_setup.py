"""Processes that start at once on a new database each set up the checkpointer's tables, and none fails.

LangGraph's ``AsyncPostgresSaver.setup()`` creates its tables with ``CREATE TABLE IF NOT
EXISTS``, which two sessions running it at the same moment can both attempt: one fails on
``pg_type``'s unique index. Servers and workers of a first deployment start together, so
botloom serialises the set-up across processes (an advisory lock; with Redis, a Redis
lock, since PostgreSQL may then sit behind a transaction-mode pooler that session locks do
not survive). The Redis
checkpointer's set-up has the same race (each finds no search index, the second
``FT.CREATE`` fails "Index already exists") and is serialised by a Redis lock.
"""

from __future__ import annotations

import asyncio

import msgspec
import psycopg
import pytest

from botloom.core.settings import Settings
from botloom.runtime.checkpointers import open_checkpointer

OPENERS = 6
"""Checkpointers opened at once, each on a pool of its own (as processes would)."""


@pytest.mark.parametrize("locked_by", ["postgres", "redis"])
async def test_checkpointers_opened_at_once_on_a_new_database_all_open(
    settings: Settings, database_url: str, locked_by: str, request: pytest.FixtureRequest
) -> None:
    """Without Redis an advisory lock serialises the set-up; with Redis (maybe behind a transaction pooler) Redis."""
    with psycopg.connect(database_url) as conn:  # the migrated template has no checkpoint tables yet
        assert conn.execute("SELECT to_regclass('checkpoints')").fetchone() == (None,)
    redis_url = request.getfixturevalue("redis_url") if locked_by == "redis" else None
    postgres = msgspec.structs.replace(settings, checkpointer="postgres", redis_url=redis_url)

    async def open_one() -> int:
        async with open_checkpointer(postgres, database_url, pool_size=2) as saver:
            return len([c async for c in saver.alist(None, limit=1)])

    # gather starts them in one turn of the loop: their set-ups overlap
    assert await asyncio.gather(*(open_one() for _ in range(OPENERS))) == [0] * OPENERS
    with psycopg.connect(database_url) as conn:
        applied = conn.execute("SELECT count(*), count(DISTINCT v) FROM checkpoint_migrations").fetchone()
    assert applied is not None and applied[0] == applied[1] > 0, "each of LangGraph's migrations recorded once"


async def test_redis_checkpointers_opened_at_once_on_a_new_redis_all_open(settings: Settings, redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as client:  # a new Redis: no search index yet
        assert not [i for i in client.execute_command("FT._LIST") if b"checkpoint" in i]
    on_redis = msgspec.structs.replace(settings, checkpointer="redis", redis_url=redis_url)

    async def open_one() -> int:
        async with open_checkpointer(on_redis, None, pool_size=2) as saver:
            return len([c async for c in saver.alist(None, limit=1)])

    assert await asyncio.gather(*(open_one() for _ in range(OPENERS))) == [0] * OPENERS
