"""What tenants teach their bots: synonyms, extra intent examples, and the questions their bots could not answer.

The offline engine calls :meth:`TeachingRepository.load` on every turn: one small
query for the bot's revision, and the whole teaching only when it changed (cached
per process), so what a tenant teaches is used from the next turn on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from botloom.core.language import Teaching, default_analyzer, term_map
from botloom.core.storage.repositories.base import Repository, as_uuid

MAX_SYNONYMS = 500
"""Synonyms one bot may have."""
MAX_EXAMPLES = 200
"""Taught examples one intent of one bot may have."""
FALLBACK_ROWS = 5000
"""The newest fallbacks of a period that are grouped (older ones of the period are left out)."""
SIMILAR = 0.6
"""Two questions are one group when the terms they share weigh this much of the smaller one's terms."""


class IntentExample(msgspec.Struct, frozen=True, kw_only=True):
    """An example message a tenant taught one intent of a bot."""

    id: str
    intent: str
    text: str
    created_at: datetime


class FallbackGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Similar questions a bot could not answer: how often, when last, and how people put them."""

    question: str
    """The latest wording."""
    count: int
    last_seen: datetime
    variants: list[str]
    """Up to five distinct wordings, latest first."""


class TeachingRepository(Repository):
    """Per-bot synonyms and intent examples, and the bot's fallbacks."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self._cache: dict[str, Teaching] = {}

    async def load(self, tenant_id: str, bot_id: str) -> Teaching:
        """What the bot was taught (empty when nothing): one query when unchanged since the last call."""
        tenant, bot = as_uuid(tenant_id), as_uuid(bot_id)
        if tenant is None or bot is None:
            return Teaching()
        row = await self._one("SELECT revision FROM bot_teaching WHERE bot_id = %s AND tenant_id = %s", (bot, tenant))
        if row is None:
            self._cache.pop(str(bot), None)
            return Teaching()
        cached = self._cache.get(str(bot))
        if cached is not None and cached.revision == row["revision"]:
            return cached
        full = await self._one(
            "SELECT t.revision, t.synonyms, coalesce((SELECT jsonb_object_agg(intent, texts) FROM ("
            "  SELECT intent, jsonb_agg(text ORDER BY created_at, id) AS texts FROM intent_examples"
            "  WHERE bot_id = t.bot_id AND tenant_id = t.tenant_id GROUP BY intent) e), '{}') AS examples "
            "FROM bot_teaching t WHERE t.bot_id = %s AND t.tenant_id = %s",
            (bot, tenant),
        )
        if full is None:
            return Teaching()
        teaching = Teaching(
            revision=int(full["revision"]),
            synonyms=dict(full["synonyms"]),
            examples={k: tuple(v) for k, v in dict(full["examples"]).items()},
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[str(bot)] = teaching
        return teaching

    async def _bump(self, conn: Any, tenant: Any, bot: Any, synonyms: str | None = None) -> bool:
        """Create or bump the bot's teaching row (setting ``synonyms`` when given); False if no such bot."""
        cur = await conn.execute(
            "INSERT INTO bot_teaching (bot_id, tenant_id, synonyms) "
            "SELECT b.id, b.tenant_id, coalesce(%(synonyms)s::jsonb, '{}') FROM bots b "
            "WHERE b.id = %(bot)s AND b.tenant_id = %(tenant)s "
            "ON CONFLICT (bot_id) DO UPDATE SET revision = bot_teaching.revision + 1, updated_at = now(), "
            "synonyms = coalesce(%(synonyms)s::jsonb, bot_teaching.synonyms) "
            "WHERE bot_teaching.tenant_id = EXCLUDED.tenant_id RETURNING bot_id",
            {"bot": bot, "tenant": tenant, "synonyms": synonyms},
        )
        return await cur.fetchone() is not None

    async def synonyms(self, tenant_id: str, bot_id: str) -> dict[str, str]:
        """The bot's synonyms: phrase → canonical words."""
        row = await self._one(
            "SELECT synonyms FROM bot_teaching WHERE bot_id = %s AND tenant_id = %s",
            (as_uuid(bot_id), as_uuid(tenant_id)),
        )
        return dict(row["synonyms"]) if row else {}

    async def put_synonyms(self, tenant_id: str, bot_id: str, synonyms: Mapping[str, str]) -> bool:
        """Replace the bot's synonyms; False when there is no such bot of the tenant."""
        tenant, bot = as_uuid(tenant_id), as_uuid(bot_id)
        if tenant is None or bot is None:
            return False
        async with self.db.connection() as conn, conn.transaction():
            return await self._bump(conn, tenant, bot, json.dumps(dict(synonyms)))

    async def examples(self, tenant_id: str, bot_id: str, intent: str) -> list[IntentExample]:
        """The examples taught to one intent of the bot, oldest first."""
        rows = await self._all(
            "SELECT id, intent, text, created_at FROM intent_examples "
            "WHERE bot_id = %s AND tenant_id = %s AND intent = %s ORDER BY created_at, id",
            (as_uuid(bot_id), as_uuid(tenant_id), intent),
        )
        return [
            IntentExample(id=str(r["id"]), intent=r["intent"], text=r["text"], created_at=r["created_at"]) for r in rows
        ]

    async def add_example(self, tenant_id: str, bot_id: str, intent: str, text: str) -> IntentExample | None:
        """Teach ``intent`` the example ``text`` (the same text again returns the existing one).

        ``None`` when there is no such bot of the tenant; raises :class:`TooMany` past
        :data:`MAX_EXAMPLES` examples for the intent.
        """
        tenant, bot = as_uuid(tenant_id), as_uuid(bot_id)
        if tenant is None or bot is None:
            return None
        async with self.db.connection() as conn, conn.transaction():
            if not await self._bump(conn, tenant, bot):
                return None
            # The teaching row is locked by the bump: counting and inserting cannot race another writer.
            count = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM intent_examples WHERE bot_id = %s AND intent = %s", (bot, intent)
                )
            ).fetchone()
            cur = await conn.execute(
                "INSERT INTO intent_examples (tenant_id, bot_id, intent, text) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (bot_id, intent, text) DO UPDATE SET text = EXCLUDED.text "
                "RETURNING id, intent, text, created_at, (xmax = 0) AS created",
                (tenant, bot, intent, text),
            )
            row = await cur.fetchone()
            assert row is not None
            if row["created"] and count is not None and count["n"] >= MAX_EXAMPLES:
                raise TooMany(f"an intent may have at most {MAX_EXAMPLES} taught examples")
        return IntentExample(id=str(row["id"]), intent=row["intent"], text=row["text"], created_at=row["created_at"])

    async def delete_example(self, tenant_id: str, bot_id: str, intent: str, example_id: str) -> bool:
        """Forget one taught example; False when there is none."""
        tenant, bot, example = as_uuid(tenant_id), as_uuid(bot_id), as_uuid(example_id)
        if tenant is None or bot is None or example is None:
            return False
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM intent_examples WHERE id = %s AND bot_id = %s AND tenant_id = %s AND intent = %s "
                "RETURNING id",
                (example, bot, tenant, intent),
            )
            if await cur.fetchone() is None:
                return False
            await self._bump(conn, tenant, bot)
        return True

    async def fallbacks(
        self, tenant_id: str, bot_id: str, since: datetime | None, until: datetime | None, limit: int = 50
    ) -> list[FallbackGroup]:
        """The questions the bot could not answer in ``[since, until)``, similar ones grouped, commonest first."""
        rows = await self._all(
            "SELECT text, created_at FROM messages WHERE bot_id = %(bot)s AND tenant_id = %(tenant)s "
            "AND direction = 'inbound' AND metadata ? 'outcome' AND (metadata -> 'outcome' ->> 'intent') IS NULL "
            "AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s) "
            "AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s) "
            "ORDER BY created_at DESC LIMIT %(rows)s",
            {
                "bot": as_uuid(bot_id),
                "tenant": as_uuid(tenant_id),
                "since": since,
                "until": until,
                "rows": FALLBACK_ROWS,
            },
        )
        return group_questions([(r["text"], r["created_at"]) for r in rows])[:limit]


