"""Handovers of conversations to agents: their states, every transition audited, notes, assignment, figures.

A handover's status moves ``waiting → assigned → with_agent → resolved | returned_to_bot |
timed_out_to_bot``; :meth:`HandoverRepository.move` is the one writer of a status and records
each transition in ``handover_transitions`` in the same transaction. Moves are conditional
updates under the row's lock, so two processes acting on one handover at once cannot both
win (two claims: one gets it, the other is told who holds it).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import msgspec

from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct

HandoverStatus = Literal["waiting", "assigned", "with_agent", "resolved", "returned_to_bot", "timed_out_to_bot"]
HANDOVER_STATUSES: tuple[HandoverStatus, ...] = get_args(HandoverStatus)
OPEN_STATUSES: tuple[HandoverStatus, ...] = ("waiting", "assigned", "with_agent")
"""A conversation is with a person while its handover is in one of these."""
CLOSED_STATUSES: tuple[HandoverStatus, ...] = ("resolved", "returned_to_bot", "timed_out_to_bot")


class HandoverRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A handover as stored."""

    id: str
    tenant_id: str
    bot_id: str
    conversation_id: str
    team: str | None = None
    status: HandoverStatus
    reason: str
    summary: dict[str, Any] = {}
    agent_id: str | None = None
    note: str | None = None
    created_at: datetime
    assigned_at: datetime | None = None
    first_response_at: datetime | None = None
    closed_at: datetime | None = None
    wait_until: datetime | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    resumed_at: datetime | None = None
    """When the bot took the conversation back (the graph resumed); ``None`` on a closed handover: still to do."""
    resume_attempts: int = 0
    """Resumes of a closed handover that failed (the desk's sweep retries them)."""
    resume_error: str | None = None
    """The last failed resume's error code (the exception's type name; never a remote server's text)."""


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One audited move of a handover."""

    from_status: str | None = None
    to_status: str
    agent_id: str | None = None
    detail: dict[str, Any] = {}
    at: datetime


class Note(msgspec.Struct, frozen=True, kw_only=True):
    """A private note between agents on a handover (the end user never sees it)."""

    id: str
    tenant_id: str
    handover_id: str
    agent_id: str | None = None
    text: str
    created_at: datetime


@dataclass(frozen=True)
class Moved:
    """What :meth:`HandoverRepository.move` did: the handover after (``None``: not found) and whether it moved."""

    handover: HandoverRecord | None
    previous: HandoverStatus | None
    moved: bool


@dataclass(frozen=True)
class Alert:
    """An SLA deadline a handover missed."""

    tenant_id: str
    handover_id: str
    conversation_id: str
    bot_id: str
    team: str | None
    kind: Literal["first_response", "resolution"]
    due: datetime


_OPEN = list(OPEN_STATUSES)


class HandoverRepository(Repository):
    """Handovers, their transitions and notes (see the module docstring)."""

    async def open(  # noqa: PLR0913 - keyword-only: what a handover starts with
        self,
        tenant_id: str,
        *,
        bot_id: str,
        conversation_id: str,
        reason: str,
        team: str | None,
        summary: Mapping[str, Any],
        wait_until: datetime | None,
        first_response_due: datetime | None,
        resolution_due: datetime | None,
    ) -> tuple[HandoverRecord, bool]:
        """The conversation's open handover, created ``waiting`` when there is none; and whether it is new."""
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO handovers (tenant_id, bot_id, conversation_id, reason, team, summary, wait_until, "
                "first_response_due, resolution_due) SELECT c.tenant_id, c.bot_id, c.id, %s, %s, %s, %s, %s, %s "
                "FROM conversations c WHERE c.tenant_id = %s AND c.id = %s AND c.bot_id = %s "
                "ON CONFLICT (conversation_id) WHERE status IN ('waiting', 'assigned', 'with_agent') DO NOTHING "
                "RETURNING *",
                (reason, team, json.dumps(dict(summary), default=str), wait_until, first_response_due, resolution_due,
                 as_uuid(tenant_id), as_uuid(conversation_id), as_uuid(bot_id)),
            )  # fmt: skip
            row = await cur.fetchone()
            if row is not None:
                await conn.execute(
                    "INSERT INTO handover_transitions (tenant_id, handover_id, from_status, to_status, detail) "
                    "VALUES (%s, %s, NULL, 'waiting', %s)",
                    (row["tenant_id"], row["id"], json.dumps({"reason": reason, "team": team})),
                )
                return to_struct(HandoverRecord, row), True
        existing = await self.open_of(tenant_id, conversation_id)
        if existing is None:
            raise LookupError(f"conversation {conversation_id} of bot {bot_id} not found")
        return existing, False

    async def get(self, tenant_id: str, handover_id: str) -> HandoverRecord | None:
        """One of the tenant's handovers."""
        row = await self._one(
            "SELECT * FROM handovers WHERE tenant_id = %s AND id = %s", (as_uuid(tenant_id), as_uuid(handover_id))
        )
        return to_struct(HandoverRecord, row) if row else None

    async def open_of(self, tenant_id: str, conversation_id: str) -> HandoverRecord | None:
        """The conversation's open handover, if any."""
        row = await self._one(
            "SELECT * FROM handovers WHERE tenant_id = %s AND conversation_id = %s AND status = ANY(%s)",
            (as_uuid(tenant_id), as_uuid(conversation_id), _OPEN),
        )
        return to_struct(HandoverRecord, row) if row else None

    async def list_all(
        self,
        tenant_id: str,
        *,
        statuses: Collection[str] = (),
        team: str | None = None,
        agent_id: str | None = None,
        bot_id: str | None = None,
        resume_pending: bool = False,
        limit: int = 100,
    ) -> list[HandoverRecord]:
        """The tenant's handovers, oldest first (the queue's order), filtered by status, team, agent and bot.

        ``resume_pending``: only closed ones whose conversation the bot has not taken back yet.
        """
        rows = await self._all(
            "SELECT * FROM handovers WHERE tenant_id = %s AND (cardinality(%s::text[]) = 0 OR status = ANY(%s)) "
            "AND (%s::text IS NULL OR team = %s) AND (%s::uuid IS NULL OR agent_id = %s) "
            "AND (%s::uuid IS NULL OR bot_id = %s) "
            "AND (NOT %s OR (resumed_at IS NULL AND status = ANY(%s))) ORDER BY created_at, id LIMIT %s",
            (as_uuid(tenant_id), list(statuses), list(statuses), team, team, as_uuid(agent_id), as_uuid(agent_id),
             as_uuid(bot_id), as_uuid(bot_id), resume_pending, list(CLOSED_STATUSES), limit),
        )  # fmt: skip
        return [to_struct(HandoverRecord, r) for r in rows]

    async def move(  # noqa: PLR0913 - keyword-only: the conditions of one move
        self,
        tenant_id: str,
        handover_id: str,
        to: HandoverStatus,
        *,
        allowed: Collection[HandoverStatus],
        actor: str | None = None,
        own: bool = False,
        take: bool = False,
        note: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Moved:
        """Move a handover to ``to`` if its status is one of ``allowed``; audited in the same transaction.

        ``own``: only when its agent is ``actor`` (or it has none and ``take``); ``take``: ``actor``
        becomes its agent. A handover in ``to`` already, with the same agent, is not moved again
        (``moved`` is false, the handover is returned).
        """
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT * FROM handovers WHERE tenant_id = %s AND id = %s FOR UPDATE",
                (as_uuid(tenant_id), as_uuid(handover_id)),
            )
            row = await cur.fetchone()
            if row is None:
                return Moved(None, None, False)
            current = to_struct(HandoverRecord, row)
            mine = current.agent_id is not None and current.agent_id == actor
            fits = current.status in allowed and (not own or mine or (take and current.agent_id is None))
            if current.status == to and (not take or mine):
                return Moved(current, current.status, False)
            if not fits:
                return Moved(current, current.status, False)
            closing = to in CLOSED_STATUSES
            cur = await conn.execute(
                "UPDATE handovers SET status = %s, agent_id = CASE WHEN %s THEN %s::uuid ELSE agent_id END, "
                "assigned_at = CASE WHEN %s THEN now() ELSE assigned_at END, "
                "closed_at = CASE WHEN %s THEN now() ELSE closed_at END, note = coalesce(%s, note), "
                "resumed_at = CASE WHEN %s THEN NULL ELSE resumed_at END "
                "WHERE tenant_id = %s AND id = %s RETURNING *",
                (to, take, as_uuid(actor), take and not mine, closing, note, closing, as_uuid(tenant_id),
                 as_uuid(handover_id)),
            )  # fmt: skip
            updated = await cur.fetchone()
            assert updated is not None
            if take:
                await conn.execute(
                    "UPDATE agents SET last_assigned_at = now() WHERE tenant_id = %s AND id = %s",
                    (as_uuid(tenant_id), as_uuid(actor)),
                )
            await conn.execute(
                "INSERT INTO handover_transitions (tenant_id, handover_id, from_status, to_status, agent_id, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (updated["tenant_id"], updated["id"], current.status, to, as_uuid(actor),
                 json.dumps({**(detail or {}), **({"note": note} if note else {})})),
            )  # fmt: skip
            return Moved(to_struct(HandoverRecord, updated), current.status, True)

    async def assign_next(self, tenant_id: str, *, away_after: float) -> tuple[HandoverRecord, str] | None:
        """Assign the oldest waiting handover that an available agent can take; the handover and its agent.

        The agent is the one of the handover's team (any agent for a handover without a team)
        who is available (a heartbeat within ``away_after`` seconds), below its capacity, with
        the fewest open handovers (then the longest since its last assignment). One assignment
        of a tenant at a time across processes (a transaction-scoped advisory lock), so no
        agent is ever given more than its capacity.
        """
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('botloom-desk:' || %s::text, 0))", (str(tenant_id),)
            )
            cur = await conn.execute(
                "SELECT h.id AS handover_id, a.id AS agent_id FROM handovers h CROSS JOIN LATERAL ("
                "  SELECT a.id, a.capacity, a.last_assigned_at, (SELECT count(*) FROM handovers o "
                "    WHERE o.tenant_id = a.tenant_id AND o.agent_id = a.id AND o.status IN ('assigned', 'with_agent'))"
                "    AS load FROM agents a WHERE a.tenant_id = h.tenant_id AND a.presence = 'available' "
                "    AND a.last_seen_at > now() - make_interval(secs => %s) "
                "    AND (h.team IS NULL OR h.team = ANY(a.teams))"
                ") a WHERE h.tenant_id = %s AND h.status = 'waiting' AND a.load < a.capacity "
                "ORDER BY h.created_at, h.id, a.load, a.last_assigned_at NULLS FIRST, a.id LIMIT 1",
                (away_after, as_uuid(tenant_id)),
            )
            pick = await cur.fetchone()
            if pick is None:
                return None
            cur = await conn.execute(
                "UPDATE handovers SET status = 'assigned', agent_id = %s, assigned_at = now() "
                "WHERE tenant_id = %s AND id = %s AND status = 'waiting' RETURNING *",
                (pick["agent_id"], as_uuid(tenant_id), pick["handover_id"]),
            )
            row = await cur.fetchone()
            if row is None:  # pragma: no cover - the row is ours under the lock
                return None
            await conn.execute(
                "UPDATE agents SET last_assigned_at = now() WHERE tenant_id = %s AND id = %s",
                (as_uuid(tenant_id), pick["agent_id"]),
            )
            await conn.execute(
                "INSERT INTO handover_transitions (tenant_id, handover_id, from_status, to_status, agent_id, detail) "
                "VALUES (%s, %s, 'waiting', 'assigned', %s, '{\"by\": \"routing\"}')",
                (row["tenant_id"], row["id"], pick["agent_id"]),
            )
            return to_struct(HandoverRecord, row), str(pick["agent_id"])

    async def unassign(self, tenant_id: str, agent_id: str, *, by: str = "presence") -> list[str]:
        """Put the agent's assigned (not yet claimed) handovers back in the queue; their ids.

        ``by`` says why in each transition's detail: ``presence`` (the agent went away),
        ``agent_deleted``.
        """
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE handovers SET status = 'waiting', agent_id = NULL WHERE tenant_id = %s AND agent_id = %s "
                "AND status = 'assigned' RETURNING id, tenant_id",
                (as_uuid(tenant_id), as_uuid(agent_id)),
            )
            rows = await cur.fetchall()
            for row in rows:
                await conn.execute(
                    "INSERT INTO handover_transitions (tenant_id, handover_id, from_status, to_status, agent_id, "
                    "detail) VALUES (%s, %s, 'assigned', 'waiting', %s, %s)",
                    (row["tenant_id"], row["id"], as_uuid(agent_id), json.dumps({"by": by})),
                )
        return [str(r["id"]) for r in rows]

    async def responded(self, tenant_id: str, handover_id: str) -> bool:
        """Record the agent's first response (once); whether this was it."""
        row = await self._one(
            "UPDATE handovers SET first_response_at = now() WHERE tenant_id = %s AND id = %s "
            "AND first_response_at IS NULL RETURNING id",
            (as_uuid(tenant_id), as_uuid(handover_id)),
        )
        return row is not None

    async def resumed(self, tenant_id: str, handover_id: str) -> bool:
        """Record that the bot took the closed handover's conversation back (once); whether this was it."""
        row = await self._one(
            "UPDATE handovers SET resumed_at = now() WHERE tenant_id = %s AND id = %s AND resumed_at IS NULL "
            "RETURNING id",
            (as_uuid(tenant_id), as_uuid(handover_id)),
        )
        return row is not None

    async def resume_failed(
        self, tenant_id: str, handover_id: str, error: str | None = None, *, count: bool = True
    ) -> int:
        """Record a failed resume of the closed handover, with its error code; how many have counted so far.

        ``count=False``: an agent's "Retry now", which keeps the error but does not bring the give-back closer.
        """
        row = await self._one(
            "UPDATE handovers SET resume_attempts = resume_attempts + %s, resume_error = %s "
            "WHERE tenant_id = %s AND id = %s RETURNING resume_attempts",
            (int(count), error, as_uuid(tenant_id), as_uuid(handover_id)),
        )
        return int(row["resume_attempts"]) if row else 0

    async def take_back(
        self, tenant_id: str, handover_id: str, agent_id: str, detail: Mapping[str, Any] | None = None
    ) -> HandoverRecord | None:
        """Reopen a closed handover whose resume is still pending, assigned to the agent; ``None``: not one.

        Its pending resume is cancelled (an open handover has none), its close forgotten (``closed_at``,
        the failed resumes and their error); audited as a transition in the same transaction.
        """
        tenant, handover, agent = as_uuid(tenant_id), as_uuid(handover_id), as_uuid(agent_id)
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT h.status FROM handovers h JOIN agents a ON a.tenant_id = h.tenant_id AND a.id = %s "
                "WHERE h.tenant_id = %s AND h.id = %s AND h.status = ANY(%s) AND h.resumed_at IS NULL FOR UPDATE OF h",
                (agent, tenant, handover, list(CLOSED_STATUSES)),
            )
            found = await cur.fetchone()
            if found is None:
                return None
            to: HandoverStatus = "assigned"
            cur = await conn.execute(
                "UPDATE handovers SET status = %s, agent_id = %s, assigned_at = now(), closed_at = NULL, "
                "resume_attempts = 0, resume_error = NULL WHERE tenant_id = %s AND id = %s RETURNING *",
                (to, agent, tenant, handover),
            )
            updated = await cur.fetchone()
            assert updated is not None
            await conn.execute(
                "INSERT INTO handover_transitions (tenant_id, handover_id, from_status, to_status, agent_id, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (tenant, handover, found["status"], to, agent, json.dumps(dict(detail or {}))),
            )
            return to_struct(HandoverRecord, updated)

    async def transitions(self, tenant_id: str, handover_id: str) -> list[Transition]:
        """The handover's audited transitions, in order."""
        rows = await self._all(
            "SELECT from_status, to_status, agent_id, detail, at FROM handover_transitions "
            "WHERE tenant_id = %s AND handover_id = %s ORDER BY id",
            (as_uuid(tenant_id), as_uuid(handover_id)),
        )
        return [to_struct(Transition, r) for r in rows]

    async def add_note(self, tenant_id: str, handover_id: str, agent_id: str | None, text: str) -> Note | None:
        """A private note on one of the tenant's handovers."""
        row = await self._one(
            "INSERT INTO handover_notes (tenant_id, handover_id, agent_id, text) SELECT tenant_id, id, %s, %s "
            "FROM handovers WHERE tenant_id = %s AND id = %s RETURNING *",
            (as_uuid(agent_id), text, as_uuid(tenant_id), as_uuid(handover_id)),
        )
        return to_struct(Note, row) if row else None

    async def notes(self, tenant_id: str, handover_id: str) -> list[Note]:
        """The handover's notes, oldest first."""
        rows = await self._all(
            "SELECT * FROM handover_notes WHERE tenant_id = %s AND handover_id = %s ORDER BY created_at, id",
            (as_uuid(tenant_id), as_uuid(handover_id)),
        )
        return [to_struct(Note, r) for r in rows]

    async def last_inbound_at(self, tenant_id: str, conversation_id: str) -> datetime | None:
        """When the end user last wrote in the conversation (WhatsApp's 24-hour window starts there)."""
        row = await self._one(
            "SELECT max(created_at) AS at FROM messages WHERE tenant_id = %s AND conversation_id = %s "
            "AND direction = 'inbound'",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return row["at"] if row else None

    async def stats(self, tenant_id: str, *, bot_id: str | None = None) -> list[dict[str, Any]]:
        """Per bot and team: handovers waiting and open, resolved, returned, timed out; time to first response."""
        return await self._all(
            "SELECT bot_id::text AS bot_id, coalesce(team, '') AS team, "
            "count(*) FILTER (WHERE status = 'waiting') AS waiting, "
            "count(*) FILTER (WHERE status IN ('assigned', 'with_agent')) AS with_agents, "
            "count(*) FILTER (WHERE status = 'resolved') AS resolved, "
            "count(*) FILTER (WHERE status = 'returned_to_bot') AS returned_to_bot, "
            "count(*) FILTER (WHERE status = 'timed_out_to_bot') AS timed_out_to_bot, "
            "avg(extract(epoch FROM first_response_at - created_at)) AS first_response_seconds_avg, "
            "max(extract(epoch FROM first_response_at - created_at)) AS first_response_seconds_max "
            "FROM handovers WHERE tenant_id = %s AND (%s::uuid IS NULL OR bot_id = %s) "
            "GROUP BY bot_id, team ORDER BY bot_id, team",
            (as_uuid(tenant_id), as_uuid(bot_id), as_uuid(bot_id)),
        )

    # -- sweeps over every tenant (the desk's cron job) ---------------------------------------

    async def timed_out(self, limit: int = 100) -> list[tuple[str, str]]:
        """``(tenant_id, handover_id)`` of handovers no agent took before their wait ended (every tenant)."""
        rows = await self._all(
            "SELECT tenant_id, id FROM handovers WHERE status IN ('waiting', 'assigned') AND wait_until < now() "
            "ORDER BY wait_until LIMIT %s",
            (limit,),
        )
        return [(str(r["tenant_id"]), str(r["id"])) for r in rows]

    async def resume_pending(self, limit: int = 100) -> list[HandoverRecord]:
        """Closed handovers whose conversation the bot has not taken back yet (a resume failed), oldest first."""
        rows = await self._all(
            "SELECT * FROM handovers WHERE resumed_at IS NULL AND status = ANY(%s) ORDER BY closed_at LIMIT %s",
            (list(CLOSED_STATUSES), limit),
        )
        return [to_struct(HandoverRecord, r) for r in rows]

    async def missed_deadlines(self) -> list[Alert]:
        """Open handovers past a first-response or resolution deadline, each reported once (every tenant)."""
        alerts: list[Alert] = []
        for kind, due, done in (
            ("first_response", "first_response_due", "first_response_at IS NULL"),
            ("resolution", "resolution_due", "true"),
        ):
            rows = await self._all(
                f"UPDATE handovers SET {kind}_alerted = true WHERE status = ANY(%s) AND {due} < now() "  # noqa: S608
                f"AND NOT {kind}_alerted AND {done} "
                f"RETURNING tenant_id, id, conversation_id, bot_id, team, {due} AS due",
                (_OPEN,),
            )
            alerts += [
                Alert(
                    tenant_id=str(r["tenant_id"]),
                    handover_id=str(r["id"]),
                    conversation_id=str(r["conversation_id"]),
                    bot_id=str(r["bot_id"]),
                    team=r["team"],
                    kind=kind,  # type: ignore[arg-type]
                    due=r["due"],
                )
                for r in rows
            ]
        return alerts

    async def waiting_counts(self) -> list[dict[str, Any]]:
        """Handovers waiting per tenant, bot and team (every tenant: the metrics gauge)."""
        return await self._all(
            "SELECT bot_id::text AS bot_id, coalesce(team, '') AS team, count(*) AS waiting FROM handovers "
            "WHERE status = 'waiting' GROUP BY bot_id, team",
            (),
        )


def statuses_of(values: Sequence[str]) -> list[HandoverStatus]:
    """``values`` that are handover statuses (a ``ValueError`` naming the first that is not)."""
    for value in values:
        if value not in HANDOVER_STATUSES:
            raise ValueError(f"unknown handover status {value!r} (one of {', '.join(HANDOVER_STATUSES)})")
    return [v for v in HANDOVER_STATUSES if v in values]


__all__ = [
    "CLOSED_STATUSES",
    "HANDOVER_STATUSES",
    "OPEN_STATUSES",
    "Alert",
    "HandoverRecord",
    "HandoverRepository",
    "HandoverStatus",
    "Moved",
    "Note",
    "Transition",
    "statuses_of",
]
