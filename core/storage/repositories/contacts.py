"""End users' data (``docs/data-rights.md``): one contact's rows read for export and erased, and threads to erase.

A *contact* is one end user of one tenant on one channel, named by an address: the
conversations of the tenant's bots on that channel whose user (the sender: a phone
number, an e-mail address, a REST or web chat ``user``) or whose channel key (the
sender again on Twilio; the conversation's own id on REST and web chat) is that
address.

The LangGraph checkpoints of a conversation live outside this schema, so deleting its
rows cannot cascade to them: the transaction that deletes them records their threads
in ``checkpoint_erasures`` (migration 0015), and ``runtime/erasure.py`` deletes the
threads (:class:`CheckpointErasureRepository`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec

from botloom.core.domain import Conversation
from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct

Reason = Literal["contact", "bot", "tenant", "retention"]

RECORD_THREADS_SQL = (
    "INSERT INTO checkpoint_erasures (tenant_id, bot_id, conversation_id, thread_id, reason) "
    "SELECT c.tenant_id, c.bot_id, c.id, NULL, %(reason)s FROM conversations c "
    "WHERE %(own)s AND c.tenant_id = %(tenant)s AND (%(bot)s::uuid IS NULL OR c.bot_id = %(bot)s) "
    "AND (%(conversations)s::uuid[] IS NULL OR c.id = ANY(%(conversations)s::uuid[])) "
    "UNION ALL SELECT f.tenant_id, f.bot_id, f.conversation_id, f.thread_id, %(reason)s FROM debug_forks f "
    "WHERE f.tenant_id = %(tenant)s AND (%(bot)s::uuid IS NULL OR f.bot_id = %(bot)s) "
    "AND (%(conversations)s::uuid[] IS NULL OR f.conversation_id = ANY(%(conversations)s::uuid[]))"
)
"""Record, for erasure, the checkpoint threads of a tenant's conversations (of one bot, or some conversations)
and of their debug forks. Run in the transaction that deletes the rows, after locking what would let a new
conversation or fork in (see :meth:`BotRepository.delete`), so every thread the deletion orphans is listed."""


def thread_params(
    tenant_id: str,
    reason: Reason,
    *,
    bot_id: str | None = None,
    conversation_ids: Sequence[Any] | None = None,
    own: bool = True,
) -> dict[str, Any]:
    """The parameters of :data:`RECORD_THREADS_SQL`; ``own=False`` records the forks' threads only."""
    return {
        "tenant": as_uuid(tenant_id),
        "bot": as_uuid(bot_id),
        "conversations": None if conversation_ids is None else [as_uuid(str(c)) for c in conversation_ids],
        "reason": reason,
        "own": own,
    }


ERASED_COUNTS = (
    "messages",
    "dead_letters",
    "delivery_parts",
    "send_attempts",
    "handovers",
    "handover_notes",
    "handover_transitions",
    "events",
    "webhook_deliveries",
    "forks",
    "usage_unlinked",
)
"""What :meth:`ContactRepository.erase` counts, in the order the API shows it."""

