"""Writing a document's chunk rows and the bot's term statistics, inside the caller's transaction.

Shared by ingestion (a new or changed document) and re-embedding (a document
switching embedder). ``knowledge_terms`` keeps, per bot, how many chunks
contain each lexeme; hybrid search uses it to bound the cost of full-text
matching (docs/knowledge.md, "Bounded full-text cost").
"""

from __future__ import annotations

import uuid

from botloom.core.embeddings import Embedder
from botloom.core.knowledge.chunking import Chunk
from botloom.core.knowledge.embedding_cache import Vector
from botloom.core.storage.database import Connection

_COLUMNS = "tenant_id, bot_id, document_id, position, title, text, content_hash, embedder, dims, embedding"


async def copy_chunks(
    conn: Connection,
    embedder: Embedder,
    tenant: uuid.UUID,
    bot: uuid.UUID,
    *,
    document_id: uuid.UUID,
    chunks: list[Chunk],
    vectors: dict[str, Vector],
) -> None:
    """Insert a document's chunks with ``COPY`` (``vectors`` by content hash, embedded by ``embedder``)."""
    async with conn.cursor().copy(f"COPY knowledge_chunks ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["uuid", "uuid", "uuid", "int4", "text", "text", "text", "text", "int4", "vector"])
        for chunk in chunks:
            digest = chunk.content_hash
            await copy.write_row(
                (
                    tenant,
                    bot,
                    document_id,
                    chunk.position,
                    chunk.title,
                    chunk.text,
                    digest,
                    embedder.name,
                    embedder.dimension,
                    vectors[digest],
                )
            )


async def delete_chunks(conn: Connection, tenant: uuid.UUID, document_id: uuid.UUID) -> None:
    """Delete a document's chunks (not its term statistics: see :func:`term_counts` and :func:`add_terms`)."""
    await conn.execute("DELETE FROM knowledge_chunks WHERE tenant_id = %s AND document_id = %s", (tenant, document_id))


async def term_counts(conn: Connection, tenant: uuid.UUID, document_id: uuid.UUID) -> dict[str, int]:
    """How many chunks of a document contain each lexeme."""
    cur = await conn.execute(
        "SELECT lexeme, count(*) AS n FROM knowledge_chunks c, unnest(tsvector_to_array(c.search)) AS lexeme"
        " WHERE c.tenant_id = %s AND c.document_id = %s GROUP BY lexeme",
        (tenant, document_id),
    )
    return {row["lexeme"]: row["n"] for row in await cur.fetchall()}


async def add_terms(conn: Connection, tenant: uuid.UUID, bot: uuid.UUID, delta: dict[str, int]) -> None:
    """Add ``delta`` to the bot's document frequencies (in lexeme order, so concurrent writers never deadlock)."""
    changed = sorted((lexeme, n) for lexeme, n in delta.items() if n)
    if not changed:
        return
    await conn.execute(
        "INSERT INTO knowledge_terms AS t (tenant_id, bot_id, lexeme, df)"
        " SELECT %s, %s, u.lexeme, u.n FROM unnest(%s::text[], %s::int[]) AS u(lexeme, n) ORDER BY u.lexeme"
        " ON CONFLICT (bot_id, lexeme) DO UPDATE SET df = t.df + EXCLUDED.df",
        (tenant, bot, [lexeme for lexeme, _ in changed], [n for _, n in changed]),
    )
