"""Token usage and cost of language-model and embedding calls, per tenant and bot (docs/cost-control.md)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

from botloom.core.domain import UsageEvent
from botloom.core.storage.repositories.base import Repository, as_uuid

GroupBy = Literal["day", "bot", "model"]


class Spent(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's spend in the calendar month (UTC) ``month`` just after a priced call was recorded."""

    month: dt.date
    spent_usd: Decimal


class UsageGroup(msgspec.Struct, frozen=True, kw_only=True):
    """The usage of one day, bot or model."""

    key: str | None
    """The day (``YYYY-MM-DD``, UTC), the bot's id (``None``: a deleted bot, or none) or the model."""
    label: str | None
    """The bot's slug (``group_by=bot``), else the key."""
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    """The summed cost of the priced calls."""
    unpriced_calls: int
    """Calls whose model had no price when they were recorded (not in ``cost_usd``)."""


_GROUPS: dict[str, str] = {
    "day": "to_char(date_trunc(%(unit)s, u.created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
    "bot": "u.bot_id::text",
    "model": "u.model",
}


class UsageRepository(Repository):
    """Token usage and cost of language-model and embedding calls, per tenant and bot."""

    async def record(self, event: UsageEvent, cost_usd: Decimal | None = None) -> Spent | None:
        """Store one usage event with its cost; with a cost above zero, the tenant's month-to-date spend after it.

        The month's running total (``tenant_spend``) is added to in the same statement as
        the event is stored, so recording a call costs no extra round trip and every
        process reads one total.
        """
        row = await self._one(
            "WITH used AS (INSERT INTO usage_events (tenant_id, bot_id, conversation_id, kind, model, prompt_tokens, "
            "completion_tokens, latency_ms, cost_usd) VALUES (%(tenant)s, %(bot)s, %(conversation)s, %(kind)s, "
            "%(model)s, %(prompt)s, %(completion)s, %(latency)s, %(cost)s) RETURNING tenant_id, cost_usd, created_at), "
            "spent AS (INSERT INTO tenant_spend AS s (tenant_id, month, cost_usd) "
            "SELECT tenant_id, date_trunc(%(unit)s, created_at AT TIME ZONE 'UTC')::date, cost_usd FROM used "
            "WHERE cost_usd > 0 ON CONFLICT (tenant_id, month) DO UPDATE SET cost_usd = s.cost_usd + EXCLUDED.cost_usd "
            "RETURNING s.month, s.cost_usd) "
            "SELECT (SELECT month FROM spent) AS month, (SELECT cost_usd FROM spent) AS spent",
            {
                "tenant": as_uuid(event.tenant_id),
                "bot": as_uuid(event.bot_id),
                "conversation": as_uuid(event.conversation_id),
                "kind": event.kind,
                "model": event.model,
                "prompt": event.prompt_tokens,
                "completion": event.completion_tokens,
                "latency": event.latency_ms,
                "cost": cost_usd,
                "unit": "month",
            },
        )
        if row is None or row["spent"] is None:
            return None
        return Spent(month=row["month"], spent_usd=Decimal(row["spent"]))

    async def totals(self, tenant_id: str, bot_id: str | None = None) -> dict[str, int]:
        """Summed tokens of a tenant (or one of its bots)."""
        if bot_id is not None and as_uuid(bot_id) is None:
            return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        row = await self._one(
            "SELECT count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS prompt_tokens, "
            "coalesce(sum(completion_tokens), 0) AS completion_tokens FROM usage_events "
            "WHERE tenant_id = %s AND (%s::uuid IS NULL OR bot_id = %s)",
            (as_uuid(tenant_id), as_uuid(bot_id), as_uuid(bot_id)),
        )
        assert row is not None
        return {k: int(v) for k, v in row.items()}

    async def report(self, tenant_id: str, start: dt.date, end: dt.date, group_by: GroupBy) -> list[UsageGroup]:
        """The tenant's usage from day ``start`` to day ``end`` (both included, UTC), by day, bot or model.

        Days are in order; bots and models by cost, then calls, most first.
        """
        key = _GROUPS[group_by]
        label = (
            "g.key"
            if group_by != "bot"
            else "(SELECT b.slug FROM bots b WHERE b.tenant_id = %(tenant)s AND b.id = g.key::uuid)"
        )
        order = "g.key" if group_by == "day" else "g.cost_usd DESC, g.calls DESC, g.key"
        rows = await self._all(
            f"SELECT g.*, {label} AS label FROM ("  # noqa: S608
            f"SELECT {key} AS key, count(*) AS calls, coalesce(sum(u.prompt_tokens), 0) AS input_tokens, "
            "coalesce(sum(u.completion_tokens), 0) AS output_tokens, coalesce(sum(u.cost_usd), 0) AS cost_usd, "
            "count(*) FILTER (WHERE u.cost_usd IS NULL) AS unpriced_calls FROM usage_events u "
            "WHERE u.tenant_id = %(tenant)s AND u.created_at >= %(start)s AND u.created_at < %(end)s "
            f"GROUP BY 1) g ORDER BY {order}",
            {
                "tenant": as_uuid(tenant_id),
                "start": dt.datetime.combine(start, dt.time(), dt.UTC),
                "end": dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC),
                "unit": "day",
            },
        )
        return [
            UsageGroup(
                key=row["key"],
                label=row["label"],
                calls=int(row["calls"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cost_usd=Decimal(row["cost_usd"]),
                unpriced_calls=int(row["unpriced_calls"]),
            )
            for row in rows
        ]


__all__ = ["GroupBy", "Spent", "UsageGroup", "UsageRepository"]
