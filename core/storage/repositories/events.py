"""The events outbox: what botloom reports to a tenant (the agent desk's transitions), in order per stream.

An event is stored with one ``webhook_deliveries`` row for every active webhook
endpoint of its tenant that wants its kind, in one transaction, so an event is
never stored without its deliveries nor delivered without being stored. Events
of one conversation form a *stream* numbered 1, 2, 3... (``sequence``); the
tenant's events without a conversation form the stream ``""``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from botloom.core.storage.repositories.base import Repository, as_uuid

TENANT_STREAM = ""
"""The stream of a tenant's events that belong to no conversation."""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event."""

    id: str
    """The event id: stable across every delivery attempt; receivers de-duplicate by it."""
    position: int
    """Orders a tenant's events for polling (``GET /api/v1/events?after=``)."""
    tenant_id: str
    conversation_id: str | None
    sequence: int
    """1, 2, 3... within the event's conversation (or within the tenant's events without one)."""
    kind: str
    data: dict[str, Any]
    created_at: dt.datetime

    def envelope(self) -> dict[str, Any]:
        """The event as webhooks, the polling API and the desk socket show it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "tenant_id": self.tenant_id,
            "conversation_id": self.conversation_id,
            "sequence": self.sequence,
            "position": self.position,
            "created_at": self.created_at.isoformat(),
            "data": self.data,
        }


_COLUMNS = "id, position, tenant_id, conversation_id, sequence, kind, data, created_at"


def _event(row: Mapping[str, Any]) -> Event:
    return Event(
        id=str(row["id"]),
        position=int(row["position"]),
        tenant_id=str(row["tenant_id"]),
        conversation_id=None if row["conversation_id"] is None else str(row["conversation_id"]),
        sequence=int(row["sequence"]),
        kind=row["kind"],
        data=dict(row["data"]),
        created_at=row["created_at"],
    )


def storable(value: Any) -> Any:
    """``value`` as PostgreSQL's ``jsonb`` takes it: NUL characters (which it refuses) become U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, Mapping):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


