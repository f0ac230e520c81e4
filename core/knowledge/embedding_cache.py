"""The embedding cache: a chunk's vector is computed once per bot, embedder and text.

``knowledge_embeddings`` keeps each vector by (bot, embedder name, dimension,
SHA-256 of the embedded text). New vectors are written per batch before the
document's transaction, so an embedder failure half way through a large
document keeps what was already paid for.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from botloom.core.embeddings import Embedder
from botloom.core.knowledge.types import Progress
from botloom.core.storage.database import Database

Vector = npt.NDArray[np.float32]


def as_vector(value: Any) -> Vector:
    """A stored ``vector`` (pgvector's ``Vector``, or an array) as a float32 array."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32)


class EmbeddingCache:
    """Vectors of chunk texts for one embedder, from the cache or the embedder (caching new ones)."""

    def __init__(self, db: Database, embedder: Embedder, *, batch_size: int = 128) -> None:
        """Embed with ``embedder``, ``batch_size`` texts per call."""
        self.db = db
        self.embedder = embedder
        self.batch_size = batch_size

    async def vectors(
        self, tenant: uuid.UUID, bot: uuid.UUID, texts: list[str], name: str, progress: Progress | None
    ) -> dict[str, Vector]:
        """Vectors by content hash (SHA-256 hex) for ``texts`` of document ``name``.

        Raises :class:`RuntimeError` when the embedder returns the wrong number
        of vectors or a vector of the wrong dimension.
        """
        wanted = {hashlib.sha256(text.encode()).hexdigest(): text for text in texts}
        found: dict[str, Vector] = {}
        embedder, dims = self.embedder.name, self.embedder.dimension
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT content_hash, embedding FROM knowledge_embeddings WHERE tenant_id = %s AND bot_id = %s"
                " AND embedder = %s AND dims = %s AND content_hash = ANY(%s)",
                (tenant, bot, embedder, dims, list(wanted)),
            )
            for row in await cur.fetchall():
                found[row["content_hash"]] = as_vector(row["embedding"])
        missing = [(digest, text) for digest, text in wanted.items() if digest not in found]
        if progress is not None:
            progress(f"{name}: {len(texts)} chunks, {len(missing)} to embed, {len(wanted) - len(missing)} cached")
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            vectors = await self.embedder.embed([text for _, text in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"embedder {embedder} returned {len(vectors)} vectors for {len(batch)} texts")
            rows = []
            for (digest, _), vector in zip(batch, vectors, strict=True):
                array = np.asarray(vector, dtype=np.float32)
                if array.shape != (dims,):
                    raise RuntimeError(f"embedder {embedder} returned a vector of {array.size} dimensions, not {dims}")
                found[digest] = array
                rows.append((tenant, bot, embedder, dims, digest, array))
            async with self.db.connection() as conn, conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO knowledge_embeddings (tenant_id, bot_id, embedder, dims, content_hash, embedding)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    rows,
                )
            if progress is not None:
                progress(f"{name}: embedded {min(start + self.batch_size, len(missing))}/{len(missing)}")
        return found
