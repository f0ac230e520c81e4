"""Knowledge base benchmark: ingestion throughput, and hybrid search latency and recall.

Builds a synthetic knowledge base with topical structure (documents about
topics, each with its own vocabulary, over a Zipf-distributed background
vocabulary and English function words), ingests it through
``KnowledgeBase.ingest`` with the local embedder, then measures at each size:

* hybrid search (``KnowledgeBase.search``: vector + full text) through the
  bot's HNSW index, and the same search ordered by an expression the index
  cannot serve (exact, brute force over the same vectors); both with
  ``memory_vectors=0``, all in PostgreSQL;
* hybrid search with the bot's chunks in memory (the default configuration:
  vectors and full-text index in the process, PostgreSQL only parses the query);
* vector-only top-5 through the index and exactly;
* recall@5 of the indexed searches against their exact counterparts;
* latency p50/p99, and CPU milliseconds per query (the server process's, read
  from /proc, plus this process's): the CPU figure barely moves when other
  work shares the machine, the latencies do.

Usage::

    python bench/retrieval.py --rows 10000           # 10k chunks only
    python bench/retrieval.py                        # 10k and 100k chunks
    python bench/retrieval.py --database-url postgresql://...

Without ``--database-url`` a PostgreSQL server is started with
``tests/servers.start_postgres`` in a temporary directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/retrieval.py``, this file's directory comes first on sys.path and ``bench/http.py``
# would shadow the standard library's ``http`` (as in bench/quality.py): move that directory to the end.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from botloom.core.embeddings import LocalEmbedder  # noqa: E402
from botloom.core.knowledge import KnowledgeBase, KnowledgeConfig  # noqa: E402
from botloom.core.knowledge import index as vector_index  # noqa: E402
from botloom.core.storage.database import Database  # noqa: E402
from botloom.core.storage.migrations import apply_migrations  # noqa: E402

FUNCTION_WORDS = (
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "would",
    "so",
    "these",
    "her",
)
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["an", "el", "or", "ul", "ir", "ost", "ent"]
SECTIONS_PER_DOC = 50


# ------------------------------------------------------------------------------ synthetic corpus


class Corpus:
    """Topical synthetic text: each topic has its own vocabulary over a shared Zipfian background."""

    def __init__(self, seed: int, topics: int) -> None:
        self.rng = random.Random(seed)
        words: set[str] = set()
        while len(words) < 30_000:
            words.add("".join(self.rng.choices(SYLLABLES, k=self.rng.choice((2, 3, 3, 4)))))
        self.vocab = sorted(words)
        self.rng.shuffle(self.vocab)
        ranks = np.arange(1, len(self.vocab) + 1)
        self.zipf = (1.0 / ranks) / (1.0 / ranks).sum()
        self.topics = [self.rng.sample(self.vocab[300:], 40) for _ in range(topics)]
        self.np_rng = np.random.default_rng(seed)

    def _background(self, n: int) -> list[str]:
        return [self.vocab[i] for i in self.np_rng.choice(len(self.vocab), size=n, p=self.zipf)]

    def paragraph(self, topic: int, words: int = 90) -> str:
        """About ``words`` words on ``topic``, in sentences."""
        vocab = self.topics[topic]
        content = [vocab[min(int(self.rng.paretovariate(1.2)) - 1, 39)] for _ in range(int(words * 0.35))]
        content += self._background(int(words * 0.3))
        content += self.rng.choices(FUNCTION_WORDS, k=words - len(content))
        self.rng.shuffle(content)
        sentences = [content[i : i + 12] for i in range(0, len(content), 12)]
        return " ".join(" ".join(s).capitalize() + "." for s in sentences)

    def document(self, topic: int) -> str:
        """A Markdown document: a title and ``SECTIONS_PER_DOC`` sections, one chunk each."""
        title = " ".join(self.rng.sample(self.topics[topic][:10], 3)).title()
        parts = [f"# {title}"]
        for _ in range(SECTIONS_PER_DOC):
            heading = " ".join(self.rng.sample(self.topics[topic], 2)).capitalize()
            parts.append(f"## {heading}\n\n{self.paragraph(topic)}")
        return "\n\n".join(parts)

    def query(self, topic: int) -> str:
        """A question-like query on ``topic``."""
        vocab = self.topics[topic]
        words = [vocab[min(int(self.rng.paretovariate(1.2)) - 1, 39)] for _ in range(4)] + self._background(2)
        return "how do I " + " ".join(words) + " for the " + self.rng.choice(vocab) + "?"


# ------------------------------------------------------------------------------ measurement


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[list[str]]]) -> tuple[float, list[str]]:
    began = time.perf_counter()
    result = await fn()
    return (time.perf_counter() - began) * 1000, result


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid``, or None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def recall(found: list[list[str]], truth: list[list[str]], k: int = 5) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / sum(min(k, len(t)) for t in truth)


async def vector_top(db: Database, kb: KnowledgeBase, tenant: str, bot: str, query: str, exact: bool) -> list[str]:
    """Vector-only top 5 of the bot's chunks, through the index or exactly."""
    vector = np.asarray(kb.embedder.embed_one(query), dtype=np.float32)  # type: ignore[attr-defined]
    dims = kb.embedder.dimension
    scope = vector_index.scope(uuid.UUID(bot), kb.embedder.name, dims, "c")
    statement = psycopg.sql.SQL(
        "SELECT c.id FROM knowledge_chunks c WHERE {scope} AND c.tenant_id = %s "
        "ORDER BY (c.embedding::vector({dims}) <=> %s::vector({dims})){exact} LIMIT 5"
    ).format(scope=scope, dims=psycopg.sql.Literal(dims), exact=psycopg.sql.SQL(" + 0" if exact else ""))
    async with db.connection() as conn, conn.transaction():
        await conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(kb.config.ef_search),))
        cur = await conn.execute(statement, (tenant, vector))
        return [str(r["id"]) for r in await cur.fetchall()]


