"""Hybrid knowledge search against real PostgreSQL: quality on the shipped question set, scoping, scores, HNSW."""

from __future__ import annotations

import csv
import random
import uuid
from pathlib import Path

import pytest

from botloom.core.embeddings import LocalEmbedder
from botloom.core.knowledge import KnowledgeBase, KnowledgeConfig, Passage
from botloom.core.knowledge import index as vector_index
from botloom.core.storage.database import Database
from botloom.core.storage.repositories import Store

DATA = Path(__file__).parent / "data" / "knowledge"
QUESTIONS = [
    (row["question"], row["document"])
    for row in csv.DictReader((DATA / "questions.csv").read_text(encoding="utf-8").splitlines())
]
OFF_TOPIC = [line.strip() for line in (DATA / "offtopic.txt").read_text().splitlines() if line.strip()]

# Measured with the LocalEmbedder on the shipped question set (see docs/knowledge.md):
# right document in the top 3 for 63 of 70 questions (0.900) with no threshold, and for
# 58 of 70 (0.829) with the default threshold, which answers 3 of the 10 off-topic questions.
MIN_TOP3 = 0.85
MIN_TOP3_WITH_THRESHOLD = 0.78
MAX_OFF_TOPIC_ANSWERED = 5


@pytest.fixture
async def shop(store: Store, db: Database) -> tuple[KnowledgeBase, str, str]:
    """The shipped knowledge base of the fictional shop, ingested for one bot."""
    tenant = await store.tenants.create("fernhill", "Fernhill Outfitters")
    bot = await store.bots.create(tenant.id, "help", "Help")
    kb = KnowledgeBase(db, LocalEmbedder())
    await kb.ingest_paths(tenant.id, bot.id, [DATA / "docs"])
    return kb, tenant.id, bot.id


def test_the_question_set_is_big_enough_and_points_at_real_documents() -> None:
    assert len(QUESTIONS) >= 40
    names = {p.name for p in (DATA / "docs").iterdir()}
    assert {doc for _, doc in QUESTIONS} <= names
    assert len({doc for _, doc in QUESTIONS}) == len(names)  # every document is asked about


async def top3_rate(kb: KnowledgeBase, tenant: str, bot: str, threshold: float | None) -> float:
    hits = 0
    for question, expected in QUESTIONS:
        passages = await kb.search(tenant, bot, question, limit=3, threshold=threshold)
        hits += expected in [p.document for p in passages]
    return hits / len(QUESTIONS)


async def test_retrieval_quality_on_the_question_set(shop: tuple[KnowledgeBase, str, str], db: Database) -> None:
    kb, tenant, bot = shop
    hybrid = await top3_rate(kb, tenant, bot, threshold=0)
    assert hybrid >= MIN_TOP3, f"right document in the top 3 for {hybrid:.3f} of the questions"
    vector_only = await top3_rate(
        KnowledgeBase(db, kb.embedder, KnowledgeConfig(vector_weight=1.0)), tenant, bot, threshold=0
    )
    text_only = await top3_rate(
        KnowledgeBase(db, kb.embedder, KnowledgeConfig(vector_weight=0.0)), tenant, bot, threshold=0
    )
    assert hybrid > vector_only
    assert hybrid > text_only
    with_threshold = await top3_rate(kb, tenant, bot, threshold=None)
    assert with_threshold >= MIN_TOP3_WITH_THRESHOLD
    answered = [q for q in OFF_TOPIC if await kb.search(tenant, bot, q, limit=3)]
    assert len(answered) <= MAX_OFF_TOPIC_ANSWERED, answered


async def test_passages_carry_their_document_title_position_and_a_unit_score(
    shop: tuple[KnowledgeBase, str, str],
) -> None:
    kb, tenant, bot = shop
    passages = await kb.search(tenant, bot, "how long do I have to return an item for a refund?", limit=5, threshold=0)
    assert len(passages) == 5
    best = passages[0]
    assert isinstance(best, Passage)
    assert best.document == "returns.md"
    assert best.title.startswith("Returns and refunds")
    assert any("60 days" in p.text for p in passages)
    assert best.position >= 0
    uuid.UUID(best.chunk_id)
    uuid.UUID(best.document_id)
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    assert len({p.chunk_id for p in passages}) == 5
    # The threshold leaves out weaker passages; the limit caps the count.
    middle = scores[2]
    assert [
        p.chunk_id
        for p in await kb.search(
            tenant, bot, "how long do I have to return an item for a refund?", limit=5, threshold=middle
        )
    ] == [p.chunk_id for p in passages[:3]]
    assert len(await kb.search(tenant, bot, "refund", limit=2, threshold=0)) == 2


