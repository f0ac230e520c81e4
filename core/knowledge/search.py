"""Hybrid search: passages out. A vector search and a full-text search in one statement, fused in Python.

The statement takes the ``candidates`` nearest chunks by cosine distance (through
the bot's HNSW index, or exactly) and the ``candidates`` best full-text matches,
and scores their union with both signals; :mod:`botloom.core.knowledge.fusion`
turns the two into one score in [0, 1]. Only chunks of the search's embedder are
seen. One embedder call and one round trip per search.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from psycopg import sql

from botloom.core.embeddings import Embedder
from botloom.core.knowledge import index as vector_index
from botloom.core.knowledge import vectors as memory
from botloom.core.knowledge.config import KnowledgeConfig
from botloom.core.knowledge.fusion import Candidate, fuse
from botloom.core.knowledge.scope import parse_scope
from botloom.core.knowledge.types import Passage
from botloom.core.language import default_analyzer
from botloom.core.storage.database import Database

TEXT_SEARCH_CONFIG = "english"
"""The PostgreSQL text search configuration of ``knowledge_chunks.search`` (see the migration)."""
TEXT_RANK_WEIGHTS = "{0.1, 0.2, 1.0, 1.0}"
"""``ts_rank`` weights of labels D, C, B (chunk text) and A (heading path): title and text count alike."""
MAX_QUERY_CHARS = 2000


class HybridSearch:
    """Searches bots' knowledge bases."""

    def __init__(self, db: Database, embedder: Embedder, config: KnowledgeConfig) -> None:
        """Search ``db`` for chunks of ``embedder``, shaped by ``config`` (fusion, candidates, threshold...)."""
        self.db = db
        self.embedder = embedder
        self.config = config
        self.vectors = memory.VectorCache(config.memory_vectors)
        """Bots' chunks kept in this process (see :mod:`botloom.core.knowledge.vectors`)."""
        self.oversized: set[tuple[str, str, str, int]] = set()
        """Bots (tenant, bot, embedder, dimensions) whose chunks did not fit ``memory_vectors``: searched in
        PostgreSQL from then on in this process, instead of loading them again for every search."""

    async def search(
        self,
        tenant_id: str,
        bot_id: str,
        query: str,
        *,
        limit: int = 5,
        threshold: float | None = None,
        best_text_match: bool = False,
    ) -> list[Passage]:
        """The passages of a bot's knowledge base that best answer ``query``, best first.

        Hybrid: vector and full-text candidates fused into a score in [0, 1];
        passages scoring below ``threshold`` (default: the configuration's
        ``threshold``) are left out. ``best_text_match``: when no passage reaches
        the threshold, the chunk sharing the most with the query's words (the
        highest ``ts_rank``, then the highest fused score) is returned anyway,
        with its own lower score, for a caller that judges the words itself (the
        offline engine weighs how much of the message a passage covers): a short
        query whose one matching word is rare in the query's vector and rank
        (``I want to quit the gym, what's the notice period``) scores under the
        threshold however well that word matches.
        """
        config = self.config
        candidates, rows = await self.candidates_for(tenant_id, bot_id, query, limit=limit)
        minimum = config.threshold if threshold is None else threshold
        scored = fuse(candidates, config.fusion, weight=config.vector_weight, c=config.text_scale)
        passages: list[Passage] = []
        for fused, candidate in scored:
            if _score(fused) < minimum or len(passages) >= limit:
                break
            passages.append(_passage(rows[candidate.chunk_id], candidate, fused))
        if not passages and best_text_match:
            matches = [(fused, c) for fused, c in scored if c.text_score > 0]
            if matches:
                fused, candidate = max(matches, key=lambda pair: (pair[1].text_score, pair[0]))
                passages.append(_passage(rows[candidate.chunk_id], candidate, fused))
        return passages

    async def candidates_for(
        self, tenant_id: str, bot_id: str, query: str, *, limit: int = 5
    ) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
        """The unfused candidates of a hybrid search and their rows (for :meth:`search` and measurements)."""
        scope = parse_scope(tenant_id, bot_id)
        query = " ".join(query.split())[:MAX_QUERY_CHARS]
        if scope is None or not query or limit < 1:
            return [], {}
        tenant, bot = scope
        config = self.config
        query = expand_query(query)
        vector = await self.embedder.embed([query])
        array = np.asarray(vector[0], dtype=np.float32)
        n = max(config.candidates, 2 * limit)
        params = {"tenant": tenant, "vector": array, "query": query, "n": n, "budget": config.max_text_matches}
        in_memory = config.memory_vectors > 0 and not config.exact
        if in_memory and (str(tenant), str(bot), self.embedder.name, self.embedder.dimension) not in self.oversized:
            rows = await self._in_memory(tenant, bot, params)
        else:
            rows = await self._in_database(tenant, bot, params)
        candidates = [
            Candidate(
                chunk_id=str(r["id"]),
                vector_rank=r["vector_rank"],
                text_rank=r["text_rank"],
                similarity=float(r["similarity"]),
                text_score=float(r["text_score"]),
            )
            for r in rows
        ]
        return candidates, {str(r["id"]): r for r in rows}

    async def _in_database(self, tenant: uuid.UUID, bot: uuid.UUID, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Both halves of the search in one statement (the vector half through the bot's HNSW index or exact)."""
        config = self.config
        n = params["n"]
        statement = search_sql(bot, self.embedder.name, self.embedder.dimension, exact=config.exact)
        async with self.db.connection() as conn:
            # One round trip for both. The setting is per session: only this search scans HNSW indexes,
            # and it always sets the value it needs first.
            async with conn.pipeline():
                await conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(max(config.ef_search, n)),))
                cur = await conn.execute(statement, params)
            return list(await cur.fetchall())

    async def _in_memory(self, tenant: uuid.UUID, bot: uuid.UUID, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Both halves of the search with the bot's chunks in memory; PostgreSQL only parses the query.

        One light statement a search: the query's lexemes (PostgreSQL's own
        ``to_tsvector``) and the bot's document fingerprint. When the fingerprint
        differs from that of the chunks in memory, they are loaded again and the
        search is run once more. A bot whose chunks do not fit ``memory_vectors``
        is searched in PostgreSQL (and remembered in :attr:`oversized`).
        """
        name, dims = self.embedder.name, self.embedder.dimension
        key = (str(tenant), str(bot), name, dims)
        statement = LEXEMES_STATEMENT
        vector = np.asarray(params["vector"], dtype=np.float32)
        rows: list[dict[str, Any]] = []
        for _ in range(2):
            async with self.db.connection() as conn:
                entry = self.vectors.get(key)
                if entry is None or entry.lexicon is None:
                    entry = await memory.load(conn, tenant, bot, name, dims)
                    if entry.nbytes > self.vectors.max_bytes:
                        self.oversized.add(key)
                        break
                    self.vectors.put(key, entry)
                cur = await conn.execute(statement, {"tenant": tenant, "bot": bot, "query": params["query"]})
                row = await cur.fetchone()
            lexemes = list(row["lexemes"] or []) if row else []
            rows = rank_in_memory(entry, vector, lexemes, params["n"], params["budget"])
            if memory.fingerprint_of(row) == entry.fingerprint:
                return rows
            self.vectors.drop(key)  # a document changed since the chunks were loaded: load them again
        else:
            return rows
        return await self._in_database(tenant, bot, params)  # too large to keep in memory


def _passage(row: dict[str, Any], candidate: Candidate, fused: float) -> Passage:
    """The passage of a candidate's row, with its fused score clamped to [0, 1]."""
    return Passage(
        chunk_id=candidate.chunk_id,
        document_id=str(row["document_id"]),
        document=row["document"],
        title=row["title"],
        text=row["text"],
        position=row["position"],
        score=_score(fused),
    )


