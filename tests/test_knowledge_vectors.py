"""Bots' vectors searched in this process's memory (#17): the same passages as PostgreSQL, never stale."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from botloom.core.embeddings import LocalEmbedder
from botloom.core.knowledge import KnowledgeBase, KnowledgeConfig
from botloom.core.knowledge.fusion import Candidate
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


TEXTS = {
    "club.md": (
        "# Club\n\n## Extras\nFree Wi-Fi everywhere. Wi-Fi, wifi and e-mail: the club's e-mail desk answers "
        "every e-mail. Towels, towels and more towels: towel rental costs 2 euros.\n\n"
        "## Classes\nYoga, pilates and spinning classes; a no-show counts after three no-shows a month.\n\n"
        "## Yoga\nYoga yoga yoga: yoga mats are free. It's O'Brien's favourite class.\n"
    ),
    "hours.md": "# Hours\n\n## Week\nOpen Monday to Friday 6 am to 10 pm, weekends 8 am to 8 pm.\n",
    "more.md": "# More\n\n" + "\n\n".join(f"## Part {i}\nTowels and yoga for group {i}, email us." for i in range(30)),
}
TEXT_QUESTIONS = [
    "is there wifi",
    "is there wi-fi",
    "what's the no-show policy",
    "noshow",
    "towels yoga",
    "yoga",
    "O'Brien's class",
    "email",
    "weekend hours",
    "zzz nothing matches",
]


async def test_the_text_half_in_memory_ranks_as_postgresql(store: Store, db: Database) -> None:
    """The in-memory full-text index: the same candidates, ranks and ts_rank scores as PostgreSQL's statement."""
    tenant = await store.tenants.create("lexical", "Lexical")
    bot = await store.bots.create(tenant.id, "bot", "Bot")
    for budget in (1000, 12):  # 12: the commonest lexemes leave the query (the bounded full-text cost)
        memory = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(max_text_matches=budget, candidates=8))
        in_database = KnowledgeBase(
            db, memory.embedder, KnowledgeConfig(memory_vectors=0, max_text_matches=budget, candidates=8)
        )
        if budget == 1000:
            for name, text in TEXTS.items():
                await memory.ingest(tenant.id, bot.id, name, text)
        for question in TEXT_QUESTIONS:
            mine, mine_rows = await memory.candidates_for(tenant.id, bot.id, question, limit=5)
            theirs, their_rows = await in_database.candidates_for(tenant.id, bot.id, question, limit=5)

            # The text half alike: the same score at each rank (PostgreSQL's scan may break a tie of equal scores at
            # the cut for other chunks; memory takes the smallest ids), and chunks both found score alike.
            assert text_half(mine) == text_half(theirs), question
            assert text_half(mine) or budget < 1000 or question.startswith("zzz"), question
            scores = {c.chunk_id: (round(c.text_score, 6), round(c.similarity, 5)) for c in theirs}
            both = [c for c in mine if c.chunk_id in scores]
            assert both, question
            for c in both:
                assert (round(c.text_score, 6), round(c.similarity, 5)) == scores[c.chunk_id], question
                row, other = mine_rows[c.chunk_id], their_rows[c.chunk_id]
                assert [row[k] for k in ("document", "title", "text", "position")] == [
                    other[k] for k in ("document", "title", "text", "position")
                ]
        entry = memory.searcher.vectors.get((tenant.id, bot.id, memory.embedder.name, memory.embedder.dimension))
        assert entry is not None
        assert entry.lexicon is not None
    found = await memory.search(tenant.id, bot.id, "is there wifi", threshold=0)
    assert "Wi-Fi" in found[0].text  # the joined word finds the hyphenated one


def text_half(found: list[Candidate]) -> list[float]:
    """The full-text candidates' ts_rank (to 6 places), best first."""
    return [round(c.text_score, 6) for c in sorted(found, key=lambda c: c.text_rank or 0) if c.text_rank is not None]


def test_a_lexeme_adds_to_the_rank_as_postgresql_counts_it() -> None:
    from botloom.core.knowledge.lexical import Lexicon, lexeme_share, parse_tsvector

    assert parse_tsvector("'fi':3B 'it''s':1A,7 'wi-fi':2,9C") == [
        ("fi", ("B",)),
        ("it's", ("A", "D")),
        ("wi-fi", ("D", "C")),
    ]
    assert round(lexeme_share(("B",)), 6) == round(1.0 / 1.64493406685, 6)
    # The largest weight counts whole, the others by 1/j^2 of their place: (1 + 0.1/4) / (pi^2/6).
    assert round(lexeme_share(("A", "D")), 6) == round(1.025 / 1.64493406685, 6)
    lexicon = Lexicon(["'wi-fi':1B 'free':2B", "'free':1B"])
    assert lexicon.query_terms(["wifi", "free"], budget=10) == ["wi-fi", "free"]
    assert lexicon.query_terms(["wifi", "free"], budget=1) == ["wi-fi"]  # free (2 chunks) over the budget
    scores, matched = lexicon.rank(["wi-fi", "free"])
    assert matched.tolist() == [True, True]
    assert scores[0] > scores[1] > 0


async def test_a_bot_too_large_for_memory_is_searched_in_postgresql_and_loaded_once(
    store: Store, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botloom.core.knowledge import vectors

    tenant = await store.tenants.create("lexical-large", "Large")
    bot = await store.bots.create(tenant.id, "bot", "Bot")
    small = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(memory_vectors=1000))  # too little for any bot
    in_database = KnowledgeBase(db, small.embedder, KnowledgeConfig(memory_vectors=0))
    for name, text in DOCS.items():
        await small.ingest(tenant.id, bot.id, name, text)
    loads = 0
    load = vectors.load

    async def counted(*args: Any) -> vectors.BotVectors:
        nonlocal loads
        loads += 1
        return await load(*args)

    monkeypatch.setattr(vectors, "load", counted)
    for question in QUESTIONS:
        mine = await small.search(tenant.id, bot.id, question, limit=5, threshold=0)
        theirs = await in_database.search(tenant.id, bot.id, question, limit=5, threshold=0)
        assert [(p.chunk_id, round(p.score, 5)) for p in mine] == [(p.chunk_id, round(p.score, 5)) for p in theirs]
    assert loads == 1
    assert (tenant.id, bot.id, small.embedder.name, small.embedder.dimension) in small.searcher.oversized
