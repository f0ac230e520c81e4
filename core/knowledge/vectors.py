"""Each bot's chunks in this process's memory: a hybrid search without ranking in PostgreSQL.

A bot's vectors (of one embedder) are loaded once into a normalised numpy
matrix, with its chunks' rows and their full-text index
(:mod:`botloom.core.knowledge.lexical`); a search takes the nearest chunks with
one matrix-vector product (exact, so no recall is lost to an approximate index)
and ranks the full-text matches itself. PostgreSQL is asked only for the
query's lexemes and the bot's document *fingerprint* (count and a hash of each
document row's id, content, pipeline, embedder and update time) in one light
statement: when another process ingested or deleted a document, the fingerprint
differs and the bot is loaded again before the answer is used. Bots are kept
least recently used first out, up to a memory budget
(``KnowledgeConfig.memory_vectors``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql

from botloom.core.knowledge.lexical import Lexicon

FINGERPRINT = """
SELECT count(*) AS documents,
       coalesce(sum(hashtextextended(
           d.id::text || d.content_hash || d.pipeline || d.embedder || d.dims::text || d.chunks::text
           || d.updated_at::text, 0)), 0)::text AS digest
FROM knowledge_documents d WHERE d.tenant_id = %(tenant)s AND d.bot_id = %(bot)s
"""
"""What a bot's documents are now: changes with every ingestion, re-embedding or deletion."""


@dataclass(frozen=True)
class BotVectors:
    """One bot's chunk vectors of one embedder, as loaded at one fingerprint."""

    fingerprint: tuple[int, str]
    ids: list[str]
    matrix: np.ndarray
    """One row per chunk, each normalised to length 1 (rows of zeros stay zero), stored column by column."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Each chunk's row (``id``, ``document_id``, ``document``, ``title``, ``text``, ``position``), in ``ids`` order."""
    lexicon: Lexicon | None = None
    """The chunks' full-text index (``None``: search the text half in PostgreSQL)."""
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Each chunk's place in the order of ids (ties of equal scores go to the smaller id, as in PostgreSQL)."""

    @property
    def nbytes(self) -> int:
        """The memory the chunks take (vectors, rows and full-text index)."""
        text = sum(len(r["text"]) + len(r["title"]) + 200 for r in self.rows)
        return int(self.matrix.nbytes) + 64 * len(self.ids) + text + (self.lexicon.nbytes if self.lexicon else 0)

    def index(self) -> dict[str, int]:
        """Chunk id → its row in :attr:`matrix` (built once)."""
        found: dict[str, int] | None = self.__dict__.get("_index")
        if found is None:
            found = {chunk: i for i, chunk in enumerate(self.ids)}
            object.__setattr__(self, "_index", found)
        return found

    def nearest(self, vector: np.ndarray, n: int) -> tuple[list[str], list[float]]:
        """The ``n`` chunks nearest ``vector`` by cosine distance, nearest first (ties by id), and their distances."""
        if not self.ids or n < 1:
            return [], []
        norm = float(np.linalg.norm(vector))
        query = (vector / norm).astype(np.float32) if norm > 0 else np.zeros_like(vector, dtype=np.float32)
        # Only the query's non-zero dimensions count (the local embedder's vectors are sparse): the matrix is
        # stored column by column so they are contiguous; einsum stays on this thread, where BLAS would spin
        # up threads that cost more CPU than the product.
        used = np.flatnonzero(query)
        distances = 1.0 - np.einsum("ij,j->i", self.matrix[:, used], query[used])
        if len(self.ids) > n:
            chosen = np.argpartition(distances, n - 1)[:n]
            # Equal distances at the cut: keep those of the smallest ids, as ORDER BY distance, id would.
            cut = distances[chosen].max()
            tied = np.flatnonzero(distances == cut)
            if len(tied) > 1:
                below = [int(i) for i in chosen if distances[i] < cut]
                ties = sorted((int(i) for i in tied), key=lambda i: self.ids[i])[: n - len(below)]
                chosen = np.array(below + ties, dtype=np.intp)
        else:
            chosen = np.arange(len(self.ids))
        order = sorted((int(i) for i in chosen), key=lambda i: (float(distances[i]), self.ids[i]))
        return [self.ids[i] for i in order], [float(distances[i]) for i in order]


class VectorCache:
    """Bots' :class:`BotVectors`, least recently used evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        """Keep at most ``max_bytes`` of vectors (0: keep none)."""
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, str, int], BotVectors] = OrderedDict()
        self._size = 0

    def get(self, key: tuple[str, str, str, int]) -> BotVectors | None:
        """The vectors kept for ``key`` (tenant, bot, embedder, dimensions), if any."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, str, int], entry: BotVectors) -> None:
        """Keep ``entry`` (evicting the least recently used beyond the budget; too large: not kept)."""
        self.drop(key)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self._size += entry.nbytes
        while self._size > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self._size -= old.nbytes

    def drop(self, key: tuple[str, str, str, int]) -> None:
        """Forget ``key``'s vectors."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old.nbytes


def fingerprint_of(row: dict[str, Any] | None) -> tuple[int, str]:
    """The fingerprint a :data:`FINGERPRINT` row states."""
    return (int(row["documents"]), str(row["digest"])) if row else (0, "0")


async def load(conn: AsyncConnection[Any], tenant: uuid.UUID, bot: uuid.UUID, embedder: str, dims: int) -> BotVectors:
    """A bot's vectors, chunk rows, full-text index and their fingerprint, read in one statement (one snapshot)."""
    statement = sql.SQL(
        "WITH fp AS ({fingerprint}) SELECT fp.documents, fp.digest, c.id, c.embedding::vector({dims}) AS embedding,"
        " c.search::text AS search, c.document_id, d.name AS document, c.title, c.text, c.position"
        " FROM fp LEFT JOIN knowledge_chunks c ON c.tenant_id = %(tenant)s AND c.bot_id = %(bot)s"
        " AND c.embedder = %(embedder)s AND c.dims = %(dims)s"
        " LEFT JOIN knowledge_documents d ON d.id = c.document_id AND d.tenant_id = c.tenant_id ORDER BY c.id"
    ).format(fingerprint=sql.SQL(FINGERPRINT), dims=sql.Literal(dims))
    cur = await conn.execute(statement, {"tenant": tenant, "bot": bot, "embedder": embedder, "dims": dims})
    rows = await cur.fetchall()
    fingerprint = fingerprint_of(rows[0] if rows else None)
    present = [r for r in rows if r["id"] is not None]
    matrix = np.zeros((len(present), dims), dtype=np.float32)
    for i, row in enumerate(present):
        value = row["embedding"]
        matrix[i] = value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    matrix /= np.where(norms > 0, norms, 1.0)[:, None]
    columns = np.asfortranarray(matrix)
    ids = [str(r["id"]) for r in present]
    rows = [
        {
            "id": r["id"],
            "document_id": r["document_id"],
            "document": r["document"],
            "title": r["title"],
            "text": r["text"],
            "position": r["position"],
        }
        for r in present
    ]
    order = np.empty(len(ids), dtype=np.int64)
    order[np.array(sorted(range(len(ids)), key=lambda i: ids[i]), dtype=np.int64)] = np.arange(len(ids))
    # Indexing 10,000 chunks takes a second or two of CPU: in a thread, so the event loop keeps serving meanwhile.
    lexicon = await asyncio.to_thread(Lexicon, [str(r["search"] or "") for r in present])
    return BotVectors(fingerprint=fingerprint, ids=ids, matrix=columns, rows=rows, lexicon=lexicon, order=order)
