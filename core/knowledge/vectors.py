"""Each bot's chunk vectors in this process's memory: the vector half of a hybrid search without PostgreSQL.

A bot's vectors (of one embedder) are loaded once into a normalised numpy
matrix; a search takes the nearest chunks with one matrix-vector product (exact,
so no recall is lost to an approximate index) and sends only their ids to
PostgreSQL, which does the full-text half. Every search also reads the bot's
document *fingerprint* (count and a hash of each document row's id, content,
pipeline, embedder and update time) in the same round trip: when another
process ingested or deleted a document, the fingerprint differs and the matrix
is loaded again before the answer is used. Matrices are kept least recently
used first out, up to a memory budget (``KnowledgeConfig.memory_vectors``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql

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

    @property
    def nbytes(self) -> int:
        """The memory the vectors take."""
        return int(self.matrix.nbytes) + 64 * len(self.ids)

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
    """A bot's vectors and their fingerprint, read in one statement (one snapshot)."""
    statement = sql.SQL(
        "WITH fp AS ({fingerprint}) SELECT fp.documents, fp.digest, c.id, c.embedding::vector({dims}) AS embedding"
        " FROM fp LEFT JOIN knowledge_chunks c ON c.tenant_id = %(tenant)s AND c.bot_id = %(bot)s"
        " AND c.embedder = %(embedder)s AND c.dims = %(dims)s ORDER BY c.id"
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
    return BotVectors(fingerprint=fingerprint, ids=[str(r["id"]) for r in present], matrix=columns)
