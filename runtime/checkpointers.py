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
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
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
        pg_saver = AsyncPostgresSaver(conn=cp_pool)
        await pg_saver.setup()
        yield pg_saver
    finally:
        await cp_pool.close()
