"""Knowledge base ingestion against real PostgreSQL: formats, re-ingestion, bad input, embedding cache."""

from __future__ import annotations

import asyncio
import codecs
import itertools
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from botloom.core.embeddings import LocalEmbedder
from botloom.core.knowledge import IngestError, KnowledgeBase, KnowledgeConfig, UnknownBot
from botloom.core.knowledge import index as vector_index
from botloom.core.storage.database import Database
from botloom.core.storage.repositories import Store

DATA = Path(__file__).parent / "data" / "knowledge"
TABLES = ("knowledge_documents", "knowledge_chunks", "knowledge_embeddings", "knowledge_terms")


class CountingEmbedder:
    """The local embedder, counting what it is asked to embed (a test double of the embedder only)."""

    def __init__(self, dimension: int = 384) -> None:
        self.inner = LocalEmbedder(dimension)
        self.name = self.inner.name
        self.dimension = dimension
        self.texts: list[str] = []
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        return await self.inner.embed(texts)


@pytest.fixture
async def bot(store: Store) -> tuple[str, str]:
    tenant = await store.tenants.create("acme", "Acme")
    bot = await store.bots.create(tenant.id, "support", "Support")
    return tenant.id, bot.id


@pytest.fixture
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture
def kb(db: Database, embedder: CountingEmbedder) -> KnowledgeBase:
    return KnowledgeBase(db, embedder)