async def test_reciprocal_rank_fusion_is_available(shop: tuple[KnowledgeBase, str, str], db: Database) -> None:
    kb, tenant, bot = shop
    rrf = KnowledgeBase(db, kb.embedder, KnowledgeConfig(fusion="rrf"))
    passages = await rrf.search(tenant, bot, "can I pay with Klarna?", threshold=0)
    assert passages[0].document == "payments.md"
    assert all(0 <= p.score <= 1 for p in passages)


async def test_queries_without_content_words(shop: tuple[KnowledgeBase, str, str]) -> None:
    kb, tenant, bot = shop
    assert await kb.search(tenant, bot, "   ") == []
    # Only stopwords: no full-text terms, the vector side still answers.
    assert isinstance(await kb.search(tenant, bot, "what is it?", threshold=0), list)
    assert await kb.search(tenant, bot, "refund", limit=3, threshold=0)
    assert await kb.search("not-a-uuid", bot, "refund") == []
    assert await kb.search(tenant, "not-a-uuid", "refund") == []


CLUB = """# Swimming club

## Fees

Adults pay 30 euros a month and children 18 euros. The first trial session is free.

## Leaving the club

Members who want to leave give two weeks' notice by e-mail to the club secretary;
the fees of the current month are not returned.

## Session times

Lane sessions run on Monday, Wednesday and Friday evenings from 7 pm to 9 pm, and on
Sunday mornings from 8 am to 10 am.

## Paying

Fees are paid by direct debit at the start of each month. A payment that fails costs
a fee of 5 euros.
"""
"""A small knowledge base of the engine's tests too (tests/test_offline_engine.py)."""


@pytest.mark.parametrize("memory_vectors", [256 * 1024 * 1024, 0], ids=["in memory", "in PostgreSQL"])
async def test_the_best_text_match_when_nothing_reaches_the_threshold(
    store: Store, db: Database, memory_vectors: int
) -> None:
    """#17 round 7: a caller that judges the words itself (the offline engine) gets the best full-text match.

    "please help, I need to know the notice" shares one rare word with the section on leaving, but its
    request words dilute both the vector and the full-text rank under the threshold: a plain search finds
    nothing, ``best_text_match`` finds that section (with its own, lower score). Nothing changes when a
    passage reaches the threshold, and a query sharing no word with the documents still finds nothing.
    """
    tenant = await store.tenants.create(f"club-{uuid.uuid4().hex[:8]}", "Club")
    bot = await store.bots.create(tenant.id, "desk", "Desk")
    kb = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(memory_vectors=memory_vectors))
    await kb.ingest(tenant.id, bot.id, "club.md", CLUB)
    diluted = "please help, I need to know the notice"
    assert await kb.search(tenant.id, bot.id, diluted, limit=3) == []
    found = await kb.search(tenant.id, bot.id, diluted, limit=3, best_text_match=True)
    assert [p.title for p in found] == ["Swimming club > Leaving the club"]
    assert 0 < found[0].score < kb.config.threshold
    clear = "how much notice do I have to give to leave the club"
    plain = await kb.search(tenant.id, bot.id, clear, limit=3)
    assert plain and plain[0].score >= kb.config.threshold
    assert await kb.search(tenant.id, bot.id, clear, limit=3, best_text_match=True) == plain
    assert await kb.search(tenant.id, bot.id, "xylophone zebra", limit=3, best_text_match=True) == []


# ------------------------------------------------------------------------------ scoping


async def test_search_is_scoped_by_tenant_and_bot(store: Store, db: Database) -> None:
    kb = KnowledgeBase(db, LocalEmbedder())
    bots: dict[str, tuple[str, str]] = {}
    for tenant_slug in ("north", "south"):
        tenant = await store.tenants.create(tenant_slug, tenant_slug.title())
        for bot_slug in ("sales", "support"):
            bot = await store.bots.create(tenant.id, bot_slug, bot_slug.title())
            key = f"{tenant_slug}/{bot_slug}"
            bots[key] = (tenant.id, bot.id)
            # The same document name and nearly the same text everywhere, with one marker.
            text = (
                "# Refund policy\n\nRefunds are paid to the original card within five days. "
                f"Ask for code {key.replace('/', '-')}-code at the desk."
            )
            await kb.ingest(tenant.id, bot.id, "refunds.md", text)
    for key, (tenant_id, bot_id) in bots.items():
        passages = await kb.search(tenant_id, bot_id, "when is my refund paid to my card?", limit=10, threshold=0)
        assert len(passages) == 1
        assert f"{key.replace('/', '-')}-code" in passages[0].text
        docs = await kb.list_documents(tenant_id, bot_id)
        assert len(docs) == 1 and docs[0].id == passages[0].document_id
    # A bot id under the wrong tenant finds nothing, lists nothing and deletes nothing.
    north_tenant, north_bot = bots["north/sales"]
    south_tenant, _ = bots["south/sales"]
    assert await kb.search(south_tenant, north_bot, "refund card", threshold=0) == []
    assert await kb.list_documents(south_tenant, north_bot) == []
    assert not await kb.delete(south_tenant, north_bot, "refunds.md")
    north_doc = (await kb.list_documents(north_tenant, north_bot))[0]
    assert not await kb.delete(south_tenant, north_bot, north_doc.id)
    assert not await kb.delete(*bots["north/support"], north_doc.id)  # another bot of the same tenant
    assert await kb.list_documents(north_tenant, north_bot) == [north_doc]
    # Deleting one bot's document leaves the others' alone.
    assert await kb.delete(north_tenant, north_bot, "refunds.md")
    for key, (tenant_id, bot_id) in bots.items():
        assert len(await kb.list_documents(tenant_id, bot_id)) == (0 if key == "north/sales" else 1)


