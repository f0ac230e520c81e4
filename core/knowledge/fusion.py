"""Fusing the vector and full-text rankings of a hybrid search into one score in [0, 1].

Two methods are offered (see docs/knowledge.md for how they measured):

* ``"rrf"``, reciprocal rank fusion: each list adds ``1 / (k + rank)``, and the
  sum is divided by its best possible value ``2 / (k + 1)``. It needs no score
  calibration, but the score is relative: the best chunk for any query scores
  high, however poor a match it is.
* ``"weighted"``: ``w * similarity + (1 - w) * text``, where similarity is the
  cosine similarity (clamped to [0, 1]) and text is the full-text rank squashed
  into [0, 1] as ``rank / (rank + c)``. Both parts are absolute, so a threshold
  means the same for every query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Fusion = Literal["rrf", "weighted"]

RRF_K = 60
"""The usual reciprocal-rank-fusion constant."""


@dataclass(frozen=True)
class Candidate:
    """A chunk found by the vector search, the full-text search, or both."""

    chunk_id: str
    vector_rank: int | None
    """1 for the nearest chunk; ``None`` when outside the vector candidates."""
    text_rank: int | None
    """1 for the best full-text match; ``None`` when it does not match or is outside the candidates."""
    similarity: float
    """Cosine similarity to the query, in [-1, 1]."""
    text_score: float
    """``ts_rank`` of the chunk for the query (0 when it does not match)."""


def rrf(candidate: Candidate, *, k: int = RRF_K) -> float:
    """Reciprocal rank fusion of both ranks, scaled to [0, 1]."""
    total = sum(1.0 / (k + rank) for rank in (candidate.vector_rank, candidate.text_rank) if rank is not None)
    return total / (2.0 / (k + 1))


def squash(text_score: float, c: float) -> float:
    """Map a non-negative full-text rank into [0, 1)."""
    return text_score / (text_score + c) if text_score > 0 else 0.0


def weighted(candidate: Candidate, *, weight: float, c: float) -> float:
    """``weight`` × cosine similarity + (1 − ``weight``) × squashed full-text rank, in [0, 1]."""
    similarity = min(1.0, max(0.0, candidate.similarity))
    return weight * similarity + (1.0 - weight) * squash(candidate.text_score, c)


def fuse(
    candidates: list[Candidate], method: Fusion, *, k: int = RRF_K, weight: float = 0.5, c: float = 1.0
) -> list[tuple[float, Candidate]]:
    """Score every candidate with ``method``, best first (ties broken by vector rank)."""
    if method == "rrf":
        scored = [(rrf(cand, k=k), cand) for cand in candidates]
    else:
        scored = [(weighted(cand, weight=weight, c=c), cand) for cand in candidates]
    scored.sort(key=lambda pair: (-pair[0], pair[1].vector_rank or 1 << 30, pair[1].chunk_id))
    return scored
