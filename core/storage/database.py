"""The PostgreSQL connection pool, opened after migrations have run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from botloom.core.settings import Settings
from botloom.core.storage.embedded import start_embedded_postgres
from botloom.core.storage.migrations import apply_migrations

logger = logging.getLogger(__name__)

Connection = AsyncConnection[DictRow]


def database_url(settings: Settings) -> str:
    """The configured database URL, starting the embedded server when there is none."""
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.data_path)


async def _configure(conn: AsyncConnection[Any]) -> None:
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)


class Database:
    """An open pool of connections to botloom's PostgreSQL (rows as dicts, autocommit)."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection]) -> None:
        self.url = url
        self.pool = pool

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        migrate: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> Database:
        """Apply pending migrations (unless ``migrate`` is false), then open the pool."""
        if migrate:
            applied = await asyncio.to_thread(apply_migrations, url, progress=progress)
            if applied:
                logger.info("applied migrations: %s", ", ".join(applied))
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_configure,
            name="botloom",
        )
        await pool.open(wait=True, timeout=30)
        return cls(url, pool)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Borrow a connection (autocommit; use ``conn.transaction()`` for several statements)."""
        async with self.pool.connection() as conn:
            yield conn

    async def ping(self) -> bool:
        """Whether the database answers a trivial query (for ``/ready``)."""
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001
            return False

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self.pool.close()