async def plan_uses_index(db: Database, kb: KnowledgeBase, bot: str, query: str) -> bool:
    vector = np.asarray(kb.embedder.embed_one(query), dtype=np.float32)  # type: ignore[attr-defined]
    dims = kb.embedder.dimension
    statement = psycopg.sql.SQL(
        "EXPLAIN SELECT c.id FROM knowledge_chunks c WHERE {scope} "
        "ORDER BY c.embedding::vector({dims}) <=> %s::vector({dims}) LIMIT 40"
    ).format(scope=vector_index.scope(uuid.UUID(bot), kb.embedder.name, dims, "c"), dims=psycopg.sql.Literal(dims))
    async with db.connection() as conn:
        rows = await (await conn.execute(statement, (vector,))).fetchall()
    return any("knowledge_hnsw_" in str(r["QUERY PLAN"]) for r in rows)


async def ingest(
    kb: KnowledgeBase, corpus: Corpus, tenant: str, bot: str, start: int, stop: int, state: dict[str, int]
) -> float:
    """Ingest documents until the bot has ``stop`` chunks; return chunks per second."""
    began = time.perf_counter()
    added = 0
    doc = start
    while state["chunks"] < stop:
        result = await kb.ingest(
            tenant, bot, f"topic-{doc % len(corpus.topics)}/doc-{doc}.md", corpus.document(doc % len(corpus.topics))
        )
        state["chunks"] += result.chunks
        added += result.chunks
        doc += 1
    state["docs"] = doc
    return added / (time.perf_counter() - began)


