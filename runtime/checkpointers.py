"""Opening the configured LangGraph checkpointer: Postgres, Redis or memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from botloom.core.crypto import Cipher
from botloom.core.settings import Settings
from botloom.runtime.saver import RedactingSaver, encrypting_serializer

logger = logging.getLogger(__name__)

CHECKPOINT_POOL_WAIT = 10.0
"""Seconds a turn waits for a connection of the checkpointer's pool (then ``PoolTimeout``, a transient error)."""

# LangGraph's stock read joins ``jsonb_each_text(channel_versions)`` to ``checkpoint_blobs``: the planner
# estimates 100 rows for the function and, on a long conversation, hash-joins an index scan of ALL the
# thread's blobs. This one looks each blob up by its primary key (``LATERAL ... LIMIT 1``): the same rows.
POSTGRES_SELECT_SQL = """
select
    thread_id,
    checkpoint,
    checkpoint_ns,
    checkpoint_id,
    parent_checkpoint_id,
    metadata,
    (
        select array_agg(array[bl.channel::bytea, bl.type::bytea, bl.blob])
        from jsonb_each_text(checkpoint -> 'channel_versions') as cv(key, value)
        cross join lateral (
            select b.channel, b.type, b.blob
            from checkpoint_blobs b
            where b.thread_id = checkpoints.thread_id
                and b.checkpoint_ns = checkpoints.checkpoint_ns
                and b.channel = cv.key
                and b.version = cv.value
            limit 1
        ) as bl
    ) as channel_values,
    (
        select
        array_agg(array[cw.task_id::text::bytea, cw.channel::bytea, cw.type::bytea, cw.blob, convert_to(cw.task_path, 'UTF8'), cw.idx::text::bytea])
        from checkpoint_writes cw
        where cw.thread_id = checkpoints.thread_id
            and cw.checkpoint_ns = checkpoints.checkpoint_ns
            and cw.checkpoint_id = checkpoints.checkpoint_id
    ) as pending_writes
from checkpoints """  # noqa: E501
"""``AsyncPostgresSaver.SELECT_SQL`` (langgraph-checkpoint-postgres 3.2) with primary-key blob lookups."""


def postgres_saver_class() -> type[Any]:
    """``AsyncPostgresSaver`` reading a checkpoint's blobs by primary key (``POSTGRES_SELECT_SQL``)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    class KeyedBlobPostgresSaver(AsyncPostgresSaver):
        """``AsyncPostgresSaver`` whose reads (``aget_tuple``, ``alist``) fetch blobs by primary key."""

        SELECT_SQL = POSTGRES_SELECT_SQL

    return KeyedBlobPostgresSaver


@asynccontextmanager
async def open_checkpointer(
    settings: Settings, database_url: str, *, pool_size: int | None = None, cipher: Cipher | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open the configured checkpointer, wrapped for per-bot redaction; close it after.

    ``BOTLOOM_CHECKPOINTER`` picks the saver; with ``BOTLOOM_ENCRYPT_CHECKPOINTS``
    its serializer encrypts every value with ``cipher``.
    """
    async with _open_saver(settings, database_url, pool_size=pool_size) as saver:
        if settings.encrypt_checkpoints:
            if cipher is None:
                raise ValueError("encrypted checkpoints need the deployment's cipher")
            saver.serde = encrypting_serializer(cipher)
        yield RedactingSaver(saver)


@asynccontextmanager
async def _open_saver(
    settings: Settings, database_url: str, *, pool_size: int | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    kind = settings.checkpointer
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
        return
    if kind == "redis":
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver
        from redis.asyncio import BlockingConnectionPool, Redis

        assert settings.redis_url is not None
        # A blocking pool waits for a free connection; the default pool raises when it runs out.
        pool = BlockingConnectionPool.from_url(settings.redis_url, max_connections=pool_size or 50, timeout=30)
        client = Redis(connection_pool=pool)
        ttl = (
            {"default_ttl": settings.checkpoint_ttl_minutes, "refresh_on_read": True}
            if settings.checkpoint_ttl_minutes
            else None
        )
        saver = AsyncRedisSaver(redis_client=client, ttl=ttl)
        try:
            await saver.asetup()
            yield saver
        finally:
            await client.aclose()
            await pool.disconnect()
        return
    from psycopg.rows import dict_row

    from botloom.core.storage.database import checked_pool

    cp_pool = checked_pool(
        database_url,
        name="botloom-checkpoints",
        max_size=pool_size or settings.db_pool_size,
        timeout=CHECKPOINT_POOL_WAIT,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await cp_pool.open(wait=True, timeout=30)
    try:
        pg_saver = postgres_saver_class()(conn=cp_pool)
        await pg_saver.setup()
        yield pg_saver
    finally:
        await cp_pool.close()
