"""The knowledge base of each bot: ingestion, embedding cache, hybrid search.

See docs/knowledge.md for the design and its measured quality. In short:

* :meth:`KnowledgeBase.ingest` parses and chunks a document, embeds the chunks
  it has not embedded before (the cache is keyed by content hash, embedder and
  dimension), then replaces the document's chunks in one transaction.
  Unchanged documents cost one query; bad input raises :class:`IngestError`
  before anything is written.
* :meth:`KnowledgeBase.search` runs a vector search and a full-text search
  over the bot's chunks of the current embedder in one statement and fuses the
  two rankings (:mod:`botloom.core.knowledge.fusion`).
* Switching embedder: search only sees chunks of the knowledge base's
  embedder. Re-ingesting a document re-embeds it; :meth:`KnowledgeBase.reembed`
  re-embeds every document of a bot from its stored chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from botloom.core.embeddings import Embedder
from botloom.core.knowledge import index as vector_index
from botloom.core.knowledge.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, Chunk, chunk_document
from botloom.core.knowledge.fusion import Candidate, Fusion, fuse
from botloom.core.knowledge.parsing import (
    CONTENT_TYPES,
    DEFAULT_MAX_BYTES,
    IngestError,
    decode,
    detect_content_type,
    parse_text,
)
from botloom.core.knowledge.types import Document, IngestResult, IngestStatus, Passage
from botloom.core.storage.database import Connection, Database

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
Vector = npt.NDArray[np.float32]

PIPELINE_VERSION = 1
"""Bump when parsing or chunking changes in a way that should re-chunk every document."""
TEXT_SEARCH_CONFIG = "english"
"""The PostgreSQL text search configuration of ``knowledge_chunks.search`` (see the migration)."""
DEFAULT_THRESHOLD = 0.14
"""The default minimum score, calibrated with the local embedder on tests/data/knowledge (docs/knowledge.md)."""
TEXT_RANK_WEIGHTS = "{0.1, 0.2, 1.0, 1.0}"
"""``ts_rank`` weights of labels D, C, B (chunk text) and A (heading path): title and text count alike."""
INDEX_THRESHOLD = 1000
"""A bot gets an HNSW index for an embedder once it has this many chunks of it."""
MAX_QUERY_CHARS = 2000
MAX_NAME_CHARS = 1000


class UnknownBot(LookupError):
    """The tenant has no bot with this id."""


class KnowledgeBase:
    """Per-bot knowledge: documents in, passages out. Every call is scoped by tenant and bot."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = 128,
        fusion: Fusion = "weighted",
        vector_weight: float = 0.5,
        text_scale: float = 1.0,
        candidates: int = 20,
        max_text_matches: int = 1000,
        ef_search: int = 100,
        threshold: float = DEFAULT_THRESHOLD,
        index_threshold: int = INDEX_THRESHOLD,
        index_build_memory: str | None = None,
        exact: bool = False,
    ) -> None:
        """Configure the knowledge base.

        ``max_bytes`` limits one document; ``max_chars`` and ``overlap`` shape
        chunks; ``fusion`` (with ``vector_weight`` and ``text_scale`` for
        ``"weighted"``) and ``candidates`` (rows taken from each of the vector and
        full-text searches) shape hybrid search; full-text search leaves out the
        commonest query terms until the rest match at most ``max_text_matches``
        chunks; ``ef_search`` is the HNSW search breadth; ``threshold`` is the default
        minimum score; ``index_threshold`` is how many chunks a bot needs before
        it gets an HNSW index, built with ``index_build_memory`` of
        ``maintenance_work_mem`` when given; ``exact`` searches without the
        approximate index (for measuring its recall).
        """
        self.db = db
        self.embedder = embedder
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self.overlap = overlap
        self.batch_size = batch_size
        self.fusion: Fusion = fusion
        self.vector_weight = vector_weight
        self.text_scale = text_scale
        self.candidates = candidates
        self.max_text_matches = max_text_matches
        self.ef_search = ef_search
        self.threshold = threshold
        self.index_threshold = index_threshold
        self.index_build_memory = index_build_memory
        self.exact = exact

    @property
    def pipeline(self) -> str:
        """The parser and chunker settings recorded with each document."""
        return f"v{PIPELINE_VERSION} chars={self.max_chars} overlap={self.overlap}"

    # ------------------------------------------------------------------ ingestion

    def prepare(self, name: str, content: bytes | str, content_type: str | None = None) -> tuple[str, str, list[Chunk]]:
        """Parse and chunk a document without storing it: ``(content_type, content_hash, chunks)``.

        Raises :class:`IngestError` for bad input.
        """
        if not name or len(name) > MAX_NAME_CHARS or any(ord(ch) < 32 for ch in name):
            raise IngestError(f"{name[:100]!r}: a document name needs 1 to {MAX_NAME_CHARS} printable characters")
        kind = detect_content_type(name, content_type)
        text = decode(name, content, max_bytes=self.max_bytes)
        doc = parse_text(name, text, kind)
        chunks = chunk_document(doc, max_chars=self.max_chars, overlap=self.overlap)
        digest = hashlib.sha256(text.encode()).hexdigest()
        return doc.content_type, digest, chunks

    async def ingest(
        self,
        tenant_id: str,
        bot_id: str,
        name: str,
        content: bytes | str,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Add or replace the document ``name`` of a bot's knowledge base.

        An unchanged document (same text, type, chunking and embedder) is left
        alone; a changed one has its chunks replaced in one transaction. Raises
        :class:`IngestError` for bad input, before anything is written, and
        :class:`UnknownBot` when the tenant has no such bot.
        """
        name = name.strip()
        tenant, bot = await self._bot(tenant_id, bot_id)
        if len(content) > 256 * 1024:
            kind, digest, chunks = await asyncio.to_thread(self.prepare, name, content, content_type)
        else:
            kind, digest, chunks = self.prepare(name, content, content_type)
        return await self._store(tenant, bot, name, kind=kind, digest=digest, chunks=chunks, progress=progress)

    async def ingest_paths(
        self,
        tenant_id: str,
        bot_id: str,
        paths: Sequence[Path],
        *,
        progress: Progress | None = None,
    ) -> list[IngestResult]:
        """Ingest files and directories (recursively, skipping hidden and unsupported files).

        A document is named by its path relative to the directory given (or by
        its file name when the file itself is given). Every file is read and
        checked first, so a bad file raises :class:`IngestError` before any is
        stored; then each file is stored in its own transaction.
        """
        tenant, bot = await self._bot(tenant_id, bot_id)
        files = self._collect(paths, progress)
        prepared: list[tuple[str, str, str, list[Chunk]]] = []
        for path, name in files:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise IngestError(f"{name}: file is too large ({size:,} bytes; the limit is {self.max_bytes:,} bytes)")
            content = await asyncio.to_thread(path.read_bytes)
            kind, digest, chunks = await asyncio.to_thread(self.prepare, name, content)
            prepared.append((name, kind, digest, chunks))
        results = []
        for number, (name, kind, digest, chunks) in enumerate(prepared, 1):
            if progress is not None:
                progress(f"[{number}/{len(prepared)}] {name}")
            results.append(
                await self._store(tenant, bot, name, kind=kind, digest=digest, chunks=chunks, progress=progress)
            )
        return results

    @staticmethod
    def _collect(paths: Sequence[Path], progress: Progress | None) -> list[tuple[Path, str]]:
        files: dict[str, Path] = {}

        def add(path: Path, name: str) -> None:
            if name in files and files[name] != path:
                raise IngestError(f"{name}: two files would get this document name ({files[name]} and {path})")
            files[name] = path

        for given in paths:
            if given.is_dir():
                for path in sorted(given.rglob("*")):
                    relative = path.relative_to(given)
                    if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                        continue
                    if path.suffix.lower() not in CONTENT_TYPES:
                        if progress is not None:
                            progress(f"skipping {relative.as_posix()}: unsupported file type")
                        continue
                    add(path, relative.as_posix())
            elif given.is_file():
                add(given, given.name)
            else:
                raise IngestError(f"{given}: no such file or directory")
        return [(path, name) for name, path in files.items()]

    async def _bot(self, tenant_id: str, bot_id: str) -> tuple[uuid.UUID, uuid.UUID]:
        tenant, bot = _uuid(tenant_id), _uuid(bot_id)
        if tenant is not None and bot is not None:
            async with self.db.connection() as conn:
                cur = await conn.execute("SELECT 1 FROM bots WHERE tenant_id = %s AND id = %s", (tenant, bot))
                if await cur.fetchone() is not None:
                    return tenant, bot
        raise UnknownBot(f"tenant {tenant_id} has no bot {bot_id}")

    def _same(self, row: dict[str, Any] | None, kind: str, digest: str) -> bool:
        return row is not None and (
            row["content_hash"],
            row["content_type"],
            row["pipeline"],
            row["embedder"],
            row["dims"],
        ) == (digest, kind, self.pipeline, self.embedder.name, self.embedder.dimension)

    async def _store(
        self,
        tenant: uuid.UUID,
        bot: uuid.UUID,
        name: str,
        *,
        kind: str,
        digest: str,
        chunks: list[Chunk],
        progress: Progress | None,
    ) -> IngestResult:
        lookup = "SELECT * FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s AND name = %s"
        async with self.db.connection() as conn:
            row = await (await conn.execute(lookup, (tenant, bot, name))).fetchone()
        if row is not None and self._same(row, kind, digest):
            if progress is not None:
                progress(f"{name}: unchanged")
            return IngestResult(document_id=str(row["id"]), name=name, status="unchanged", chunks=row["chunks"])
        vectors = await self._embed(tenant, bot, [c.embedding_text for c in chunks], name, progress)
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"knowledge:{bot}:{name}",))
            row = await (await conn.execute(lookup + " FOR UPDATE", (tenant, bot, name))).fetchone()
            if row is not None and self._same(row, kind, digest):
                return IngestResult(document_id=str(row["id"]), name=name, status="unchanged", chunks=row["chunks"])
            status: IngestStatus
            old_terms: dict[str, int] = {}
            if row is None:
                cur = await conn.execute(
                    "INSERT INTO knowledge_documents (tenant_id, bot_id, name, content_type, content_hash, pipeline,"
                    " embedder, dims, chunks) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        tenant,
                        bot,
                        name,
                        kind,
                        digest,
                        self.pipeline,
                        self.embedder.name,
                        self.embedder.dimension,
                        len(chunks),
                    ),
                )
                created = await cur.fetchone()
                assert created is not None
                document_id, status = created["id"], "created"
            else:
                document_id, status = row["id"], "updated"
                old_terms = await _term_counts(conn, tenant, document_id)
                await conn.execute(
                    "DELETE FROM knowledge_chunks WHERE tenant_id = %s AND document_id = %s", (tenant, document_id)
                )
                await conn.execute(
                    "UPDATE knowledge_documents SET content_type = %s, content_hash = %s, pipeline = %s,"
                    " embedder = %s, dims = %s, chunks = %s, updated_at = now() WHERE tenant_id = %s AND id = %s",
                    (
                        kind,
                        digest,
                        self.pipeline,
                        self.embedder.name,
                        self.embedder.dimension,
                        len(chunks),
                        tenant,
                        document_id,
                    ),
                )
            await self._copy_chunks(conn, tenant, bot, document_id=document_id, chunks=chunks, vectors=vectors)
            terms = await _term_counts(conn, tenant, document_id)
            for lexeme, count in old_terms.items():
                terms[lexeme] = terms.get(lexeme, 0) - count
            await _add_terms(conn, tenant, bot, terms)
        if progress is not None:
            progress(f"{name}: {status}, {len(chunks)} chunks")
        await self._maybe_index(bot, progress)
        return IngestResult(document_id=str(document_id), name=name, status=status, chunks=len(chunks))

    async def _copy_chunks(
        self,
        conn: Connection,
        tenant: uuid.UUID,
        bot: uuid.UUID,
        *,
        document_id: uuid.UUID,
        chunks: list[Chunk],
        vectors: dict[str, Vector],
    ) -> None:
        columns = "tenant_id, bot_id, document_id, position, title, text, content_hash, embedder, dims, embedding"
        async with conn.cursor().copy(f"COPY knowledge_chunks ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
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
                        self.embedder.name,
                        self.embedder.dimension,
                        vectors[digest],
                    )
                )

    async def _embed(
        self, tenant: uuid.UUID, bot: uuid.UUID, texts: list[str], name: str, progress: Progress | None
    ) -> dict[str, Vector]:
        """Vectors by content hash for ``texts``, from the cache or the embedder (caching new ones)."""
        wanted = {hashlib.sha256(text.encode()).hexdigest(): text for text in texts}
        found: dict[str, Vector] = {}
        name_, dims = self.embedder.name, self.embedder.dimension
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT content_hash, embedding FROM knowledge_embeddings WHERE tenant_id = %s AND bot_id = %s"
                " AND embedder = %s AND dims = %s AND content_hash = ANY(%s)",
                (tenant, bot, name_, dims, list(wanted)),
            )
            for row in await cur.fetchall():
                found[row["content_hash"]] = _array(row["embedding"])
        missing = [(digest, text) for digest, text in wanted.items() if digest not in found]
        if progress is not None:
            progress(f"{name}: {len(texts)} chunks, {len(missing)} to embed, {len(wanted) - len(missing)} cached")
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            vectors = await self.embedder.embed([text for _, text in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"embedder {name_} returned {len(vectors)} vectors for {len(batch)} texts")
            rows = []
            for (digest, _), vector in zip(batch, vectors, strict=True):
                array = np.asarray(vector, dtype=np.float32)
                if array.shape != (dims,):
                    raise RuntimeError(f"embedder {name_} returned a vector of {array.size} dimensions, not {dims}")
                found[digest] = array
                rows.append((tenant, bot, name_, dims, digest, array))
            async with self.db.connection() as conn, conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO knowledge_embeddings (tenant_id, bot_id, embedder, dims, content_hash, embedding)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    rows,
                )
            if progress is not None:
                progress(f"{name}: embedded {min(start + self.batch_size, len(missing))}/{len(missing)}")
        return found

    async def _maybe_index(self, bot: uuid.UUID, progress: Progress | None) -> None:
        name_, dims = self.embedder.name, self.embedder.dimension
        if dims > vector_index.MAX_INDEX_DIMS:
            return
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT coalesce(sum(chunks), 0) AS n FROM knowledge_documents"
                " WHERE bot_id = %s AND embedder = %s AND dims = %s",
                (bot, name_, dims),
            )
            row = await cur.fetchone()
        if row is not None and row["n"] >= self.index_threshold:
            await vector_index.ensure_index(
                self.db, bot, name_, dims, maintenance_work_mem=self.index_build_memory, progress=progress
            )

    async def ensure_index(self, tenant_id: str, bot_id: str, *, progress: Progress | None = None) -> bool:
        """Build the bot's HNSW index for the current embedder now, whatever its size; ``True`` if one exists."""
        _, bot = await self._bot(tenant_id, bot_id)
        return await vector_index.ensure_index(
            self.db,
            bot,
            self.embedder.name,
            self.embedder.dimension,
            maintenance_work_mem=self.index_build_memory,
            progress=progress,
        )

    async def reembed(self, tenant_id: str, bot_id: str, *, progress: Progress | None = None) -> int:
        """Re-embed, with the current embedder, every document of a bot embedded by another; return how many.

        Works from the stored chunks (the original files are not needed); each
        document switches over in one transaction.
        """
        tenant, bot = await self._bot(tenant_id, bot_id)
        name_, dims = self.embedder.name, self.embedder.dimension
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT id, name, embedder, dims FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s"
                " AND (embedder <> %s OR dims <> %s) ORDER BY name",
                (tenant, bot, name_, dims),
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
            vectors = await self._embed(tenant, bot, [c.embedding_text for c in chunks], row["name"], progress)
            async with self.db.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT embedder, dims FROM knowledge_documents WHERE tenant_id = %s AND id = %s FOR UPDATE",
                    (tenant, row["id"]),
                )
                current = await cur.fetchone()
                if current is None or (current["embedder"], current["dims"]) != (row["embedder"], row["dims"]):
                    continue
                await conn.execute(
                    "DELETE FROM knowledge_chunks WHERE tenant_id = %s AND document_id = %s", (tenant, row["id"])
                )
                await self._copy_chunks(conn, tenant, bot, document_id=row["id"], chunks=chunks, vectors=vectors)
                await conn.execute(
                    "UPDATE knowledge_documents SET embedder = %s, dims = %s, updated_at = now()"
                    " WHERE tenant_id = %s AND id = %s",
                    (name_, dims, tenant, row["id"]),
                )
            if progress is not None:
                progress(f"{row['name']}: re-embedded {len(chunks)} chunks with {name_}")
        for old_name, old_dims in old_embedders:
            await vector_index.drop_index(self.db, bot, old_name, old_dims)
        await self._maybe_index(bot, progress)
        return len(stale)

    # ------------------------------------------------------------------ documents

    async def delete(self, tenant_id: str, bot_id: str, document: str) -> bool:
        """Delete a document (by id or name) and all its chunks; ``False`` if there is none."""
        tenant, bot = _uuid(tenant_id), _uuid(bot_id)
        if tenant is None or bot is None:
            return False
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s AND (id = %s OR name = %s)"
                " FOR UPDATE",
                (tenant, bot, _uuid(document), document),
            )
            rows = await cur.fetchall()
            for row in rows:
                terms = await _term_counts(conn, tenant, row["id"])
                await _add_terms(conn, tenant, bot, {lexeme: -count for lexeme, count in terms.items()})
                await conn.execute(
                    "DELETE FROM knowledge_documents WHERE tenant_id = %s AND id = %s", (tenant, row["id"])
                )
            return bool(rows)

    async def list_documents(self, tenant_id: str, bot_id: str) -> list[Document]:
        """A bot's documents, by name."""
        tenant, bot = _uuid(tenant_id), _uuid(bot_id)
        if tenant is None or bot is None:
            return []
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT id, name, content_type, content_hash, chunks, created_at, updated_at"
                " FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s ORDER BY name",
                (tenant, bot),
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

    # ------------------------------------------------------------------ search

    async def search(
        self, tenant_id: str, bot_id: str, query: str, *, limit: int = 5, threshold: float | None = None
    ) -> list[Passage]:
        """The passages of a bot's knowledge base that best answer ``query``, best first.

        Hybrid: vector and full-text candidates fused into a score in [0, 1];
        passages scoring below ``threshold`` (default: the knowledge base's
        ``threshold``) are left out.
        """
        candidates, rows = await self.candidates_for(tenant_id, bot_id, query, limit=limit)
        minimum = self.threshold if threshold is None else threshold
        passages: list[Passage] = []
        for fused, candidate in fuse(candidates, self.fusion, weight=self.vector_weight, c=self.text_scale):
            score = round(min(1.0, max(0.0, fused)), 6)
            if score < minimum or len(passages) >= limit:
                break
            row = rows[candidate.chunk_id]
            passages.append(
                Passage(
                    chunk_id=candidate.chunk_id,
                    document_id=str(row["document_id"]),
                    document=row["document"],
                    title=row["title"],
                    text=row["text"],
                    position=row["position"],
                    score=score,
                )
            )
        return passages

    async def candidates_for(
        self, tenant_id: str, bot_id: str, query: str, *, limit: int = 5
    ) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
        """The unfused candidates of a hybrid search and their rows (for :meth:`search` and measurements)."""
        tenant, bot = _uuid(tenant_id), _uuid(bot_id)
        query = " ".join(query.split())[:MAX_QUERY_CHARS]
        if tenant is None or bot is None or not query or limit < 1:
            return [], {}
        vector = await self.embedder.embed([query])
        array = np.asarray(vector[0], dtype=np.float32)
        dims = self.embedder.dimension
        n = max(self.candidates, 2 * limit)
        statement = _search_sql(bot, self.embedder.name, dims, exact=self.exact)
        params = {"tenant": tenant, "vector": array, "query": query, "n": n, "budget": self.max_text_matches}
        async with self.db.connection() as conn:
            # One round trip for both. The setting is per session: only this search scans HNSW indexes,
            # and it always sets the value it needs first.
            async with conn.pipeline():
                await conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(max(self.ef_search, n)),))
                cur = await conn.execute(statement, params)
            rows = await cur.fetchall()
        candidates = [
            Candidate(
                chunk_id=str(r["id"]),
                vector_rank=r["vector_rank"],
                text_rank=r["text_rank"],
                similarity=float(r["similarity"]),
                text_score=float(r["text_score"]),
            )
            for r in rows
        ]
        return candidates, {str(r["id"]): r for r in rows}