async def rows(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def chunks_of(db: Database, document_id: str) -> list[dict[str, Any]]:
    return await rows(
        db,
        "SELECT id, position, title, text, embedder, dims FROM knowledge_chunks WHERE document_id = %s "
        "ORDER BY position",
        document_id,
    )


async def counts(db: Database) -> dict[str, int]:
    out = {}
    for table in TABLES:
        (row,) = await rows(db, f"SELECT count(*) AS n FROM {table}")
        out[table] = row["n"]
    return out


async def term_df(db: Database, bot_id: str) -> dict[str, int]:
    found = await rows(db, "SELECT lexeme, df FROM knowledge_terms WHERE bot_id = %s AND df <> 0", bot_id)
    return {r["lexeme"]: r["df"] for r in found}


async def true_df(db: Database, bot_id: str) -> dict[str, int]:
    found = await rows(
        db,
        "SELECT lexeme, count(*) AS n FROM knowledge_chunks c, unnest(tsvector_to_array(c.search)) AS lexeme "
        "WHERE c.bot_id = %s GROUP BY lexeme",
        bot_id,
    )
    return {r["lexeme"]: r["n"] for r in found}


RETURNS_MD = """---
title: ignored because of the H1
---
# Returns policy

You can return any item within **60 days** of delivery. See [the form](https://example.com/form).

## Refunds

Refunds reach your card within 5 working days of our check.

- Original delivery charges are refunded for whole orders.
- Express upgrades are never refunded.

## Exchanges

Exchanges are free, once per order.

```
RETURN-CODE-123
```
"""


# ------------------------------------------------------------------------------ formats


async def test_markdown_is_split_along_headings_with_heading_paths(
    kb: KnowledgeBase, db: Database, bot: tuple[str, str]
) -> None:
    tenant, bot_id = bot
    result = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    assert result.status == "created"
    assert result.chunks == 3
    chunks = await chunks_of(db, result.document_id)
    assert [c["position"] for c in chunks] == [0, 1, 2]
    assert [c["title"] for c in chunks] == [
        "Returns policy",
        "Returns policy > Refunds",
        "Returns policy > Exchanges",
    ]
    assert chunks[0]["text"] == "You can return any item within 60 days of delivery. See the form."
    assert "- Express upgrades are never refunded." in chunks[1]["text"]
    assert "RETURN-CODE-123" in chunks[2]["text"]
    assert {c["embedder"] for c in chunks} == {"local-hash-v1-384"}
    assert {c["dims"] for c in chunks} == {384}
    (doc,) = await kb.list_documents(tenant, bot_id)
    assert (doc.name, doc.content_type, doc.chunks, doc.id) == ("returns.md", "text/markdown", 3, result.document_id)
    assert len(doc.content_hash) == 64


async def test_plain_text_headings_and_paragraphs(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    text = (
        "STORE HOURS\r\n\r\nWe are open every day from 9:00.\r\n\r\nBank holidays\r\n\r\n"
        "Closed on Christmas Day.\r\nOpen 10:00 to 16:00 on other bank holidays.\r\n"
    )
    result = await kb.ingest(tenant, bot_id, "hours.txt", text.encode())
    chunks = await chunks_of(db, result.document_id)
    assert [(c["title"], c["text"]) for c in chunks] == [
        ("STORE HOURS", "We are open every day from 9:00."),
        ("STORE HOURS > Bank holidays", "Closed on Christmas Day.\nOpen 10:00 to 16:00 on other bank holidays."),
    ]


async def test_html_text_without_scripts_styles_or_navigation(
    kb: KnowledgeBase, db: Database, bot: tuple[str, str]
) -> None:
    tenant, bot_id = bot
    result = await kb.ingest(tenant, bot_id, "accounts.html", (DATA / "docs" / "accounts.html").read_bytes())
    chunks = await chunks_of(db, result.document_id)
    everything = " ".join(c["title"] + " " + c["text"] for c in chunks)
    assert "dataLayer" not in everything  # script
    assert "max-width" not in everything  # style
    assert "Breadcrumbs" not in everything and "› Account" not in everything  # nav
    assert chunks[0]["title"] == "Your Fernhill account"
    titles = [c["title"] for c in chunks]
    assert "Your Fernhill account > Forgotten password" in titles
    password = next(c for c in chunks if c["title"].endswith("Forgotten password"))
    assert "expires after one hour" in password["text"]
    details = next(c for c in chunks if c["title"].endswith("Changing your details"))
    assert details["text"].startswith("- Change your email address")


async def test_csv_gives_one_chunk_per_question(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    result = await kb.ingest(tenant, bot_id, "faq.csv", (DATA / "docs" / "faq.csv").read_bytes())
    assert result.chunks == 12
    chunks = await chunks_of(db, result.document_id)
    assert chunks[0]["title"] == "Faq > Orders > Do you offer gift wrapping?"
    assert chunks[0]["text"].startswith("Yes. Add gift wrapping in the basket for £3.50 per item.")
    semicolons = "Question;Answer\nCan I pay later?;Yes, with Klarna.\n"
    result = await kb.ingest(tenant, bot_id, "pay.csv", semicolons, content_type="text/csv; charset=utf-8")
    (chunk,) = await chunks_of(db, result.document_id)
    assert (chunk["title"], chunk["text"]) == ("Pay > Can I pay later?", "Yes, with Klarna.")


async def test_utf16_and_bom(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    text = "# Café\n\nCrème brûlée is on the menu."
    result = await kb.ingest(tenant, bot_id, "menu.md", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (chunk,) = await chunks_of(db, result.document_id)
    assert (chunk["title"], chunk["text"]) == ("Café", "Crème brûlée is on the menu.")
    again = await kb.ingest(tenant, bot_id, "menu.md", codecs.BOM_UTF8 + text.encode())
    assert again.status == "unchanged"  # the same text, however it was encoded


async def test_long_sections_are_split_with_overlap(db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    kb = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(max_chars=200, overlap=60))
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(30)]
    result = await kb.ingest(tenant, bot_id, "long.md", "# Long\n\n" + " ".join(sentences))
    chunks = await chunks_of(db, result.document_id)
    assert len(chunks) > 5
    assert all(len(c["text"]) <= 200 for c in chunks)
    assert all(c["title"] == "Long" for c in chunks)
    for before, after in itertools.pairwise(chunks):
        last = before["text"].rsplit(". ", 1)[-1]
        assert after["text"].startswith(last)  # the last sentence is repeated
    joined = " ".join(c["text"] for c in chunks)
    assert all(s in joined for s in sentences)


# ------------------------------------------------------------------------------ re-ingestion


async def test_reingesting_an_unchanged_document_does_nothing(
    kb: KnowledgeBase, db: Database, embedder: CountingEmbedder, bot: tuple[str, str]
) -> None:
    tenant, bot_id = bot
    first = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    before = await chunks_of(db, first.document_id)
    (doc_before,) = await kb.list_documents(tenant, bot_id)
    calls = embedder.calls
    second = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD.encode())
    assert (second.status, second.document_id, second.chunks) == ("unchanged", first.document_id, 3)
    assert embedder.calls == calls
    assert await chunks_of(db, first.document_id) == before  # the same rows, ids included
    (doc_after,) = await kb.list_documents(tenant, bot_id)
    assert doc_after.updated_at == doc_before.updated_at


async def test_a_changed_document_replaces_its_chunks(
    kb: KnowledgeBase, db: Database, embedder: CountingEmbedder, bot: tuple[str, str]
) -> None:
    tenant, bot_id = bot
    first = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    old = await chunks_of(db, first.document_id)
    embedder.texts.clear()
    changed = RETURNS_MD.replace("once per order", "twice per order") + "\n## Gift returns\n\nUse the gift receipt.\n"
    second = await kb.ingest(tenant, bot_id, "returns.md", changed)
    assert (second.status, second.document_id, second.chunks) == ("updated", first.document_id, 4)
    new = await chunks_of(db, first.document_id)
    assert [c["position"] for c in new] == [0, 1, 2, 3]
    assert not {c["id"] for c in old} & {c["id"] for c in new}
    texts = [c["text"] for c in new]
    assert not any("once per order" in t for t in texts)
    assert any("twice per order" in t for t in texts)
    assert new[3]["title"] == "Returns policy > Gift returns"
    (total,) = await rows(db, "SELECT count(*) AS n FROM knowledge_chunks WHERE bot_id = %s", bot_id)
    assert total["n"] == 4
    # The embedding cache: the two unchanged chunks were not embedded again.
    assert len(embedder.texts) == 2
    assert all("Exchanges" in t or "Gift returns" in t for t in embedder.texts)
    assert await term_df(db, bot_id) == await true_df(db, bot_id)


async def test_a_deleted_document_leaves_no_chunk(
    kb: KnowledgeBase, db: Database, embedder: CountingEmbedder, bot: tuple[str, str]
) -> None:
    tenant, bot_id = bot
    first = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    other = await kb.ingest(tenant, bot_id, "hours.txt", "Hours\n\nOpen from nine.")
    assert await kb.delete(tenant, bot_id, "returns.md")
    assert await chunks_of(db, first.document_id) == []
    assert [d.name for d in await kb.list_documents(tenant, bot_id)] == ["hours.txt"]
    assert not await kb.delete(tenant, bot_id, "returns.md")
    assert await kb.delete(tenant, bot_id, other.document_id)  # by id
    assert (await counts(db))["knowledge_chunks"] == 0
    assert await term_df(db, bot_id) == {}
    # The embedding cache outlives the document: adding it back costs no embedding.
    calls = embedder.calls
    again = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    assert again.status == "created"
    assert embedder.calls == calls


async def test_replacement_is_atomic(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    """A failure while the new chunks are written leaves the old version whole."""
    tenant, bot_id = bot
    first = await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    old = await chunks_of(db, first.document_id)
    (doc_before,) = await kb.list_documents(tenant, bot_id)
    df_before = await term_df(db, bot_id)
    async with db.connection() as conn:
        await conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'poisoned chunk'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER poison AFTER INSERT ON knowledge_chunks FOR EACH ROW "
            "WHEN (NEW.text LIKE '%POISON%') EXECUTE FUNCTION poison()"
        )
    changed = RETURNS_MD.replace("Refunds reach", "Money reaches") + "\n## Last\n\nPOISON\n"
    with pytest.raises(Exception, match="poisoned chunk"):
        await kb.ingest(tenant, bot_id, "returns.md", changed)
    assert await chunks_of(db, first.document_id) == old
    assert await kb.list_documents(tenant, bot_id) == [doc_before]
    assert await term_df(db, bot_id) == df_before


async def test_ingest_paths_recurses_and_names_by_relative_path(
    kb: KnowledgeBase, embedder: CountingEmbedder, bot: tuple[str, str], tmp_path: Path
) -> None:
    tenant, bot_id = bot
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "returns.md").write_text(RETURNS_MD)
    (tmp_path / "hours.txt").write_text("Hours\n\nOpen from nine.")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / ".hidden.md").write_text("# Secret\n\nnot for the bot")
    single = tmp_path / "faq.csv"
    single.write_text("question,answer\nDo you ship?,Yes.\n")
    messages: list[str] = []
    results = await kb.ingest_paths(tenant, bot_id, [tmp_path / "policies", tmp_path, single], progress=messages.append)
    assert sorted((r.name, r.status) for r in results) == [
        ("faq.csv", "created"),
        ("hours.txt", "created"),
        ("policies/returns.md", "created"),
        ("returns.md", "created"),
    ]
    assert any("skipping logo.png" in m for m in messages)
    assert any("embedded" in m for m in messages)
    calls = embedder.calls
    again = await kb.ingest_paths(tenant, bot_id, [tmp_path / "policies", tmp_path, single])
    assert {r.status for r in again} == {"unchanged"}
    assert embedder.calls == calls


async def test_the_shipped_knowledge_base_ingests(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    results = await kb.ingest_paths(tenant, bot_id, [DATA / "docs"])
    assert len(results) == len(list((DATA / "docs").iterdir())) >= 15
    assert {r.status for r in results} == {"created"}
    docs = await kb.list_documents(tenant, bot_id)
    assert {d.content_type for d in docs} == {"text/markdown", "text/plain", "text/html", "text/csv"}
    assert sum(d.chunks for d in docs) == (await counts(db))["knowledge_chunks"]
    assert await term_df(db, bot_id) == await true_df(db, bot_id)


async def test_progress_is_reported(kb: KnowledgeBase, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    messages: list[str] = []
    await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD, progress=messages.append)
    assert messages[0] == "returns.md: 3 chunks, 3 to embed, 0 cached"
    assert "returns.md: embedded 3/3" in messages
    assert messages[-1] == "returns.md: created, 3 chunks"
    messages.clear()
    await kb.ingest(tenant, bot_id, "returns.md", RETURNS_MD, progress=messages.append)
    assert messages == ["returns.md: unchanged"]


async def test_unknown_bot_is_refused(kb: KnowledgeBase, store: Store, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    other = await store.tenants.create("other", "Other")
    with pytest.raises(UnknownBot):
        await kb.ingest(other.id, bot_id, "returns.md", RETURNS_MD)  # the bot is not the other tenant's
    with pytest.raises(UnknownBot):
        await kb.ingest(tenant, "not-a-uuid", "returns.md", RETURNS_MD)


# ------------------------------------------------------------------------------ bad input


BAD_INPUTS = [
    ("manual.pdf", b"%PDF-1.7 ...", r"^manual\.pdf: unsupported file type '\.pdf'"),
    ("slides.docx", b"PK\x03\x04", r"^slides\.docx: unsupported file type"),
    ("empty.md", b"", r"^empty\.md: file is empty$"),
    ("blank.txt", b" \n\n\t \n", r"^blank\.txt: file is empty$"),
    ("image.txt", b"GIF89a\x01\x00\x01\x00\x00\x00\x00", r"^image\.txt: binary file \(contains NUL bytes\)"),
    ("latin1.md", "# Café crème".encode("latin-1"), r"^latin1\.md: not UTF-8 text \(undecodable byte at offset 5\)"),
    ("scripts.html", b"<html><script>alert(1)</script><p>  </p></html>", r"^scripts\.html: no text found"),
    ("header.csv", b"question,answer\n", r"^header\.csv: no question/answer rows"),
    ("columns.csv", b"name,price\nTent,100\n", r"^columns\.csv: line 1: .*'question' and 'answer' columns"),
    ("fields.csv", b"question,answer\nA?,Yes.\nB?,No.,extra\n", r"^fields\.csv: line 3: expected 2 fields.*found 3"),
    ("quote.csv", b'question,answer\nA?,Yes.\n"B?,"No.\n', r"^quote\.csv: line 3: malformed CSV"),
    (
        "blank-answer.csv",
        b'question,answer\nA?,Yes.\n\n"Multi\nline?",Yes.\nC?,\n',
        r"^blank-answer\.csv: line 6: the answer is empty",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
async def test_bad_input_is_refused_and_leaves_nothing(
    kb: KnowledgeBase,
    db: Database,
    embedder: CountingEmbedder,
    bot: tuple[str, str],
    name: str,
    content: bytes,
    message: str,
) -> None:
    tenant, bot_id = bot
    with pytest.raises(IngestError, match=message):
        await kb.ingest(tenant, bot_id, name, content)
    assert await counts(db) == dict.fromkeys(TABLES, 0)
    assert embedder.calls == 0


async def test_size_limit(db: Database, bot: tuple[str, str], tmp_path: Path) -> None:
    tenant, bot_id = bot
    default = KnowledgeBase(db, LocalEmbedder())
    huge = b"a" * (5 * 1024 * 1024 + 1)
    with pytest.raises(IngestError, match=r"^huge\.txt: file is too large \(5,242,881 bytes; the limit is 5,242,880"):
        await default.ingest(tenant, bot_id, "huge.txt", huge)
    small = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(max_bytes=100))
    with pytest.raises(IngestError, match=r"^notes\.md: file is too large \(101 bytes; the limit is 100 bytes\)"):
        await small.ingest(tenant, bot_id, "notes.md", "x" * 101)
    (tmp_path / "big.md").write_text("# Big\n\n" + "word " * 100)
    with pytest.raises(IngestError, match=r"^big\.md: file is too large"):
        await small.ingest_paths(tenant, bot_id, [tmp_path])
    assert await counts(db) == dict.fromkeys(TABLES, 0)


def test_the_configuration_is_checked_when_made_and_frozen(db: Database) -> None:
    for bad in (
        {"fusion": "max"},
        {"vector_weight": 1.5},
        {"batch_size": 0},
        {"max_chars": 0},
        {"candidates": 0},
        {"overlap": -1},
        {"index_threshold": -1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            KnowledgeConfig(**bad)  # type: ignore[arg-type]
    config = KnowledgeConfig(max_chars=600)
    with pytest.raises(AttributeError):
        config.max_chars = 700  # type: ignore[misc]
    assert config.pipeline == "v1 chars=600 overlap=120"
    kb = KnowledgeBase(db, LocalEmbedder(), config)
    assert kb.ingestion.config is kb.searcher.config is kb.documents.config is config
    # Changing the limit (as the API test does) reconfigures every part.
    kb.max_bytes = 100
    assert kb.config.max_bytes == kb.ingestion.config.max_bytes == 100
    assert kb.config.max_chars == 600


async def test_a_bad_file_stops_ingest_paths_before_anything_is_stored(
    kb: KnowledgeBase, db: Database, bot: tuple[str, str], tmp_path: Path
) -> None:
    tenant, bot_id = bot
    (tmp_path / "a-good.md").write_text(RETURNS_MD)
    (tmp_path / "b-bad.csv").write_text("question,answer\nA?,Yes.\nB?\n")
    (tmp_path / "c-good.txt").write_text("Hours\n\nOpen from nine.")
    with pytest.raises(IngestError, match=r"^b-bad\.csv: line 3: expected 2 fields"):
        await kb.ingest_paths(tenant, bot_id, [tmp_path])
    assert await counts(db) == dict.fromkeys(TABLES, 0)
    with pytest.raises(IngestError, match="no such file or directory"):
        await kb.ingest_paths(tenant, bot_id, [tmp_path / "missing"])


async def test_a_bad_new_version_keeps_the_old_one(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    first = await kb.ingest(tenant, bot_id, "faq.csv", "question,answer\nA?,Yes.\n")
    old = await chunks_of(db, first.document_id)
    with pytest.raises(IngestError, match=r"^faq\.csv: line 3: the question is empty"):
        await kb.ingest(tenant, bot_id, "faq.csv", "question,answer\nA?,Yes.\n,No.\n")
    assert await chunks_of(db, first.document_id) == old


# ------------------------------------------------------------------------------ embedders


async def test_switching_embedder_reembeds(db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    old = KnowledgeBase(db, CountingEmbedder(384))
    await old.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    await old.ingest(tenant, bot_id, "hours.txt", "Hours\n\nOpen from nine.")
    new_embedder = CountingEmbedder(256)
    new_embedder.name = "other-model-256"
    new = KnowledgeBase(db, new_embedder, KnowledgeConfig(index_threshold=1))
    # Chunks of another embedder are never compared with the new one's vectors.
    assert await new.search(tenant, bot_id, "refund to my card", threshold=0) == []
    assert (await old.search(tenant, bot_id, "refund to my card", threshold=0))[0].document == "returns.md"
    # Re-ingesting one document re-embeds it, although its text is unchanged.
    new_embedder.texts.clear()
    result = await new.ingest(tenant, bot_id, "returns.md", RETURNS_MD)
    assert result.status == "updated"
    assert len(new_embedder.texts) == 3
    assert {p.document for p in await new.search(tenant, bot_id, "refund to my card", threshold=0)} == {"returns.md"}
    # reembed() switches the rest over, from the stored chunks.
    assert await new.reembed(tenant, bot_id) == 1
    assert await new.reembed(tenant, bot_id) == 0
    found = await rows(db, "SELECT DISTINCT embedder, dims FROM knowledge_chunks")
    assert found == [{"embedder": "other-model-256", "dims": 256}]
    passages = await new.search(tenant, bot_id, "when do you open", threshold=0)
    assert passages[0].document == "hours.txt"
    # The new dimension got its own HNSW index (index_threshold=1); the old one has none.
    name = vector_index.index_name(uuid.UUID(bot_id), "other-model-256", 256)
    assert await vector_index.index_state(db, name) is True
    old_name = vector_index.index_name(uuid.UUID(bot_id), "local-hash-v1-384", 384)
    assert await vector_index.index_state(db, old_name) is None


async def test_document_names_are_checked(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    for name in ["", "   ", "x" * 1001 + ".md", "bad\x00name.md"]:
        with pytest.raises(IngestError, match="a document name needs 1 to 1000 printable characters"):
            await kb.ingest(tenant, bot_id, name, RETURNS_MD)
    assert await counts(db) == dict.fromkeys(TABLES, 0)


async def test_concurrent_ingestion(kb: KnowledgeBase, db: Database, bot: tuple[str, str]) -> None:
    tenant, bot_id = bot
    docs = [(DATA / "docs" / name).read_bytes() for name in ("returns.md", "shipping.md", "faq.csv", "rentals.md")]
    names = ["returns.md", "shipping.md", "faq.csv", "rentals.md"]
    await asyncio.gather(*(kb.ingest(tenant, bot_id, n, d) for n, d in zip(names, docs, strict=True)))
    # Two versions of one document at once: one wins whole, the other replaces it whole.
    versions = [RETURNS_MD, RETURNS_MD.replace("60 days", "90 days")]
    results = await asyncio.gather(*(kb.ingest(tenant, bot_id, "policy.md", v) for v in versions))
    assert sorted(r.status for r in results) == ["created", "updated"]
    (doc,) = [d for d in await kb.list_documents(tenant, bot_id) if d.name == "policy.md"]
    chunks = await chunks_of(db, doc.id)
    assert [c["position"] for c in chunks] == [0, 1, 2]
    assert len({"90 days" in c["text"] for c in chunks if "days of delivery" in c["text"]}) == 1
    assert await term_df(db, bot_id) == await true_df(db, bot_id)