class EventRepository(Repository):
    """The events outbox (see the module's docstring)."""

    async def append(
        self,
        tenant_id: str,
        kind: str,
        data: Mapping[str, Any],
        *,
        conversation_id: str | None = None,
        notify: str | None = None,
        notice: Callable[[Event], str] | None = None,
    ) -> tuple[Event, list[str]] | None:
        """Store an event and its webhook deliveries; the event and the ids of the endpoints that want it.

        ``None`` when the tenant (or the conversation, in that tenant) does not
        exist. ``notify``: a PostgreSQL channel told ``notice(event)`` when the
        transaction commits (``LISTEN`` sees events of a stream in their order).
        """
        tenant = as_uuid(tenant_id)
        conversation = as_uuid(conversation_id) if conversation_id is not None else None
        if tenant is None or (conversation_id is not None and conversation is None):
            return None
        stream = str(conversation) if conversation is not None else TENANT_STREAM
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT 1 FROM tenants t WHERE t.id = %(tenant)s AND (%(conv)s::uuid IS NULL OR EXISTS "
                "(SELECT 1 FROM conversations c WHERE c.tenant_id = t.id AND c.id = %(conv)s))",
                {"tenant": tenant, "conv": conversation},
            )
            if await cur.fetchone() is None:
                return None
            # The stream's counter row stays locked until commit: events of one stream commit in order.
            cur = await conn.execute(
                "INSERT INTO event_streams (tenant_id, stream, last_sequence) VALUES (%s, %s, 1) "
                "ON CONFLICT (tenant_id, stream) DO UPDATE SET last_sequence = event_streams.last_sequence + 1 "
                "RETURNING last_sequence",
                (tenant, stream),
            )
            seq_row = await cur.fetchone()
            assert seq_row is not None
            cur = await conn.execute(
                f"INSERT INTO events (tenant_id, conversation_id, stream, sequence, kind, data) "  # noqa: S608
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    tenant,
                    conversation,
                    stream,
                    seq_row["last_sequence"],
                    kind,
                    json.dumps(storable(dict(data)), default=str),
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            event = _event(row)
            cur = await conn.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, tenant_id, stream, sequence) "
                "SELECT w.id, %(event)s, w.tenant_id, %(stream)s, %(seq)s FROM webhook_endpoints w "
                "WHERE w.tenant_id = %(tenant)s AND w.active AND (w.kinds = '{}' OR %(kind)s = ANY (w.kinds)) "
                "RETURNING endpoint_id",
                {
                    "event": as_uuid(event.id),
                    "stream": stream,
                    "seq": event.sequence,
                    "tenant": tenant,
                    "kind": kind,
                },
            )
            endpoints = [str(r["endpoint_id"]) for r in await cur.fetchall()]
            if notify is not None and notice is not None:
                await conn.execute("SELECT pg_notify(%s, %s)", (notify, notice(event)))
        return event, endpoints

    async def after(self, tenant_id: str | None, position: int, limit: int = 100) -> list[Event]:
        """The tenant's events (every tenant's for ``None``) after ``position``, oldest first, at most ``limit``.

        Only events whose transaction is older than every transaction still
        running are listed, so an event committed late never appears behind a
        position a poller has already passed.
        """
        tenant = as_uuid(tenant_id)
        if tenant is None and tenant_id is not None:
            return []
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM events WHERE (%s::uuid IS NULL OR tenant_id = %s) AND position > %s "  # noqa: S608
            "AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY position LIMIT %s",
            (tenant, tenant, position, limit),
        )
        return [_event(r) for r in rows]

    async def in_conversation(self, tenant_id: str, conversation_id: str, after: int, limit: int = 100) -> list[Event]:
        """The conversation's events with a sequence above ``after``, oldest first, at most ``limit``.

        Events of one conversation commit in the order of their sequence (its
        counter row is locked until commit), so a reader that keeps the last
        sequence it saw never skips one.
        """
        tenant, conversation = as_uuid(tenant_id), as_uuid(conversation_id)
        if tenant is None or conversation is None:
            return []
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM events WHERE tenant_id = %s AND stream = %s AND sequence > %s "  # noqa: S608
            "ORDER BY sequence LIMIT %s",
            (tenant, str(conversation), after, limit),
        )
        return [_event(r) for r in rows]

    async def last_in_conversation(self, tenant_id: str, conversation_id: str) -> Event | None:
        """The conversation's latest committed event, if any."""
        tenant, conversation = as_uuid(tenant_id), as_uuid(conversation_id)
        if tenant is None or conversation is None:
            return None
        row = await self._one(
            f"SELECT {_COLUMNS} FROM events WHERE tenant_id = %s AND stream = %s "  # noqa: S608
            "ORDER BY sequence DESC LIMIT 1",
            (tenant, str(conversation)),
        )
        return None if row is None else _event(row)

    async def prune(self, days: int, batch: int = 5000) -> int:
        """Delete up to ``batch`` events older than ``days`` days (their deliveries go with them); how many."""
        row = await self._one(
            "WITH old AS (SELECT id FROM events WHERE created_at < now() - %s * interval '1 day' LIMIT %s), "
            "gone AS (DELETE FROM events e USING old WHERE e.id = old.id RETURNING 1) SELECT count(*) AS n FROM gone",
            (days, batch),
        )
        return int(row["n"]) if row else 0

    async def get(self, tenant_id: str, event_id: str) -> Event | None:
        """One event of the tenant."""
        row = await self._one(
            f"SELECT {_COLUMNS} FROM events WHERE tenant_id = %s AND id = %s",  # noqa: S608
            (as_uuid(tenant_id), as_uuid(event_id)),
        )
        return None if row is None else _event(row)