async def _term_counts(conn: Connection, tenant: uuid.UUID, document_id: uuid.UUID) -> dict[str, int]:
    """How many chunks of a document contain each lexeme."""
    cur = await conn.execute(
        "SELECT lexeme, count(*) AS n FROM knowledge_chunks c, unnest(tsvector_to_array(c.search)) AS lexeme"
        " WHERE c.tenant_id = %s AND c.document_id = %s GROUP BY lexeme",
        (tenant, document_id),
    )
    return {row["lexeme"]: row["n"] for row in await cur.fetchall()}


async def _add_terms(conn: Connection, tenant: uuid.UUID, bot: uuid.UUID, delta: dict[str, int]) -> None:
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


def _array(value: Any) -> Vector:
    """A stored ``vector`` (pgvector's ``Vector``, or an array) as a float32 array."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32)


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def _search_sql(bot: uuid.UUID, embedder: str, dims: int, *, exact: bool = False) -> sql.Composed:
    """The hybrid search statement for one bot and embedder (literal values, so the bot's index applies).

    The full-text query ORs the query's lexemes, leaving out the commonest
    (by the bot's document frequencies) until the rest match at most
    ``%(budget)s`` chunks. Lexemes absent from the knowledge base stay in the
    query: ``ts_rank`` averages over the query's terms, so they keep a partial
    match scoring lower than a full one. ``exact`` orders by an expression the HNSW index cannot serve, so
    the vector search is exact.
    """
    return sql.SQL(
        """
WITH terms AS (
    SELECT l.lexeme, sum(coalesce(t.df, 0)) OVER (ORDER BY coalesce(t.df, 0), l.lexeme) AS running
    FROM unnest(tsvector_to_array(to_tsvector({config}, %(query)s))) AS l(lexeme)
    LEFT JOIN knowledge_terms t ON t.bot_id = {bot}::uuid AND t.lexeme = l.lexeme
),
tq AS (
    SELECT nullif(string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | '), '')::tsquery
        AS q
    FROM terms WHERE running <= %(budget)s
),
vec AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank FROM (
        SELECT c.id, c.embedding::vector({dims}) <=> %(vector)s::vector({dims}) AS distance
        FROM knowledge_chunks c
        WHERE {scope} AND c.tenant_id = %(tenant)s
        ORDER BY (c.embedding::vector({dims}) <=> %(vector)s::vector({dims})){exact}
        LIMIT %(n)s
    ) v
),
txt AS (
    SELECT id, score, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
        SELECT c.id, ts_rank({weights}, c.search, tq.q) AS score
        FROM knowledge_chunks c, tq
        WHERE {scope} AND c.tenant_id = %(tenant)s AND c.search @@ tq.q
        ORDER BY score DESC
        LIMIT %(n)s
    ) t
)
SELECT c.id, c.document_id, d.name AS document, c.title, c.text, c.position,
       vec.rank AS vector_rank, txt.rank AS text_rank,
       1 - coalesce(vec.distance, c.embedding::vector({dims}) <=> %(vector)s::vector({dims})) AS similarity,
       coalesce(txt.score, ts_rank({weights}, c.search, tq.q), 0) AS text_score
FROM vec FULL JOIN txt ON txt.id = vec.id
JOIN knowledge_chunks c ON c.id = coalesce(vec.id, txt.id)
JOIN knowledge_documents d ON d.id = c.document_id AND d.tenant_id = c.tenant_id
CROSS JOIN tq
"""
    ).format(
        config=sql.Literal(TEXT_SEARCH_CONFIG),
        weights=sql.SQL("{}::float4[]").format(sql.Literal(TEXT_RANK_WEIGHTS)),
        dims=sql.Literal(dims),
        bot=sql.Literal(str(bot)),
        exact=sql.SQL(" + 0" if exact else ""),
        scope=vector_index.scope(bot, embedder, dims, "c"),
    )
