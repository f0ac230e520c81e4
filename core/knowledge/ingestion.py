"""Ingestion: documents in. Parse, chunk, embed what is new, and replace the document's chunks in one transaction.

Unchanged documents (same text, type, chunking and embedder) cost one query;
bad input raises :class:`IngestError` before anything is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botloom.core.embeddings import Embedder
from botloom.core.knowledge import index as vector_index
from botloom.core.knowledge.chunk_rows import add_terms, copy_chunks, delete_chunks, term_counts
from botloom.core.knowledge.chunking import Chunk, chunk_document
from botloom.core.knowledge.config import KnowledgeConfig
from botloom.core.knowledge.embedding_cache import EmbeddingCache
from botloom.core.knowledge.parsing import CONTENT_TYPES, IngestError, decode, detect_content_type, parse_text
from botloom.core.knowledge.scope import resolve_bot
from botloom.core.knowledge.types import IngestResult, IngestStatus, Progress
from botloom.core.storage.database import Database

MAX_NAME_CHARS = 1000
THREAD_ABOVE = 256 * 1024
"""Documents larger than this (bytes or characters) are parsed in a thread, off the event loop."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document parsed and chunked, not yet stored."""

    name: str
    content_type: str
    digest: str
    """SHA-256 (hex) of the decoded text."""
    chunks: list[Chunk]


class Ingestion:
    """Adds and replaces the documents of bots' knowledge bases."""

    def __init__(self, db: Database, embedder: Embedder, config: KnowledgeConfig, cache: EmbeddingCache) -> None:
        """Store in ``db``, embed with ``embedder`` through ``cache``, parse and chunk as ``config`` says."""
        self.db = db
        self.embedder = embedder
        self.config = config
        self.cache = cache

    def prepare(self, name: str, content: bytes | str, content_type: str | None = None) -> tuple[str, str, list[Chunk]]:
        """Parse and chunk a document without storing it: ``(content_type, content_hash, chunks)``.

        Raises :class:`IngestError` for bad input.
        """
        if not name or len(name) > MAX_NAME_CHARS or any(ord(ch) < 32 for ch in name):
            raise IngestError(f"{name[:100]!r}: a document name needs 1 to {MAX_NAME_CHARS} printable characters")
        kind = detect_content_type(name, content_type)
        text = decode(name, content, max_bytes=self.config.max_bytes)
        doc = parse_text(name, text, kind)
        chunks = chunk_document(doc, max_chars=self.config.max_chars, overlap=self.config.overlap)
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
        tenant, bot = await resolve_bot(self.db, tenant_id, bot_id)
        if len(content) > THREAD_ABOVE:
            kind, digest, chunks = await asyncio.to_thread(self.prepare, name, content, content_type)
        else:
            kind, digest, chunks = self.prepare(name, content, content_type)
        return await self._store(tenant, bot, Prepared(name, kind, digest, chunks), progress)

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
        tenant, bot = await resolve_bot(self.db, tenant_id, bot_id)
        limit = self.config.max_bytes
        prepared: list[Prepared] = []
        for path, name in collect_files(paths, progress):
            size = path.stat().st_size
            if size > limit:
                raise IngestError(f"{name}: file is too large ({size:,} bytes; the limit is {limit:,} bytes)")
            content = await asyncio.to_thread(path.read_bytes)
            kind, digest, chunks = await asyncio.to_thread(self.prepare, name, content)
            prepared.append(Prepared(name, kind, digest, chunks))
        results = []
        for number, document in enumerate(prepared, 1):
            if progress is not None:
                progress(f"[{number}/{len(prepared)}] {document.name}")
            results.append(await self._store(tenant, bot, document, progress))
        return results

    def _same(self, row: dict[str, Any] | None, document: Prepared) -> bool:
        """Whether the stored document ``row`` is ``document`` as this knowledge base would store it."""
        return row is not None and (
            row["content_hash"],
            row["content_type"],
            row["pipeline"],
            row["embedder"],
            row["dims"],
        ) == (document.digest, document.content_type, self.config.pipeline, self.embedder.name, self.embedder.dimension)

    async def _store(
        self, tenant: uuid.UUID, bot: uuid.UUID, document: Prepared, progress: Progress | None
    ) -> IngestResult:
        """Store a prepared document: embed its new chunks, then swap its chunks in one transaction."""
        name, chunks = document.name, document.chunks
        lookup = "SELECT * FROM knowledge_documents WHERE tenant_id = %s AND bot_id = %s AND name = %s"
        async with self.db.connection() as conn:
            row = await (await conn.execute(lookup, (tenant, bot, name))).fetchone()
        if row is not None and self._same(row, document):
            if progress is not None:
                progress(f"{name}: unchanged")
            return IngestResult(document_id=str(row["id"]), name=name, status="unchanged", chunks=row["chunks"])
        vectors = await self.cache.vectors(tenant, bot, [c.embedding_text for c in chunks], name, progress)
        described = (
            document.content_type,
            document.digest,
            self.config.pipeline,
            self.embedder.name,
            self.embedder.dimension,
            len(chunks),
        )
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"knowledge:{bot}:{name}",))
            row = await (await conn.execute(lookup + " FOR UPDATE", (tenant, bot, name))).fetchone()
            if row is not None and self._same(row, document):
                return IngestResult(document_id=str(row["id"]), name=name, status="unchanged", chunks=row["chunks"])
            status: IngestStatus
            old_terms: dict[str, int] = {}
            if row is None:
                cur = await conn.execute(
                    "INSERT INTO knowledge_documents (tenant_id, bot_id, name, content_type, content_hash, pipeline,"
                    " embedder, dims, chunks) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (tenant, bot, name, *described),
                )
                created = await cur.fetchone()
                assert created is not None
                document_id, status = created["id"], "created"
            else:
                document_id, status = row["id"], "updated"
                old_terms = await term_counts(conn, tenant, document_id)
                await delete_chunks(conn, tenant, document_id)
                await conn.execute(
                    "UPDATE knowledge_documents SET content_type = %s, content_hash = %s, pipeline = %s,"
                    " embedder = %s, dims = %s, chunks = %s, updated_at = now() WHERE tenant_id = %s AND id = %s",
                    (*described, tenant, document_id),
                )
            await copy_chunks(conn, self.embedder, tenant, bot, document_id=document_id, chunks=chunks, vectors=vectors)
            terms = await term_counts(conn, tenant, document_id)
            for lexeme, count in old_terms.items():
                terms[lexeme] = terms.get(lexeme, 0) - count
            await add_terms(conn, tenant, bot, terms)
        if progress is not None:
            progress(f"{name}: {status}, {len(chunks)} chunks")
        await vector_index.index_when_large(
            self.db,
            bot,
            self.embedder.name,
            self.embedder.dimension,
            threshold=self.config.index_threshold,
            maintenance_work_mem=self.config.index_build_memory,
            progress=progress,
        )
        return IngestResult(document_id=str(document_id), name=name, status=status, chunks=len(chunks))


def collect_files(paths: Sequence[Path], progress: Progress | None) -> list[tuple[Path, str]]:
    """The files under ``paths`` with their document names, skipping hidden and unsupported files.

    Raises :class:`IngestError` for a missing path, or when two files would get the same name.
    """
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