class TooMany(Exception):
    """A bot's teaching is at one of its limits."""


def group_questions(rows: list[tuple[str, datetime]]) -> list[FallbackGroup]:
    """Group questions (newest first) whose weighted terms overlap at least :data:`SIMILAR`; commonest first."""
    analyzer = default_analyzer()
    groups: list[dict[str, Any]] = []
    for text, when in rows:
        terms = term_map(analyzer.terms(text[:2000]))
        home = None
        for group in groups:
            if similarity(terms, group["terms"]) >= SIMILAR:
                home = group
                break
        if home is None:
            groups.append({"terms": terms, "question": text, "count": 1, "last": when, "variants": [text]})
            continue
        home["count"] += 1
        if text not in home["variants"] and len(home["variants"]) < 5:
            home["variants"].append(text)
    groups.sort(key=lambda g: (-g["count"], -g["last"].timestamp()))
    return [
        FallbackGroup(question=g["question"], count=g["count"], last_seen=g["last"], variants=g["variants"])
        for g in groups
    ]


def similarity(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Weighted overlap of two term maps over the smaller one, in [0, 1] (two empty ones are alike)."""
    if not a and not b:
        return 1.0
    shared = sum(min(a[k], b[k]) for k in set(a) & set(b))
    smaller = min(sum(a.values()), sum(b.values()))
    return shared / smaller if smaller else 0.0