_COUNT_SQL = """
SELECT
  (SELECT count(*) FROM messages m WHERE m.tenant_id = %(tenant)s AND m.conversation_id = %(conversation)s)
    AS messages,
  (SELECT count(*) FROM messages m WHERE m.tenant_id = %(tenant)s AND m.conversation_id = %(conversation)s
     AND m.direction = 'outbound' AND m.status IN ('failed', 'undelivered')) AS dead_letters,
  (SELECT count(*) FROM message_parts p JOIN messages m ON m.id = p.message_id
     WHERE m.tenant_id = %(tenant)s AND m.conversation_id = %(conversation)s) AS delivery_parts,
  (SELECT count(*) FROM message_send_attempts a JOIN messages m ON m.id = a.message_id
     WHERE m.tenant_id = %(tenant)s AND m.conversation_id = %(conversation)s) AS send_attempts,
  (SELECT count(*) FROM handovers h WHERE h.tenant_id = %(tenant)s AND h.conversation_id = %(conversation)s)
    AS handovers,
  (SELECT count(*) FROM handover_notes n JOIN handovers h ON h.tenant_id = n.tenant_id AND h.id = n.handover_id
     WHERE h.tenant_id = %(tenant)s AND h.conversation_id = %(conversation)s) AS handover_notes,
  (SELECT count(*) FROM handover_transitions t JOIN handovers h ON h.tenant_id = t.tenant_id AND h.id = t.handover_id
     WHERE h.tenant_id = %(tenant)s AND h.conversation_id = %(conversation)s) AS handover_transitions,
  (SELECT count(*) FROM events e WHERE e.tenant_id = %(tenant)s AND e.conversation_id = %(conversation)s) AS events,
  (SELECT count(*) FROM webhook_deliveries w JOIN events e ON e.id = w.event_id
     WHERE e.tenant_id = %(tenant)s AND e.conversation_id = %(conversation)s) AS webhook_deliveries,
  (SELECT count(*) FROM debug_forks f WHERE f.tenant_id = %(tenant)s AND f.conversation_id = %(conversation)s)
    AS forks
"""


