"""Delivery of outbound messages: parts handed to the provider, attempts, dead letters, status reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from botloom.core.domain import StoredMessage
from botloom.core.statuses import DELIVERY_RANKS, DeliveryStatus
from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct


class OutboundState(msgspec.Struct, frozen=True, kw_only=True):
    """An outbound message with its delivery state: attempts so far, the last error, when to try again."""

    message: StoredMessage
    attempts: int = 0
    error: str | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None


_DELIVERY_FIELDS = ("attempts", "error", "next_attempt_at", "updated_at")
_RANKS = list(DELIVERY_RANKS)
"""Order of a part's statuses: a status report never moves a part back (``sent`` after ``delivered``)."""
_SETTLE = (
    "UPDATE messages m SET status = s.status, error = coalesce(s.error, m.error), updated_at = now() FROM ("
    "SELECT CASE WHEN bool_or(status = 'failed') THEN 'failed' WHEN bool_or(status = 'undelivered') "
    "THEN 'undelivered' WHEN bool_and(status = 'delivered') THEN 'delivered' ELSE 'sent' END AS status, "
    "max(error) AS error FROM message_parts WHERE message_id = %(id)s) s "
    "WHERE m.id = %(id)s AND m.tenant_id = %(tenant)s AND m.status = ANY(%(from)s) AND s.status IS NOT NULL "
    "RETURNING m.id"
)
"""Set a message's status from its parts' (the worst of them), if it is in one of the ``from`` states."""


