"""The tunables of a knowledge base, in one frozen value.

>>> KnowledgeBase(db, embedder, KnowledgeConfig(max_chars=600, fusion="rrf"))

Every field has the default measured in docs/knowledge.md; a configuration is
checked when it is made, so a bad value fails at start-up, not on the first
document.
"""

from __future__ import annotations

import msgspec

from botloom.core.knowledge.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP
from botloom.core.knowledge.fusion import Fusion
from botloom.core.knowledge.parsing import DEFAULT_MAX_BYTES

PIPELINE_VERSION = 1
"""Bump when parsing or chunking changes in a way that should re-chunk every document."""
DEFAULT_THRESHOLD = 0.14
"""The default minimum score, calibrated with the local embedder on tests/data/knowledge (docs/knowledge.md)."""
INDEX_THRESHOLD = 1000
"""A bot gets an HNSW index for an embedder once it has this many chunks of it."""


class KnowledgeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a knowledge base parses, chunks, embeds, indexes and searches."""

    # -- ingestion
    max_bytes: int = DEFAULT_MAX_BYTES
    """The largest document, in bytes."""
    max_chars: int = DEFAULT_MAX_CHARS
    """The longest chunk, in characters."""
    overlap: int = DEFAULT_OVERLAP
    """Characters of whole sentences consecutive chunks of one section share at most."""
    batch_size: int = 128
    """Texts per embedder call (and per write to the embedding cache)."""

    # -- search
    fusion: Fusion = "weighted"
    """How the vector and full-text rankings become one score (:mod:`botloom.core.knowledge.fusion`)."""
    vector_weight: float = 0.5
    """The weight of cosine similarity in ``"weighted"`` fusion; full text gets the rest."""
    text_scale: float = 1.0
    """The squash constant of the full-text rank in ``"weighted"`` fusion."""
    candidates: int = 20
    """Rows taken from each of the vector and full-text searches (at least twice the passages asked for)."""
    max_text_matches: int = 1000
    """Full-text search leaves out the commonest query terms until the rest match at most this many chunks."""
    ef_search: int = 100
    """The HNSW search breadth (``hnsw.ef_search``)."""
    threshold: float = DEFAULT_THRESHOLD
    """The default minimum score of a passage."""
    exact: bool = False
    """Search without the approximate index (for measuring its recall)."""
    memory_vectors: int = 256 * 1024 * 1024
    """Bytes of bots' chunks (vectors, rows and full-text index) a process keeps in memory to search them itself
    (vectors exactly with numpy, full text with PostgreSQL's ``ts_rank`` computed in Python) instead of in
    PostgreSQL (:mod:`botloom.core.knowledge.vectors`, :mod:`botloom.core.knowledge.lexical`); 0 searches them in
    PostgreSQL (HNSW or exact)."""

    # -- vector index
    index_threshold: int = INDEX_THRESHOLD
    """How many chunks of an embedder a bot needs before it gets an HNSW index."""
    index_build_memory: str | None = None
    """``maintenance_work_mem`` for building an index (``"1GB"``); the server's setting when ``None``."""

    def __post_init__(self) -> None:
        """Refuse values that could only fail (or silently misbehave) later."""
        if self.fusion not in ("rrf", "weighted"):
            raise ValueError(f"fusion must be 'rrf' or 'weighted', not {self.fusion!r}")
        if not 0.0 <= self.vector_weight <= 1.0:
            raise ValueError(f"vector_weight must be in [0, 1], not {self.vector_weight}")
        for name in ("max_bytes", "max_chars", "batch_size", "candidates", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("overlap", "text_scale", "max_text_matches", "index_threshold", "memory_vectors"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")

    @property
    def pipeline(self) -> str:
        """The parser and chunker settings recorded with each document."""
        return f"v{PIPELINE_VERSION} chars={self.max_chars} overlap={self.overlap}"
