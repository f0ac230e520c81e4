"""Approximate-nearest-neighbour (HNSW) indexes, one per bot and embedder.

``knowledge_chunks.embedding`` holds vectors of any dimension, so no single
HNSW index covers the column. Instead, once a bot has ``index_threshold``
chunks of one embedder, a partial expression index covering exactly those rows
is built::

    CREATE INDEX CONCURRENTLY knowledge_hnsw_<bot>_<hash> ON knowledge_chunks
        USING hnsw ((embedding::vector(384)) vector_cosine_ops)
        WHERE bot_id = '<bot>' AND embedder = '<name>' AND dims = 384

Search queries repeat that predicate with the same literal values, so the
planner can use the index, and the graph holds nothing but the bot's own
vectors: no other tenant's rows crowd out the nearest neighbours (a shared
index filtered afterwards by tenant and bot loses recall for every bot that
is a small part of the table). Below the threshold an exact scan of the bot's
rows through a B-tree is faster than the index anyway, and exact.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable

from psycopg import sql

from botloom.core.storage.database import Database

logger = logging.getLogger(__name__)

MAX_INDEX_DIMS = 2000
"""pgvector's limit for HNSW on ``vector``: wider embeddings are always searched exactly."""


def index_name(bot_id: uuid.UUID, embedder: str, dims: int) -> str:
    """The name of the HNSW index over one bot's chunks of one embedder."""
    digest = hashlib.sha256(f"{embedder}|{dims}".encode()).hexdigest()[:8]
    return f"knowledge_hnsw_{bot_id.hex}_{digest}"


def scope(bot_id: uuid.UUID, embedder: str, dims: int, alias: str = "") -> sql.Composed:
    """The predicate selecting a bot's chunks of one embedder, with literal values (as in the index)."""
    prefix = sql.SQL(f"{alias}." if alias else "")
    return sql.SQL("{p}bot_id = {bot}::uuid AND {p}embedder = {name} AND {p}dims = {dims}").format(
        p=prefix, bot=sql.Literal(str(bot_id)), name=sql.Literal(embedder), dims=sql.Literal(dims)
    )


async def index_state(db: Database, name: str) -> bool | None:
    """``True`` when index ``name`` exists and is valid, ``False`` when it is invalid, ``None`` when absent."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = %s",
            (name,),
        )
        row = await cur.fetchone()
    return None if row is None else bool(row["indisvalid"])


async def ensure_index(
    db: Database,
    bot_id: uuid.UUID,
    embedder: str,
    dims: int,
    *,
    m: int = 16,
    ef_construction: int = 64,
    maintenance_work_mem: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Build the bot's HNSW index unless it exists; ``True`` if a valid index exists afterwards.

    The build is ``CONCURRENTLY`` (other tenants keep writing) and guarded by
    an advisory lock, so two processes never build the same index; an invalid
    index left by an interrupted build is dropped and rebuilt.
    """
    if dims > MAX_INDEX_DIMS:
        return False
    name = index_name(bot_id, embedder, dims)
    if await index_state(db, name):
        return True
    lock = int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (lock,))
        row = await cur.fetchone()
        if row is None or not row["ok"]:
            return False
        try:
            state = await index_state(db, name)
            if state:
                return True
            if state is False:
                await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
            if progress is not None:
                progress(f"building the vector index for bot {bot_id} ({embedder})")
            if maintenance_work_mem:
                await conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (maintenance_work_mem,))
            await conn.execute(
                sql.SQL(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON knowledge_chunks "
                    "USING hnsw ((embedding::vector({dims})) vector_cosine_ops) "
                    "WITH (m = {m}, ef_construction = {ef}) WHERE {scope}"
                ).format(
                    name=sql.Identifier(name),
                    dims=sql.Literal(dims),
                    m=sql.Literal(m),
                    ef=sql.Literal(ef_construction),
                    scope=scope(bot_id, embedder, dims),
                )
            )
            logger.info("built knowledge index %s for bot %s (%s)", name, bot_id, embedder)
        finally:
            if maintenance_work_mem:
                await conn.execute("RESET maintenance_work_mem")
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lock,))
    return bool(await index_state(db, name))


async def index_when_large(
    db: Database,
    bot_id: uuid.UUID,
    embedder: str,
    dims: int,
    *,
    threshold: int,
    maintenance_work_mem: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Build the bot's HNSW index for an embedder once the bot has ``threshold`` chunks of it."""
    if dims > MAX_INDEX_DIMS:
        return
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(chunks), 0) AS n FROM knowledge_documents"
            " WHERE bot_id = %s AND embedder = %s AND dims = %s",
            (bot_id, embedder, dims),
        )
        row = await cur.fetchone()
    if row is not None and row["n"] >= threshold:
        await ensure_index(db, bot_id, embedder, dims, maintenance_work_mem=maintenance_work_mem, progress=progress)


async def drop_index(db: Database, bot_id: uuid.UUID, embedder: str, dims: int) -> bool:
    """Drop the bot's HNSW index for one embedder; ``True`` if there was one."""
    name = index_name(bot_id, embedder, dims)
    if await index_state(db, name) is None:
        return False
    async with db.connection() as conn:
        await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
    return True


async def drop_stale_indexes(db: Database) -> list[str]:
    """Drop the HNSW indexes of bots that no longer exist; return their names."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT c.relname AS name FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
            "WHERE i.indrelid = 'knowledge_chunks'::regclass AND c.relname LIKE 'knowledge\\_hnsw\\_%' "
            "AND NOT EXISTS (SELECT 1 FROM bots b WHERE replace(b.id::text, '-', '') = split_part(c.relname, '_', 3))"
        )
        names = [str(row["name"]) for row in await cur.fetchall()]
        for name in names:
            await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
    return names
