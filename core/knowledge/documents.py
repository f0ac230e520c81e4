"""Document management: list and delete a bot's documents, re-embed them, build the vector index now."""

from __future__ import annotations

from botloom.core.embeddings import Embedder
from botloom.core.knowledge import index as vector_index
from botloom.core.knowledge.chunk_rows import add_terms, copy_chunks, delete_chunks, term_counts
from botloom.core.knowledge.chunking import Chunk
from botloom.core.knowledge.config import KnowledgeConfig
from botloom.core.knowledge.embedding_cache import EmbeddingCache
from botloom.core.knowledge.scope import parse_scope, parse_uuid, resolve_bot
from botloom.core.knowledge.types import Document, Progress
from botloom.core.storage.database import Database


class Documents:
    """The stored documents of bots' knowledge bases."""

    def __init__(self, db: Database, embedder: Embedder, config: KnowledgeConfig, cache: EmbeddingCache) -> None:
        """Work in ``db``; ``embedder`` (through ``cache``) is the one documents are re-embedded with."""
        self.db = db
        self.embedder = embedder
        self.config = config
        self.cache = cache

    async def list_documents(self, tenant_id: str, bot_id: str) -> list[Document]:
        """A bot's documents, by name."""
        scope = parse_scope(tenant_id, bot_id)
        if scope is None:
            return []
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT id, name, content_type, content_hash, chunks, created_at, updated_at"
                " FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s ORDER BY name",
                scope,
            )
            rows = await cur.fetchall()
        return [
            Document(
                id=str(r["id"]),
                name=r["name"],
                content_type=r["content_type"],
                content_hash=r["content_hash"],
                chunks=r["chunks"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def delete(self, tenant_id: str, bot_id: str, document: str) -> bool:
        """Delete a document (by id or name) and all its chunks; ``False`` if there is none."""
        scope = parse_scope(tenant_id, bot_id)
        if scope is None:
            return False
        tenant, bot = scope
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s AND (id = %s OR name = %s)"
                " FOR UPDATE",
                (tenant, bot, parse_uuid(document), document),
            )
            rows = await cur.fetchall()
            for row in rows:
                terms = await term_counts(conn, tenant, row["id"])
                await add_terms(conn, tenant, bot, {lexeme: -count for lexeme, count in terms.items()})
                await conn.execute(
                    "DELETE FROM knowledge_documents WHERE tenant_id = %s AND id = %s", (tenant, row["id"])
                )
            return bool(rows)

    async def reembed(self, tenant_id: str, bot_id: str, *, progress: Progress | None = None) -> int:
        """Re-embed, with the current embedder, every document of a bot embedded by another; return how many.

        Works from the stored chunks (the original files are not needed); each
        document switches over in one transaction. Afterwards the old embedders'
        HNSW indexes are dropped, and the new one is built when the bot is big enough.
        """
        tenant, bot = await resolve_bot(self.db, tenant_id, bot_id)
        embedder, dims = self.embedder.name, self.embedder.dimension
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT id, name, embedder, dims FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s"
                " AND (embedder <> %s OR dims <> %s) ORDER BY name",
                (tenant, bot, embedder, dims),
            )
            stale = await cur.fetchall()
        old_embedders = {(row["embedder"], row["dims"]) for row in stale}
        for row in stale:
            async with self.db.connection() as conn:
                cur = await conn.execute(
                    "SELECT position, title, text FROM knowledge_chunks WHERE tenant_id = %s AND document_id = %s"
                    " ORDER BY position",
                    (tenant, row["id"]),
                )
                chunks = [Chunk(r["position"], r["title"], r["text"]) for r in await cur.fetchall()]
            vectors = await self.cache.vectors(tenant, bot, [c.embedding_text for c in chunks], row["name"], progress)
            async with self.db.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT embedder, dims FROM knowledge_documents WHERE tenant_id = %s AND id = %s FOR UPDATE",
                    (tenant, row["id"]),
                )
                current = await cur.fetchone()
                if current is None or (current["embedder"], current["dims"]) != (row["embedder"], row["dims"]):
                    continue
                await delete_chunks(conn, tenant, row["id"])
                await copy_chunks(
                    conn, self.embedder, tenant, bot, document_id=row["id"], chunks=chunks, vectors=vectors
                )
                await conn.execute(
                    "UPDATE knowledge_documents SET embedder = %s, dims = %s, updated_at = now()"
                    " WHERE tenant_id = %s AND id = %s",
                    (embedder, dims, tenant, row["id"]),
                )
            if progress is not None:
                progress(f"{row['name']}: re-embedded {len(chunks)} chunks with {embedder}")
        for old_name, old_dims in old_embedders:
            await vector_index.drop_index(self.db, bot, old_name, old_dims)
        await vector_index.index_when_large(
            self.db,
            bot,
            embedder,
            dims,
            threshold=self.config.index_threshold,
            maintenance_work_mem=self.config.index_build_memory,
            progress=progress,
        )
        return len(stale)

    async def ensure_index(self, tenant_id: str, bot_id: str, *, progress: Progress | None = None) -> bool:
        """Build the bot's HNSW index for the current embedder now, whatever its size; ``True`` if one exists."""
        _, bot = await resolve_bot(self.db, tenant_id, bot_id)
        return await vector_index.ensure_index(
            self.db,
            bot,
            self.embedder.name,
            self.embedder.dimension,
            maintenance_work_mem=self.config.index_build_memory,
            progress=progress,
        )