class ThreadErasure(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint thread to erase: a conversation's own (``thread_id`` ``None``) or one of its forks'."""

    id: int
    tenant_id: str
    bot_id: str
    conversation_id: str
    thread_id: str | None
    reason: str
    erased_at: datetime | None
    """When the thread was first deleted (``None``: not yet); it is deleted once more, then forgotten."""


class ContactRepository(Repository):
    """One contact's rows, always within one tenant (see the module docstring)."""

    async def conversations(
        self,
        tenant_id: str,
        channel: str,
        address: str,
        *,
        after: tuple[datetime, str] | None = None,
        limit: int = 100,
        anonymous: str | None = None,
    ) -> list[Conversation]:
        """The contact's conversations (of every bot of the tenant), oldest first, after ``(created_at, id)``.

        ``anonymous`` is the channel's sender of unnamed end users (``ChannelAdapter.anonymous_sender``):
        it names no contact, so a conversation is never found by it as its user, only by its id.
        """
        tenant = as_uuid(tenant_id)
        if tenant is None:
            return []
        at, last = after if after is not None else (None, None)
        rows = await self._all(
            "SELECT * FROM conversations WHERE tenant_id = %(tenant)s AND channel = %(channel)s "
            "AND ((user_ref = %(address)s AND %(address)s IS DISTINCT FROM %(anonymous)s::text) "
            "OR external_key = %(address)s) "
            "AND (%(at)s::timestamptz IS NULL OR (created_at, id) > (%(at)s::timestamptz, %(last)s::uuid)) "
            "ORDER BY created_at, id LIMIT %(limit)s",
            {
                "tenant": tenant,
                "channel": channel,
                "address": address,
                "anonymous": anonymous,
                "at": at,
                "last": as_uuid(last),
                "limit": limit,
            },
        )
        return [to_struct(Conversation, r) for r in rows]

    async def messages(
        self, tenant_id: str, conversation_id: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """A page of the conversation's messages as JSON objects, oldest first, after ``(created_at, id)``.

        ``after`` is the ``created_at`` and ``id`` of the last message of the page before, as this answers them.

        Each carries its delivery: ``parts`` (what was handed to the provider, with its
        status) and ``send_attempts`` (parts whose outcome botloom does not know).
        """
        tenant, conversation = as_uuid(tenant_id), as_uuid(conversation_id)
        if tenant is None or conversation is None:
            return []
        at, last = after if after is not None else (None, None)
        rows = await self._all(
            "SELECT to_jsonb(x) AS row FROM (SELECT m.*, "
            "(SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.part), '[]') FROM message_parts p "
            "WHERE p.message_id = m.id AND p.tenant_id = m.tenant_id) AS parts, "
            "(SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.part), '[]') FROM message_send_attempts a "
            "WHERE a.message_id = m.id AND a.tenant_id = m.tenant_id) AS send_attempts "
            "FROM messages m WHERE m.tenant_id = %(tenant)s AND m.conversation_id = %(conversation)s "
            "AND (%(at)s::timestamptz IS NULL OR (m.created_at, m.id) > (%(at)s::timestamptz, %(last)s::uuid)) "
            "ORDER BY m.created_at, m.id LIMIT %(limit)s) x ORDER BY x.created_at, x.id",
            {"tenant": tenant, "conversation": conversation, "at": at, "last": as_uuid(last), "limit": limit},
        )
        return [dict(r["row"]) for r in rows]

    async def handovers(self, tenant_id: str, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's handovers as JSON objects, oldest first, each with its ``transitions`` and ``notes``."""
        tenant, conversation = as_uuid(tenant_id), as_uuid(conversation_id)
        if tenant is None or conversation is None:
            return []
        rows = await self._all(
            "SELECT to_jsonb(x) AS row FROM (SELECT h.*, "
            "(SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM handover_transitions t "
            "WHERE t.tenant_id = h.tenant_id AND t.handover_id = h.id) AS transitions, "
            "(SELECT coalesce(jsonb_agg(to_jsonb(n) ORDER BY n.created_at, n.id), '[]') FROM handover_notes n "
            "WHERE n.tenant_id = h.tenant_id AND n.handover_id = h.id) AS notes "
            "FROM handovers h WHERE h.tenant_id = %s AND h.conversation_id = %s) x ORDER BY x.created_at, x.id",
            (tenant, conversation),
        )
        return [dict(r["row"]) for r in rows]

    async def usage(
        self, tenant_id: str, conversation_id: str, *, after: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        """A page of the conversation's usage rows (model calls: model, tokens, latency) after the row ``after``."""
        tenant, conversation = as_uuid(tenant_id), as_uuid(conversation_id)
        if tenant is None or conversation is None:
            return []
        rows = await self._all(
            "SELECT to_jsonb(u) AS row FROM usage_events u WHERE u.tenant_id = %s AND u.conversation_id = %s "
            "AND u.id > %s ORDER BY u.id LIMIT %s",
            (tenant, conversation, after, limit),
        )
        return [dict(r["row"]) for r in rows]

    async def erase(self, tenant_id: str, conversation_id: str) -> dict[str, int] | None:
        """Delete the conversation and every row about it, in one transaction; what went (``None``: no such one).

        Messages (dead letters included) with their delivery parts and attempts,
        handovers with their notes and transitions, events with their webhook
        deliveries, debug forks' rows and the stream counter go; usage rows stay with
        their counts, unlinked from the conversation (``usage_unlinked``). The
        conversation's checkpoint thread and its forks' threads are recorded in
        ``checkpoint_erasures`` in the same transaction, for ``runtime/erasure.py``.
        """
        tenant, conversation = as_uuid(tenant_id), as_uuid(conversation_id)
        if tenant is None or conversation is None:
            return None
        params = {"tenant": tenant, "conversation": conversation}
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id FROM conversations WHERE tenant_id = %(tenant)s AND id = %(conversation)s FOR UPDATE",
                params,
            )
            if await cur.fetchone() is None:
                return None
            # No new fork of it can start now: a fork's row references the locked conversation row.
            cur = await conn.execute(_COUNT_SQL, params)
            row = await cur.fetchone()
            assert row is not None
            counts = {k: int(v) for k, v in row.items()}
            await conn.execute(RECORD_THREADS_SQL, thread_params(tenant_id, "contact", conversation_ids=[conversation]))
            cur = await conn.execute(
                "UPDATE usage_events SET conversation_id = NULL WHERE tenant_id = %(tenant)s "
                "AND conversation_id = %(conversation)s",
                params,
            )
            counts["usage_unlinked"] = cur.rowcount
            await conn.execute(
                "DELETE FROM event_streams WHERE tenant_id = %(tenant)s AND stream = %(conversation)s::text", params
            )
            await conn.execute(
                "DELETE FROM conversations WHERE tenant_id = %(tenant)s AND id = %(conversation)s", params
            )
        return {key: counts[key] for key in ERASED_COUNTS}


class CheckpointErasureRepository(Repository):
    """Checkpoint threads whose rows were deleted, still to erase from the checkpointer (``runtime/erasure.py``)."""

    async def due(
        self, limit: int = 500, *, tenant_id: str | None = None, settled_before: datetime | None = None
    ) -> list[ThreadErasure]:
        """Threads to delete: never deleted yet, and (with ``settled_before``) deleted once before that moment.

        ``tenant_id`` narrows the list to one tenant's threads (a deletion's own first pass).
        """
        tenant = as_uuid(tenant_id)
        if tenant is None and tenant_id is not None:
            return []
        rows = await self._all(
            "SELECT id, tenant_id, bot_id, conversation_id, thread_id, reason, erased_at FROM checkpoint_erasures "
            "WHERE (%(tenant)s::uuid IS NULL OR tenant_id = %(tenant)s) "
            "AND (erased_at IS NULL OR erased_at < %(settled)s::timestamptz) "
            "ORDER BY erased_at NULLS FIRST, id LIMIT %(limit)s",
            {"tenant": tenant, "settled": settled_before, "limit": limit},
        )
        return [to_struct(ThreadErasure, r) for r in rows]

    async def erased(self, ids: Sequence[int]) -> int:
        """Note that these threads were deleted a first time; how many rows."""
        if not ids:
            return 0
        row = await self._one(
            "WITH done AS (UPDATE checkpoint_erasures SET erased_at = now() WHERE id = ANY(%s) "
            "AND erased_at IS NULL RETURNING 1) SELECT count(*) AS n FROM done",
            (list(ids),),
        )
        return int(row["n"]) if row else 0

    async def forget(self, ids: Sequence[int]) -> int:
        """Forget threads deleted a second time; how many rows."""
        if not ids:
            return 0
        row = await self._one(
            "WITH gone AS (DELETE FROM checkpoint_erasures WHERE id = ANY(%s) RETURNING 1) "
            "SELECT count(*) AS n FROM gone",
            (list(ids),),
        )
        return int(row["n"]) if row else 0

    async def retire(
        self, tenant_id: str, conversation_ids: Sequence[str], what: Literal["pruned", "archived"]
    ) -> dict[str, int]:
        """Prune or archive these conversations of the tenant (retention) in one transaction; how many, how many forks.

        Records their debug forks' threads in ``checkpoint_erasures`` (archiving: their
        own threads too), deletes the forks' rows and marks the conversations
        ``pruned_at`` or ``archived_at``. The conversations' rows are locked first, so no
        fork of them can start meanwhile (a fork's row references its conversation's).
        The caller deletes the threads at once and the hourly pass once more
        (``runtime/retention.py``).
        """
        tenant = as_uuid(tenant_id)
        ids = [u for u in (as_uuid(c) for c in conversation_ids) if u is not None]
        if tenant is None or not ids:
            return {"conversations": 0, "forks": 0}
        column = {"pruned": "pruned_at", "archived": "archived_at"}[what]
        params: dict[str, Any] = {"tenant": tenant, "ids": ids}
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id FROM conversations WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s) "
                "ORDER BY id FOR UPDATE",
                params,
            )
            found = [r["id"] for r in await cur.fetchall()]
            if not found:
                return {"conversations": 0, "forks": 0}
            params["ids"] = found
            await conn.execute(
                RECORD_THREADS_SQL,
                thread_params(tenant_id, "retention", conversation_ids=found, own=what == "archived"),
            )
            cur = await conn.execute(
                "DELETE FROM debug_forks WHERE tenant_id = %(tenant)s AND conversation_id = ANY(%(ids)s)", params
            )
            forks = cur.rowcount
            await conn.execute(
                f"UPDATE conversations SET {column} = now() WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s)",  # noqa: S608
                params,
            )
        return {"conversations": len(found), "forks": forks}