class DeliveryRepository(Repository):
    """Delivery of outbound messages: the parts sent, attempts and back-off, dead letters, status reports."""

    @staticmethod
    def _state(row: Mapping[str, Any]) -> OutboundState:
        data = dict(row)
        extra = {name: data.pop(name, None) for name in _DELIVERY_FIELDS}
        return OutboundState(
            message=to_struct(StoredMessage, data),
            attempts=extra["attempts"] or 0,
            error=extra["error"],
            next_attempt_at=extra["next_attempt_at"],
            updated_at=extra["updated_at"],
        )

    async def next_due(self, tenant_id: str, conversation_id: str) -> OutboundState | None:
        """The conversation's oldest outbound message still to be delivered (``pending`` or ``sending``)."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s AND direction = 'outbound' "
            "AND status IN ('pending', 'sending') ORDER BY created_at, idempotency_key, id LIMIT 1",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return self._state(row) if row else None

    async def start(self, tenant_id: str, message_id: str) -> tuple[set[int], dict[str, Any]] | None:
        """Claim a message for sending (``sending``); ``None`` if it is no longer ``pending`` or ``sending``.

        Returns the parts already handed to the provider (a re-run sends only the
        others) and the metadata of the inbound message the reply answers (the last
        one of its conversation stored before it).
        """
        row = await self._one(
            "WITH claimed AS (UPDATE messages SET status = 'sending', updated_at = now() WHERE tenant_id = %(tenant)s "
            "AND id = %(id)s AND direction = 'outbound' AND status IN ('pending', 'sending') "
            "RETURNING id, conversation_id, created_at) "
            "SELECT c.id, (SELECT coalesce(array_agg(p.part), '{}') FROM message_parts p WHERE p.message_id = c.id) "
            "AS parts, (SELECT m.metadata FROM messages m WHERE m.tenant_id = %(tenant)s "
            "AND m.conversation_id = c.conversation_id AND m.direction = 'inbound' AND m.created_at <= c.created_at "
            "ORDER BY m.created_at DESC, m.id DESC LIMIT 1) AS reply_to FROM claimed c",
            {"tenant": as_uuid(tenant_id), "id": as_uuid(message_id)},
        )
        if row is None:
            return None
        return {int(p) for p in row["parts"]}, dict(row["reply_to"] or {})

    async def begin_attempt(self, tenant_id: str, message_id: str, part: int, *, channel: str) -> datetime | None:
        """Record that one part is about to be handed to the provider, before it is.

        Returns when an earlier attempt at the part began whose outcome was never
        recorded (the provider may have the part), ``None`` when there is none.
        """
        row = await self._one(
            "INSERT INTO message_send_attempts (message_id, part, tenant_id, channel) "
            "SELECT m.id, %(part)s, m.tenant_id, %(channel)s FROM messages m "
            "WHERE m.tenant_id = %(tenant)s AND m.id = %(id)s AND m.direction = 'outbound' "
            "ON CONFLICT (message_id, part) DO UPDATE SET tries = message_send_attempts.tries + 1 "
            "WHERE message_send_attempts.tenant_id = EXCLUDED.tenant_id RETURNING attempted_at, tries",
            {"id": as_uuid(message_id), "part": part, "tenant": as_uuid(tenant_id), "channel": channel},
        )
        return row["attempted_at"] if row and row["tries"] > 1 else None

    async def forget_attempt(self, tenant_id: str, message_id: str, part: int) -> bool:
        """Forget a part's attempts: the provider refused the part, so it did not go out."""
        row = await self._one(
            "DELETE FROM message_send_attempts WHERE tenant_id = %s AND message_id = %s AND part = %s RETURNING part",
            (as_uuid(tenant_id), as_uuid(message_id), part),
        )
        return row is not None

    async def add_part(
        self, tenant_id: str, message_id: str, part: int, *, channel: str, provider_id: str | None, found: bool = False
    ) -> bool:
        """Record that one part of a message was handed to the provider, with the provider's id for it.

        ``found``: the provider's id was found by asking the provider about an
        interrupted attempt; it is recorded only if no other part has it. Returns
        whether the part was recorded.
        """
        row = await self._one(
            "WITH added AS (INSERT INTO message_parts (message_id, part, tenant_id, channel, via, provider_id, status) "
            "SELECT m.id, %(part)s, m.tenant_id, %(channel)s, 'send', %(provider)s, 'sent' FROM messages m "
            "WHERE m.tenant_id = %(tenant)s AND m.id = %(id)s AND m.direction = 'outbound' "
            "AND NOT (%(found)s AND EXISTS (SELECT 1 FROM message_parts o WHERE o.tenant_id = m.tenant_id "
            "AND o.channel = %(channel)s AND o.provider_id = %(provider)s AND NOT (o.message_id = m.id "
            "AND o.part = %(part)s))) "
            "ON CONFLICT (message_id, part) DO UPDATE "
            "SET via = 'send', provider_id = coalesce(message_parts.provider_id, EXCLUDED.provider_id) "
            "WHERE message_parts.tenant_id = EXCLUDED.tenant_id RETURNING message_id, part), "
            "done AS (DELETE FROM message_send_attempts a USING added "
            "WHERE a.message_id = added.message_id AND a.part = added.part) "
            "SELECT part FROM added",
            {
                "id": as_uuid(message_id),
                "part": part,
                "tenant": as_uuid(tenant_id),
                "channel": channel,
                "provider": provider_id,
                "found": found,
            },
        )
        return row is not None

    async def finish(self, tenant_id: str, message_id: str) -> bool:
        """Mark a message whose parts were all handed over ``sent`` (or what status reports already say)."""
        row = await self._one(_SETTLE, {"id": as_uuid(message_id), "tenant": as_uuid(tenant_id), "from": ["sending"]})
        return row is not None

    async def fail(self, tenant_id: str, message_id: str, error: str, *, retry_at: datetime | None) -> int:
        """Count a failed attempt: back to ``pending`` until ``retry_at``, or a dead letter (``failed``) without it.

        Returns the number of attempts made so far.
        """
        row = await self._one(
            "UPDATE messages SET attempts = attempts + 1, error = %(error)s, next_attempt_at = %(at)s, "
            "status = CASE WHEN %(at)s::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, updated_at = now() "
            "WHERE tenant_id = %(tenant)s AND id = %(id)s RETURNING attempts",
            {"error": error[:2000], "at": retry_at, "tenant": as_uuid(tenant_id), "id": as_uuid(message_id)},
        )
        return int(row["attempts"]) if row else 0

    async def claim_for_response(self, tenant_id: str, inbound_ids: Sequence[str]) -> list[StoredMessage]:
        """The replies to these inbound messages that go in the provider's response, in order.

        Pending replies are claimed for it (``sent``, with one part ``via response``)
        unless a delivery job took them first; replies claimed by an earlier response
        (a retried webhook) are included again.
        """
        rows = await self._all(
            "WITH turns AS (SELECT DISTINCT turn_id FROM messages WHERE tenant_id = %(tenant)s "
            "AND id = ANY(%(ids)s) AND turn_id IS NOT NULL), "
            "claimed AS (UPDATE messages m SET status = 'sent', updated_at = now() FROM turns t "
            "WHERE m.tenant_id = %(tenant)s AND m.turn_id = t.turn_id AND m.direction = 'outbound' "
            "AND m.status = 'pending' RETURNING m.*), "
            "parts AS (INSERT INTO message_parts (message_id, part, tenant_id, channel, via, status) "
            "SELECT id, 0, tenant_id, channel, 'response', 'sent' FROM claimed ON CONFLICT DO NOTHING) "
            "SELECT * FROM claimed UNION ALL SELECT m.* FROM messages m JOIN turns t ON m.turn_id = t.turn_id "
            "WHERE m.tenant_id = %(tenant)s AND m.direction = 'outbound' AND EXISTS (SELECT 1 FROM message_parts p "
            "WHERE p.message_id = m.id AND p.via = 'response') ORDER BY created_at, idempotency_key",
            {"tenant": as_uuid(tenant_id), "ids": [as_uuid(i) for i in inbound_ids]},
        )
        return [self._state(r).message for r in rows]

    async def apply_report(
        self,
        tenant_id: str,
        bot_id: str,
        channel: str,
        *,
        status: DeliveryStatus,
        provider_id: str | None,
        ref: tuple[str, int] | None = None,
        error: str | None = None,
    ) -> str | None:
        """Apply a provider's status report to the part it names; returns the message's id, if found.

        The part is found by ``ref`` (message id and part, from the callback URL) or
        else by the provider's id. Reports never move a part back (``sent`` after
        ``delivered``); the message then takes the worst status of its parts.
        """
        params = {
            "tenant": as_uuid(tenant_id),
            "bot": as_uuid(bot_id),
            "channel": channel,
            "status": status,
            "provider": provider_id,
            "error": error,
            "id": as_uuid(ref[0]) if ref else None,
            "part": ref[1] if ref else None,
            "ranks": _RANKS,
        }
        if ref is not None:
            sql = (
                "INSERT INTO message_parts (message_id, part, tenant_id, channel, via, provider_id, status, error) "
                "SELECT m.id, %(part)s, m.tenant_id, m.channel, CASE WHEN m.status = 'sending' THEN 'send' "
                "ELSE 'response' END, %(provider)s, %(status)s, %(error)s FROM messages m WHERE m.id = %(id)s "
                "AND m.tenant_id = %(tenant)s AND m.bot_id = %(bot)s AND m.channel = %(channel)s "
                "AND m.direction = 'outbound' ON CONFLICT (message_id, part) DO UPDATE SET status = EXCLUDED.status, "
                "error = EXCLUDED.error, provider_id = coalesce(message_parts.provider_id, EXCLUDED.provider_id), "
                "updated_at = now() WHERE array_position(%(ranks)s, EXCLUDED.status) "
                "> array_position(%(ranks)s, message_parts.status) RETURNING message_id"
            )
        else:
            sql = (
                "UPDATE message_parts SET status = %(status)s, error = %(error)s, updated_at = now() "
                "WHERE tenant_id = %(tenant)s AND channel = %(channel)s AND provider_id = %(provider)s "
                "AND array_position(%(ranks)s, %(status)s::text) > array_position(%(ranks)s, status) "
                "RETURNING message_id"
            )
        row = await self._one(sql, params)
        if row is None:
            return None
        message_id = str(row["message_id"])
        await self._one(_SETTLE, {"id": row["message_id"], "tenant": params["tenant"], "from": ["sent", "delivered"]})
        return message_id

    async def dead_letters(self, tenant_id: str, bot_id: str, limit: int = 50) -> list[OutboundState]:
        """A bot's outbound messages that could not be delivered, most recent first."""
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND bot_id = %s AND direction = 'outbound' "
            "AND status IN ('failed', 'undelivered') ORDER BY updated_at DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(bot_id), limit),
        )
        return [self._state(r) for r in rows]

    async def requeue(self, tenant_id: str, message_id: str) -> OutboundState | None:
        """Make a dead letter ``pending`` again (attempts reset, failed parts forgotten); ``None`` if it is not one."""
        row = await self._one(
            "WITH m AS (UPDATE messages SET status = 'pending', attempts = 0, next_attempt_at = NULL, error = NULL, "
            "updated_at = now() WHERE tenant_id = %(tenant)s AND id = %(id)s AND direction = 'outbound' "
            "AND status IN ('failed', 'undelivered') RETURNING *), "
            "gone AS (DELETE FROM message_parts p USING m WHERE p.message_id = m.id "
            "AND p.status IN ('failed', 'undelivered')) SELECT * FROM m",
            {"tenant": as_uuid(tenant_id), "id": as_uuid(message_id)},
        )
        return self._state(row) if row else None

    async def state(self, tenant_id: str, message_id: str) -> OutboundState | None:
        """One outbound message with its delivery state."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND id = %s AND direction = 'outbound'",
            (as_uuid(tenant_id), as_uuid(message_id)),
        )
        return self._state(row) if row else None

    async def tenant_of(self, message_id: str) -> str | None:
        """The tenant a message belongs to (for the operator, who names messages by id alone)."""
        row = await self._one("SELECT tenant_id FROM messages WHERE id = %s", (as_uuid(message_id),))
        return str(row["tenant_id"]) if row else None

    async def unfinished(self, channels: Sequence[str], older_than: float, limit: int = 500) -> list[dict[str, Any]]:
        """Conversations of these channels with a turn or a delivery that has waited over ``older_than`` seconds.

        Each row has ``tenant_id``, ``bot_id``, ``conversation_id``, ``direction``
        (``inbound``: a turn to run; ``outbound``: replies to deliver) and
        ``message_id``, the conversation's oldest such message. Messages waiting
        for a back-off are left out.
        """
        rows = await self._all(
            "SELECT DISTINCT ON (conversation_id, direction) tenant_id, bot_id, conversation_id, direction, "
            "id AS message_id FROM messages "
            "WHERE status IN ('received', 'processing', 'pending', 'sending') AND channel = ANY(%s) "
            "AND created_at < now() - make_interval(secs => %s) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
            "ORDER BY conversation_id, direction, created_at, id LIMIT %s",
            (list(channels), older_than, limit),
        )
        return [{k: str(v) for k, v in r.items()} for r in rows]
