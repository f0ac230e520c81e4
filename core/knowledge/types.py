"""The values the knowledge base hands out (documents, ingestion results, passages) and its progress callback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

import msgspec

IngestStatus = Literal["created", "updated", "unchanged"]
Progress = Callable[[str], None]
"""Receives one line of progress at a time (``"returns.md: updated, 5 chunks"``)."""


class Passage(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk found by :meth:`KnowledgeBase.search`."""

    chunk_id: str
    document_id: str
    document: str
    """The document's name."""
    title: str
    """The heading path of the chunk, outermost first, joined with `` > ``."""
    text: str
    position: int
    """The chunk's place in its document, from 0."""
    score: float
    """The fused relevance score in [0, 1]; higher is better."""


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """A document of a bot's knowledge base."""

    id: str
    name: str
    content_type: str
    content_hash: str
    """SHA-256 (hex) of the document's decoded text."""
    chunks: int
    created_at: datetime
    updated_at: datetime


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ingesting one document did."""

    document_id: str
    name: str
    status: IngestStatus
    chunks: int