async def test_a_deleted_bot_takes_its_knowledge_along(store: Store, db: Database) -> None:
    tenant = await store.tenants.create("gone", "Gone")
    bot = await store.bots.create(tenant.id, "bot", "Bot")
    kb = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(index_threshold=1))
    await kb.ingest(tenant.id, bot.id, "a.md", "# A\n\nSome text about tents.")
    assert await vector_index.index_state(db, vector_index.index_name(uuid.UUID(bot.id), kb.embedder.name, 384))
    assert await store.bots.delete(tenant.id, bot.id)
    async with db.connection() as conn:
        for table in ("knowledge_documents", "knowledge_chunks", "knowledge_embeddings", "knowledge_terms"):
            row = await (await conn.execute(f"SELECT count(*) AS n FROM {table}")).fetchone()
            assert row is not None and row["n"] == 0, table
    dropped = await vector_index.drop_stale_indexes(db)
    assert dropped == [vector_index.index_name(uuid.UUID(bot.id), kb.embedder.name, 384)]


# ------------------------------------------------------------------------------ HNSW


def filler_csv(rows: int) -> str:
    """Question/answer rows of random words, so the planner finds the index worth using."""
    rng = random.Random(4)
    words = ["".join(rng.choices("bcdfghklmnprstvz", k=3)) + rng.choice(["a", "o", "ur", "ix"]) for _ in range(3000)]
    lines = ["question,answer"]
    for _ in range(rows):
        lines.append(" ".join(rng.choices(words, k=6)) + "?," + " ".join(rng.choices(words, k=40)) + ".")
    return "\n".join(lines) + "\n"


async def test_the_hnsw_index_is_built_used_and_agrees_with_exact_search(store: Store, db: Database) -> None:
    tenant = await store.tenants.create("big", "Big")
    bot = await store.bots.create(tenant.id, "bot", "Bot")
    other = await store.bots.create(tenant.id, "other", "Other")
    kb = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(index_threshold=500))
    await kb.ingest(tenant.id, other.id, "faq.csv", (DATA / "docs" / "faq.csv").read_bytes())
    await kb.ingest_paths(tenant.id, bot.id, [DATA / "docs"])
    name = vector_index.index_name(uuid.UUID(bot.id), kb.embedder.name, 384)
    assert await vector_index.index_state(db, name) is None  # 108 chunks: exact search
    await kb.ingest(tenant.id, bot.id, "filler.csv", filler_csv(1500))
    assert await vector_index.index_state(db, name) is True
    other_name = vector_index.index_name(uuid.UUID(other.id), kb.embedder.name, 384)
    assert await vector_index.index_state(db, other_name) is None  # 12 chunks: exact search
    async with db.connection() as conn:
        await conn.execute("ANALYZE knowledge_chunks")
        plan = await (
            await conn.execute(
                "EXPLAIN SELECT id FROM knowledge_chunks c WHERE "
                + vector_index.scope(uuid.UUID(bot.id), kb.embedder.name, 384, "c").as_string(conn)
                + " ORDER BY c.embedding::vector(384) <=> %s::vector(384) LIMIT 40",
                (str(kb.embedder.embed_one("refund")),),
            )
        ).fetchall()
    assert any(name in row["QUERY PLAN"] for row in plan), plan
    exact = KnowledgeBase(db, kb.embedder, KnowledgeConfig(exact=True))
    same = total = 0
    for question, _ in QUESTIONS:
        found = [p.chunk_id for p in await kb.search(tenant.id, bot.id, question, limit=5, threshold=0)]
        truth = [p.chunk_id for p in await exact.search(tenant.id, bot.id, question, limit=5, threshold=0)]
        same += len(set(found) & set(truth))
        total += len(truth)
    assert same / total >= 0.95
    # ensure_index is idempotent and reports the index.
    assert await kb.ensure_index(tenant.id, bot.id)
