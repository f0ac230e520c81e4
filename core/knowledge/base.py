"""The knowledge base of each bot: one object over its three jobs.

See docs/knowledge.md for the design and its measured quality. The work is
done by small parts, each in its own module; :class:`KnowledgeBase` builds them
from one :class:`~botloom.core.knowledge.config.KnowledgeConfig` and hands
each call to the right one:

* :class:`~botloom.core.knowledge.ingestion.Ingestion` (``ingest``,
  ``ingest_paths``, ``prepare``) parses and chunks a document, embeds the
  chunks it has not embedded before
  (:class:`~botloom.core.knowledge.embedding_cache.EmbeddingCache`, keyed by
  content hash, embedder and dimension), then replaces the document's chunks
  in one transaction (:mod:`~botloom.core.knowledge.chunk_rows`). Unchanged
  documents cost one query; bad input raises :class:`IngestError` before
  anything is written.
* :class:`~botloom.core.knowledge.search.HybridSearch` (``search``,
  ``candidates_for``) runs a vector search and a full-text search over the
  bot's chunks of the current embedder in one statement and fuses the two
  rankings (:mod:`botloom.core.knowledge.fusion`).
* :class:`~botloom.core.knowledge.documents.Documents` (``list_documents``,
  ``delete``, ``reembed``, ``ensure_index``) manages what is stored. Search
  only sees chunks of the knowledge base's embedder: after switching embedder,
  ``reembed`` re-embeds every document of a bot from its stored chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from botloom.core.embeddings import Embedder
from botloom.core.knowledge.chunking import Chunk
from botloom.core.knowledge.config import KnowledgeConfig
from botloom.core.knowledge.documents import Documents
from botloom.core.knowledge.embedding_cache import EmbeddingCache
from botloom.core.knowledge.fusion import Candidate
from botloom.core.knowledge.ingestion import Ingestion
from botloom.core.knowledge.parsing import IngestError
from botloom.core.knowledge.scope import UnknownBot
from botloom.core.knowledge.search import HybridSearch
from botloom.core.knowledge.types import Document, IngestResult, Passage, Progress
from botloom.core.storage.database import Database

__all__ = ["IngestError", "KnowledgeBase", "KnowledgeConfig", "UnknownBot"]


class KnowledgeBase:
    """Per-bot knowledge: documents in, passages out. Every call is scoped by tenant and bot."""

    ingestion: Ingestion
    """Adds and replaces documents."""
    searcher: HybridSearch
    """Finds passages."""
    documents: Documents
    """Lists, deletes and re-embeds stored documents; builds the vector index."""

    def __init__(self, db: Database, embedder: Embedder, config: KnowledgeConfig | None = None) -> None:
        """Store in ``db``, embed with ``embedder``; ``config`` holds the tunables (defaults when ``None``)."""
        self._db = db
        self._embedder = embedder
        self.config = config if config is not None else KnowledgeConfig()

    @property
    def db(self) -> Database:
        """The database the knowledge lives in."""
        return self._db

    @property
    def embedder(self) -> Embedder:
        """The embedder of new chunks and of queries; search only sees chunks it embedded."""
        return self._embedder

    @property
    def config(self) -> KnowledgeConfig:
        """The tunables; assigning a new configuration rebuilds the parts (for tests and tools)."""
        return self._config

    @config.setter
    def config(self, config: KnowledgeConfig) -> None:
        self._config = config
        cache = EmbeddingCache(self._db, self._embedder, batch_size=config.batch_size)
        self.ingestion = Ingestion(self._db, self._embedder, config, cache)
        self.searcher = HybridSearch(self._db, self._embedder, config)
        self.documents = Documents(self._db, self._embedder, config, cache)

    @property
    def max_bytes(self) -> int:
        """The largest document, in bytes (the API checks it before ingesting); assigning it replaces ``config``."""
        return self._config.max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.config = msgspec.structs.replace(self._config, max_bytes=value)

    @property
    def pipeline(self) -> str:
        """The parser and chunker settings recorded with each document."""
        return self._config.pipeline

    # ------------------------------------------------------------------ ingestion

    def prepare(self, name: str, content: bytes | str, content_type: str | None = None) -> tuple[str, str, list[Chunk]]:
        """Parse and chunk a document without storing it (:meth:`Ingestion.prepare`)."""
        return self.ingestion.prepare(name, content, content_type)

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
        """Add or replace the document ``name`` of a bot's knowledge base (:meth:`Ingestion.ingest`)."""
        return await self.ingestion.ingest(
            tenant_id, bot_id, name, content, content_type=content_type, progress=progress
        )

    async def ingest_paths(
        self, tenant_id: str, bot_id: str, paths: Sequence[Path], *, progress: Progress | None = None
    ) -> list[IngestResult]:
        """Ingest files and directories (:meth:`Ingestion.ingest_paths`)."""
        return await self.ingestion.ingest_paths(tenant_id, bot_id, paths, progress=progress)

    # ------------------------------------------------------------------ documents

    async def list_documents(self, tenant_id: str, bot_id: str) -> list[Document]:
        """A bot's documents, by name."""
        return await self.documents.list_documents(tenant_id, bot_id)

    async def delete(self, tenant_id: str, bot_id: str, document: str) -> bool:
        """Delete a document (by id or name) and all its chunks; ``False`` if there is none."""
        return await self.documents.delete(tenant_id, bot_id, document)

    async def reembed(self, tenant_id: str, bot_id: str, *, progress: Progress | None = None) -> int:
        """Re-embed every document of a bot embedded by another embedder (:meth:`Documents.reembed`)."""
        return await self.documents.reembed(tenant_id, bot_id, progress=progress)

    async def ensure_index(self, tenant_id: str, bot_id: str, *, progress: Progress | None = None) -> bool:
        """Build the bot's HNSW index for the current embedder now, whatever its size; ``True`` if one exists."""
        return await self.documents.ensure_index(tenant_id, bot_id, progress=progress)

    # ------------------------------------------------------------------ search

    async def search(
        self,
        tenant_id: str,
        bot_id: str,
        query: str,
        *,
        limit: int = 5,
        threshold: float | None = None,
        best_text_match: bool = False,
    ) -> list[Passage]:
        """The passages that best answer ``query``, best first (:meth:`HybridSearch.search`)."""
        return await self.searcher.search(
            tenant_id, bot_id, query, limit=limit, threshold=threshold, best_text_match=best_text_match
        )

    async def candidates_for(
        self, tenant_id: str, bot_id: str, query: str, *, limit: int = 5
    ) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
        """The unfused candidates of a hybrid search and their rows (:meth:`HybridSearch.candidates_for`)."""
        return await self.searcher.candidates_for(tenant_id, bot_id, query, limit=limit)