def _score(fused: float) -> float:
    """A fused score as a passage carries it: clamped to [0, 1], rounded to 6 places."""
    return round(min(1.0, max(0.0, fused)), 6)


LEXEMES = """WITH fp AS ({fingerprint})
SELECT fp.documents, fp.digest, tsvector_to_array(to_tsvector({config}, %(query)s)) AS lexemes FROM fp"""
"""The query's lexemes and the bot's document fingerprint: all a search with the bot in memory asks PostgreSQL."""

LEXEMES_STATEMENT = LEXEMES.format(fingerprint=memory.FINGERPRINT, config=f"'{TEXT_SEARCH_CONFIG}'")
""":data:`LEXEMES` as sent, composed once rather than at each search (#16)."""


def rank_in_memory(
    entry: memory.BotVectors, vector: np.ndarray, lexemes: list[str], n: int, budget: int
) -> list[dict[str, Any]]:
    """The rows :func:`search_sql` returns, computed from a bot's chunks in memory (same candidates and scores)."""
    lexicon = entry.lexicon
    assert lexicon is not None
    near, distances = entry.nearest(vector, n)
    scores, matched = lexicon.rank(lexicon.query_terms(lexemes, budget))
    found = np.flatnonzero(matched)
    best = found[np.lexsort((entry.order[found], -scores[found]))][:n]  # score descending, then id
    text_ranks = {int(i): rank for rank, i in enumerate(best, start=1)}
    index = entry.index()
    out: list[dict[str, Any]] = []
    for rank, (chunk, distance) in enumerate(zip(near, distances, strict=True), start=1):
        i = index[chunk]
        out.append(_row(entry, i, (rank, text_ranks.pop(i, None)), 1.0 - distance, float(scores[i])))
    if text_ranks:
        norm = float(np.linalg.norm(vector))
        query = vector / norm if norm > 0 else np.zeros_like(vector)
        for i, rank in text_ranks.items():
            similarity = float(np.dot(entry.matrix[i], query))
            out.append(_row(entry, i, (None, rank), similarity, float(scores[i])))
    return out


