"""Bots' vectors searched in this process's memory (#17): the same passages as PostgreSQL, never stale."""

from __future__ import annotations

import numpy as np

from botloom.core.embeddings import LocalEmbedder
from botloom.core.knowledge import KnowledgeBase, KnowledgeConfig
from botloom.core.knowledge.vectors import BotVectors, VectorCache
from botloom.core.storage.database import Database
from botloom.core.storage.repositories import Store

DOCS = {
    "returns.md": "# Returns\n\n## Policy\nYou can return any unused item within 30 days for a refund.\n",
    "shipping.md": "# Shipping\n\n## Costs\nExpress shipping costs 9.90 euros on any order.\n",
    "warranty.md": "# Warranty\n\n## Cover\nAll products carry a two-year warranty against defects.\n",
}
QUESTIONS = ["can I return an item?", "how much is express shipping", "is there a warranty", "refund", "what is it?"]


async def test_searching_vectors_in_memory_finds_what_postgresql_finds(store: Store, db: Database) -> None:
    tenant = await store.tenants.create("vectors", "Vectors")
    bot = await store.bots.create(tenant.id, "bot", "Bot")
    memory = KnowledgeBase(db, LocalEmbedder())
    in_database = KnowledgeBase(db, memory.embedder, KnowledgeConfig(memory_vectors=0))
    for name, text in DOCS.items():
        await memory.ingest(tenant.id, bot.id, name, text)
    for question in QUESTIONS:
        mine = await memory.search(tenant.id, bot.id, question, limit=5, threshold=0)
        theirs = await in_database.search(tenant.id, bot.id, question, limit=5, threshold=0)
        assert [(p.chunk_id, round(p.score, 5)) for p in mine] == [(p.chunk_id, round(p.score, 5)) for p in theirs]
    assert memory.searcher.vectors.get((tenant.id, bot.id, memory.embedder.name, memory.embedder.dimension))


async def vector_ranks(kb: KnowledgeBase, tenant: str, bot: str, query: str, document: str) -> list[int]:
    """The vector-half ranks of ``document``'s chunks in a search for ``query`` (none: its vectors are unknown)."""
    candidates, rows = await kb.candidates_for(tenant, bot, query, limit=5)
    return [c.vector_rank for c in candidates if rows[c.chunk_id]["document"] == document and c.vector_rank]


async def test_a_document_another_process_adds_or_deletes_is_seen_at_once(store: Store, db: Database) -> None:
    tenant = await store.tenants.create("vectors-stale", "Stale")
    bot = await store.bots.create(tenant.id, "bot", "Bot")
    searcher = KnowledgeBase(db, LocalEmbedder())
    other = KnowledgeBase(db, searcher.embedder)  # another process: its own memory
    await other.ingest(tenant.id, bot.id, "returns.md", DOCS["returns.md"])
    assert [p.document for p in await searcher.search(tenant.id, bot.id, "warranty defects", threshold=0)] == [
        "returns.md"
    ]
    await other.ingest(tenant.id, bot.id, "warranty.md", DOCS["warranty.md"])
    found = await searcher.search(tenant.id, bot.id, "warranty defects", threshold=0)
    assert found[0].document == "warranty.md"
    assert await vector_ranks(searcher, tenant.id, bot.id, "warranty defects", "warranty.md")  # in memory too
    await other.ingest(tenant.id, bot.id, "warranty.md", DOCS["warranty.md"].replace("two-year", "five-year"))
    found = await searcher.search(tenant.id, bot.id, "five-year warranty", threshold=0)
    assert "five-year" in found[0].text
    assert await vector_ranks(searcher, tenant.id, bot.id, "five-year warranty", "warranty.md")
    assert await other.delete(tenant.id, bot.id, "warranty.md")
    assert [p.document for p in await searcher.search(tenant.id, bot.id, "warranty defects", threshold=0)] == [
        "returns.md"
    ]


def test_the_nearest_vectors_are_exact_and_ties_go_to_the_smaller_id() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.random((50, 8)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1)[:, None]
    matrix[7] = matrix[3]  # a tie
    ids = [f"{i:04d}" for i in range(50)]
    vectors = BotVectors(fingerprint=(1, "x"), ids=ids, matrix=np.asfortranarray(matrix))
    query = matrix[3].copy()
    found, distances = vectors.nearest(query, 5)
    truth = sorted(range(50), key=lambda i: (float(1 - matrix[i] @ query), ids[i]))[:5]
    assert found[:2] == ["0003", "0007"]
    assert found == [ids[i] for i in truth]
    assert distances == sorted(distances)
    assert vectors.nearest(np.zeros(8, dtype=np.float32), 3)[0] == ["0000", "0001", "0002"]
    assert vectors.nearest(query, 0) == ([], [])


def test_the_cache_keeps_the_most_recently_used_within_its_budget() -> None:
    def entry(rows: int) -> BotVectors:
        return BotVectors(fingerprint=(1, "x"), ids=["a"] * rows, matrix=np.zeros((rows, 10), dtype=np.float32))

    cache = VectorCache(max_bytes=entry(10).nbytes * 2)
    cache.put(("t", "a", "e", 10), entry(10))
    cache.put(("t", "b", "e", 10), entry(10))
    assert cache.get(("t", "a", "e", 10)) is not None  # a is now the most recent
    cache.put(("t", "c", "e", 10), entry(10))
    assert cache.get(("t", "b", "e", 10)) is None
    assert cache.get(("t", "a", "e", 10)) is not None
    cache.put(("t", "d", "e", 10), entry(100))  # larger than the whole budget: not kept
    assert cache.get(("t", "d", "e", 10)) is None
    assert VectorCache(max_bytes=0).get(("t", "a", "e", 10)) is None
