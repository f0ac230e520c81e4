"""Splitting parsed documents into chunks along headings, paragraphs and sentences.

A chunk never spans two sections (so its title, the heading path, is true of
all its text). Inside a section, paragraphs are packed greedily up to
``max_chars``; a paragraph too long for one chunk is cut between sentences (and
a sentence too long, between words). Consecutive chunks of one section share up
to ``overlap`` characters of whole sentences, so an answer that straddles a
boundary is found in either.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from botloom.core.knowledge.parsing import ParsedDocument, Section

DEFAULT_MAX_CHARS = 800
DEFAULT_OVERLAP = 120
TITLE_SEPARATOR = " > "

_SENTENCE = re.compile(r"(?<=[.!?…])[\"”’)]*\s+(?=[\"“‘(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, as embedded and stored."""

    position: int
    title: str
    text: str

    @property
    def embedding_text(self) -> str:
        """What the embedder sees: the heading path, then the text."""
        return f"{self.title}\n\n{self.text}" if self.title else self.text

    @property
    def content_hash(self) -> str:
        """SHA-256 of :attr:`embedding_text`: the embedding cache key."""
        return hashlib.sha256(self.embedding_text.encode()).hexdigest()


@dataclass(frozen=True)
class _Unit:
    text: str
    separator: str
    """How this unit joins the one before it in the same chunk."""


def _split_long(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters: between sentences, else between words."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text):
        if len(sentence) <= limit:
            pieces.append(sentence)
            continue
        current = ""
        for whole_word in sentence.split(" "):
            word = whole_word
            while len(word) > limit:
                if current:
                    pieces.append(current)
                    current = ""
                pieces.append(word[:limit])
                word = word[limit:]
            candidate = f"{current} {word}" if current else word
            if len(candidate) > limit:
                pieces.append(current)
                current = word
            else:
                current = candidate
        if current:
            pieces.append(current)
    return [p for p in (piece.strip() for piece in pieces) if p]


def _units(section: Section, limit: int) -> list[_Unit]:
    units: list[_Unit] = []
    for paragraph in section.paragraphs:
        for line_index, line in enumerate(paragraph.split("\n")):
            for piece_index, piece in enumerate(_split_long(line, limit)):
                if piece_index:
                    separator = " "
                elif line_index:
                    separator = "\n"
                else:
                    separator = "\n\n"
                units.append(_Unit(piece, separator))
    return units


def _join(units: list[_Unit]) -> str:
    return "".join((u.separator if i else "") + u.text for i, u in enumerate(units))


def _size(units: list[_Unit]) -> int:
    return len(_join(units))


def chunk_section(section: Section, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP) -> list[str]:
    """The chunk texts of one section (see the module docstring)."""
    if section.atomic:
        whole = "\n\n".join(section.paragraphs)
        if len(whole) <= max_chars:
            return [whole]
    units = _units(section, max_chars)
    chunks: list[str] = []
    current: list[_Unit] = []
    fresh = 0
    """How many units of ``current`` are not carried over from the previous chunk."""
    for unit in units:
        if current and fresh and _size([*current, unit]) > max_chars:
            chunks.append(_join(current))
            carried: list[_Unit] = []
            for previous in reversed(current):
                if _size([previous, *carried]) > overlap or len(carried) + 1 >= len(current):
                    break
                carried.insert(0, previous)
            current = carried
            fresh = 0
            while current and _size([*current, unit]) > max_chars:
                current.pop(0)
        current.append(unit)
        fresh += 1
    if current and fresh:
        chunks.append(_join(current))
    return chunks


def chunk_document(
    doc: ParsedDocument, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP
) -> list[Chunk]:
    """Every chunk of ``doc`` in reading order, numbered from 0, titled with its heading path."""
    chunks: list[Chunk] = []
    for section in doc.sections:
        title = TITLE_SEPARATOR.join(section.path)
        for text in chunk_section(section, max_chars=max_chars, overlap=overlap):
            chunks.append(Chunk(len(chunks), title, text))
    return chunks
