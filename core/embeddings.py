"""Text embedders behind one interface: a local one that needs no download, and OpenAI's.

The local embedder is a feature-hashing embedder: words (lightly stemmed), word
pairs and character trigrams are hashed into a fixed number of signed buckets,
weighted sub-linearly and normalised. It is lexical, deterministic across
processes and machines, and fast enough to embed thousands of chunks a second,
so the embedded demo works on a fresh machine with no network. Configure
``BOTLOOM_EMBEDDER=openai`` for semantic embeddings.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from botloom.core.domain import UsageEvent

WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "did",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
SUFFIXES = ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "ly", "s")


def normalize(text: str) -> str:
    """Lower-case ``text`` and strip accents (``Café`` → ``cafe``)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def stem(word: str) -> str:
    """A deliberately small suffix stripper: ``refunds``/``refunded``/``refunding`` → ``refund``."""
    for suffix in SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def tokens(text: str) -> list[str]:
    """The stemmed content words of ``text``, stopwords removed."""
    return [stem(w) for w in WORD.findall(normalize(text)) if w not in STOPWORDS]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of a fixed dimension."""

    name: str
    """Identifies the model: vectors of different embedders are never compared."""
    dimension: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class LocalEmbedder:
    """The offline feature-hashing embedder (see the module docstring)."""

    def __init__(self, dimension: int = 384) -> None:
        self.dimension = dimension
        self.name = f"local-hash-v1-{dimension}"

    def _features(self, text: str) -> dict[int, float]:
        words = tokens(text)
        counts: dict[str, float] = {}
        for word in words:
            counts["w:" + word] = counts.get("w:" + word, 0.0) + 1.0
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                gram = "c:" + padded[i : i + 3]
                counts[gram] = counts.get(gram, 0.0) + 0.25
        for left, right in itertools.pairwise(words):
            key = f"b:{left} {right}"
            counts[key] = counts.get(key, 0.0) + 0.5
        vector: dict[int, float] = {}
        for feature, count in counts.items():
            digest = zlib.crc32(feature.encode())
            bucket = digest % self.dimension
            sign = 1.0 if (digest >> 16) & 1 else -1.0
            vector[bucket] = vector.get(bucket, 0.0) + sign * (1.0 + math.log(count) if count >= 1 else count)
        return vector

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text (synchronous; the local embedder does no I/O)."""
        sparse = self._features(text)
        out = [0.0] * self.dimension
        for bucket, value in sparse.items():
            out[bucket] = value
        norm = math.sqrt(sum(v * v for v in out))
        return [v / norm for v in out] if norm else out

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return [self.embed_one(text) for text in texts]


UsageRecorder = Callable[[UsageEvent], Awaitable[None]]


class OpenAIEmbedder:
    """OpenAI-compatible embeddings through ``langchain-openai``, batched, with the client's retries."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        dimension: int | None = None,
        batch_size: int = 256,
        max_retries: int = 3,
        tenant_id: str | None = None,
        record_usage: UsageRecorder | None = None,
    ) -> None:
        import httpx
        from langchain_openai import OpenAIEmbeddings
        from pydantic import SecretStr

        self.name = f"openai:{model}"
        self.model = model
        self.dimension = dimension or (1536 if "small" in model or "ada" in model else 3072)
        self.batch_size = batch_size
        self.tenant_id = tenant_id
        self.record_usage = record_usage
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
        self._client = OpenAIEmbeddings(
            http_async_client=self._http,
            model=model,
            api_key=SecretStr(api_key),
            base_url=base_url,
            dimensions=dimension,
            chunk_size=batch_size,
            max_retries=max_retries,
            check_embedding_ctx_length=False,
        )

    async def aclose(self) -> None:
        """Close the client's HTTP connections."""
        await self._http.aclose()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, sent in batches of ``batch_size``."""
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            began = time.perf_counter()
            vectors = await self._client.aembed_documents(batch)
            if self.record_usage is not None and self.tenant_id is not None:
                await self.record_usage(
                    UsageEvent(
                        tenant_id=self.tenant_id,
                        kind="embedding",
                        model=self.model,
                        prompt_tokens=sum(len(t) // 4 + 1 for t in batch),
                        latency_ms=(time.perf_counter() - began) * 1000,
                    )
                )
            out.extend(vectors)
        return out


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