async def run(url: str, sizes: list[int], queries: int, ef_search: int | None, seed: int) -> list[list[str]]:
    db = await Database.open(url, migrate=False, max_size=4)
    # Searches go through one connection, so one server process does all their work and its
    # CPU time per query can be read from /proc (when the server runs on this machine).
    qdb = await Database.open(url, migrate=False, min_size=1, max_size=1)
    async with qdb.connection() as conn:
        row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
        backend = int(row["pid"]) if row else 0
    table: list[list[str]] = []
    try:
        async with db.connection() as conn:
            t = await (
                await conn.execute(
                    "INSERT INTO tenants (slug, name) VALUES (%s, 'Bench') RETURNING id",
                    (f"bench-{uuid.uuid4().hex[:8]}",),
                )
            ).fetchone()
            assert t is not None
            b = await (
                await conn.execute(
                    "INSERT INTO bots (tenant_id, slug, name) VALUES (%s, 'kb', 'KB') RETURNING id", (t["id"],)
                )
            ).fetchone()
            assert b is not None
        tenant, bot = str(t["id"]), str(b["id"])
        corpus = Corpus(seed, topics=max(sizes) // (2 * SECTIONS_PER_DOC))
        async with db.connection() as conn:
            row = await (await conn.execute("SHOW shared_buffers")).fetchone()
            print(f"server shared_buffers: {row['shared_buffers'] if row else '?'}", flush=True)
        options: dict[str, Any] = {"ef_search": ef_search} if ef_search else {}
        kb = KnowledgeBase(
            db, LocalEmbedder(), KnowledgeConfig(index_threshold=10**9, index_build_memory="1GB", **options)
        )
        search_kb = KnowledgeBase(qdb, kb.embedder, KnowledgeConfig(memory_vectors=0, **options))
        memory_kb = KnowledgeBase(qdb, kb.embedder, KnowledgeConfig(**options))  # the default: chunks in memory
        exact_kb = KnowledgeBase(qdb, kb.embedder, KnowledgeConfig(exact=True))
        config = kb.config
        print(
            f"ef_search {config.ef_search}, candidates {config.candidates}, full-text budget {config.max_text_matches}",
            flush=True,
        )
        state = {"chunks": 0, "docs": 0}
        qrng = random.Random(seed + 1)
        for size in sizes:
            await vector_index.drop_index(db, uuid.UUID(bot), kb.embedder.name, kb.embedder.dimension)
            before = state["chunks"]
            rate = await ingest(kb, corpus, tenant, bot, state["docs"], size, state)
            print(f"ingested {state['chunks'] - before:,} chunks at {rate:,.0f} chunks/s", flush=True)
            table.append(
                [f"{state['chunks']:,}", "ingest (parse, chunk, embed, store)", f"{rate:,.0f} chunks/s", "", "", "", ""]
            )
            began = time.perf_counter()
            await kb.ensure_index(tenant, bot)
            build = time.perf_counter() - began
            print(f"built the HNSW index in {build:.1f} s", flush=True)
            table.append(
                [
                    f"{state['chunks']:,}",
                    "HNSW index build (maintenance_work_mem 1GB)",
                    f"{build:.1f} s",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            async with db.connection() as conn:
                await conn.execute("VACUUM ANALYZE knowledge_chunks")
            topics = [qrng.randrange(len(corpus.topics)) for _ in range(queries)]
            texts = [corpus.query(topic % max(1, state["docs"])) for topic in topics]
            assert await plan_uses_index(db, kb, bot, texts[0]), "the planner does not use the HNSW index"
            runs: dict[str, tuple[list[float], list[list[str]], str]] = {}

            async def hybrid(q: str, k: KnowledgeBase = search_kb) -> list[str]:
                return [p.chunk_id for p in await k.search(tenant, bot, q, limit=5, threshold=0)]

            variants: dict[str, Callable[[str], Awaitable[list[str]]]] = {
                "hybrid, HNSW": hybrid,
                "hybrid, in memory": lambda q: hybrid(q, memory_kb),
                "hybrid, exact": lambda q: hybrid(q, exact_kb),
                "vector, HNSW": lambda q: vector_top(qdb, search_kb, tenant, bot, q, exact=False),
                "vector, exact": lambda q: vector_top(qdb, search_kb, tenant, bot, q, exact=True),
            }
            for name, fn in variants.items():
                for q in texts[:10]:
                    await fn(q)  # warm up
                latencies, results = [], []
                server_before, client_before = process_cpu(backend), time.process_time()
                for q in texts:
                    ms, ids = await timed(lambda fn=fn, q=q: fn(q))  # type: ignore[misc]
                    latencies.append(ms)
                    results.append(ids)
                server_after, client = process_cpu(backend), time.process_time() - client_before
                cpu = "n/a"
                if server_before is not None and server_after is not None:
                    cpu = f"{(server_after - server_before + client) * 1000 / len(texts):.2f}"
                runs[name] = (latencies, results, cpu)
                print(f"{name}: p50 {statistics.median(latencies):.2f} ms, CPU {cpu} ms/query", flush=True)
            for name, (latencies, results, cpu) in runs.items():
                exact_name = name.split(",")[0] + ", exact"
                rec = recall(results, runs[exact_name][1])
                table.append(
                    [
                        f"{state['chunks']:,}",
                        f"search: {name}",
                        "",
                        f"{statistics.median(latencies):.2f}",
                        f"{percentile(latencies, 99):.2f}",
                        cpu,
                        f"{rec:.3f}",
                    ]
                )
    finally:
        await qdb.close()
        await db.close()
    return table


def print_table(rows: list[list[str]]) -> None:
    header = ["chunks", "what", "throughput / time", "p50 ms", "p99 ms", "CPU ms/query", "recall@5 vs exact"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000", help="comma-separated knowledge base sizes, in chunks")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW ef_search (default: the knowledge base's)")
    parser.add_argument("--shared-buffers", default="1GB", help="shared_buffers of the server the bench starts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="an existing server (its database is used as is)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.rows.split(","))
    server: Any = None
    base: Path | None = None
    if args.database_url:
        url = args.database_url
    else:
        from tests import servers

        # The test server's 64MB of shared buffers hold neither the 100k-chunk heap nor its HNSW
        # index; a production server has far more. (start_postgres takes no settings argument.)
        servers._PG_SETTINGS = {**servers._PG_SETTINGS, "shared_buffers": args.shared_buffers}
        base = Path(tempfile.mkdtemp(prefix="botloom-bench-retrieval-"))
        server = servers.start_postgres(base)
        url = server.create_database("bench")
    try:
        apply_migrations(url)
        began = time.perf_counter()
        rows = asyncio.run(run(url, sizes, args.queries, args.ef_search, args.seed))
        print()
        print_table(rows)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"\n{args.queries} queries per size; total {time.perf_counter() - began:.0f} s; "
            f"load average at the end {load} on {os.cpu_count()} CPUs"
        )
    finally:
        if server is not None:
            server.stop()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