def _row(
    entry: memory.BotVectors, i: int, ranks: tuple[int | None, int | None], similarity: float, text: float
) -> dict[str, Any]:
    """Chunk ``i``'s row with its (vector, text) ranks and scores, as :func:`search_sql` returns it."""
    return {
        **entry.rows[i],
        "vector_rank": ranks[0],
        "text_rank": ranks[1],
        "similarity": similarity,
        "text_score": text,
    }


def expand_query(query: str) -> str:
    """``query`` followed by its spelling corrections and canonical synonyms (:mod:`botloom.core.language`).

    The original words stay, so a word the corrector does not know (a product's
    name) still matches; ``can I send back a jacket?`` also searches for
    ``return``, ``warrenty`` for ``warranty``.
    """
    return default_analyzer().expand(query)[:MAX_QUERY_CHARS]


VECTOR_SEARCH = """vec AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank FROM (
        SELECT c.id, c.embedding::vector({dims}) <=> %(vector)s::vector({dims}) AS distance
        FROM knowledge_chunks c
        WHERE {scope} AND c.tenant_id = %(tenant)s
        ORDER BY (c.embedding::vector({dims}) <=> %(vector)s::vector({dims})){exact}
        LIMIT %(n)s
    ) v
)"""


def search_sql(bot: uuid.UUID, embedder: str, dims: int, *, exact: bool = False) -> sql.Composed:
    """The hybrid search statement for one bot and embedder (literal values, so the bot's index applies).

    The full-text query ORs the query's lexemes, a lexeme the bot writes hyphenated replaced by its
    hyphenated form (``wifi`` → ``wi-fi``, through the ``knowledge_terms_compounds`` index) and a hyphenated
    one joined by the joined form when the bot writes it so (``e-mail`` → ``email``), leaving out the commonest
    (by the bot's document frequencies) until the rest match at most
    ``%(budget)s`` chunks. Lexemes absent from the knowledge base stay in the
    query: ``ts_rank`` averages over the query's terms, so they keep a partial
    match scoring lower than a full one. ``exact`` orders by an expression the HNSW index cannot serve, so
    the vector search is exact.
    """
    return sql.SQL(
        """
WITH asked AS (
    SELECT unnest(tsvector_to_array(to_tsvector({config}, %(query)s))) AS lexeme
),
words AS (
    SELECT coalesce(k.lexeme, a.lexeme) AS lexeme FROM asked a
    LEFT JOIN knowledge_terms k
        ON k.bot_id = {bot}::uuid AND strpos(k.lexeme, '-') > 0 AND replace(k.lexeme, '-', '') = a.lexeme
    UNION
    SELECT t.lexeme FROM asked a
    JOIN knowledge_terms t ON t.bot_id = {bot}::uuid AND t.lexeme = replace(a.lexeme, '-', '')
    WHERE strpos(a.lexeme, '-') > 0
),
terms AS (
    SELECT l.lexeme, sum(coalesce(t.df, 0)) OVER (ORDER BY coalesce(t.df, 0), l.lexeme) AS running
    FROM words AS l
    LEFT JOIN knowledge_terms t ON t.bot_id = {bot}::uuid AND t.lexeme = l.lexeme
),
tq AS (
    SELECT nullif(string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | '), '')::tsquery
        AS q
    FROM terms WHERE running <= %(budget)s
),
{vec},
txt AS (
    SELECT id, score, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
        SELECT c.id, ts_rank({weights}, c.search, tq.q) AS score
        FROM knowledge_chunks c, tq
        WHERE {scope} AND c.tenant_id = %(tenant)s AND c.search @@ tq.q
        ORDER BY score DESC
        LIMIT %(n)s
    ) t
)
SELECT c.id, c.document_id, d.name AS document, c.title, c.text, c.position,
       vec.rank AS vector_rank, txt.rank AS text_rank,
       1 - coalesce(vec.distance, c.embedding::vector({dims}) <=> %(vector)s::vector({dims})) AS similarity,
       coalesce(txt.score, ts_rank({weights}, c.search, tq.q), 0) AS text_score
FROM vec FULL JOIN txt ON txt.id = vec.id
JOIN knowledge_chunks c ON c.id = coalesce(vec.id, txt.id) AND c.tenant_id = %(tenant)s AND c.bot_id = {bot}::uuid
JOIN knowledge_documents d ON d.id = c.document_id AND d.tenant_id = c.tenant_id
CROSS JOIN tq
"""
    ).format(
        vec=sql.SQL(VECTOR_SEARCH).format(
            dims=sql.Literal(dims),
            exact=sql.SQL(" + 0" if exact else ""),
            scope=vector_index.scope(bot, embedder, dims, "c"),
        ),
        config=sql.Literal(TEXT_SEARCH_CONFIG),
        weights=sql.SQL("{}::float4[]").format(sql.Literal(TEXT_RANK_WEIGHTS)),
        dims=sql.Literal(dims),
        bot=sql.Literal(str(bot)),
        scope=vector_index.scope(bot, embedder, dims, "c"),
    )
