"""A tenant's webhook endpoints (their secrets encrypted) and the deliveries of events to them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from botloom.core.crypto import Cipher
from botloom.core.storage.database import Database
from botloom.core.storage.repositories.base import Repository, as_uuid


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook endpoint as the API shows it (never its secret)."""

    id: str
    url: str
    kinds: list[str]
    """The event kinds it receives; empty: every kind."""
    description: str
    active: bool
    created_at: dt.datetime


class PendingDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """The next delivery of a stream to an endpoint, with what sending it needs."""

    endpoint_id: str
    event_id: str
    tenant_id: str
    stream: str
    sequence: int
    attempts: int
    next_attempt_at: dt.datetime
    url: str
    secret: str
    envelope: dict[str, Any]


_ENDPOINT_COLUMNS = "id, url, kinds, description, active, created_at"


def _endpoint(row: dict[str, Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=str(row["id"]),
        url=row["url"],
        kinds=list(row["kinds"]),
        description=row["description"],
        active=row["active"],
        created_at=row["created_at"],
    )


class WebhookRepository(Repository):
    """A tenant's webhook endpoints and the deliveries of its events to them."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        super().__init__(db)
        self.cipher = cipher

    async def create(
        self, tenant_id: str, url: str, secret: str, *, kinds: Sequence[str] = (), description: str = ""
    ) -> WebhookEndpoint | None:
        """Add an endpoint (its secret stored encrypted); ``None`` when the tenant does not exist."""
        row = await self._one(
            f"INSERT INTO webhook_endpoints (tenant_id, url, secret, kinds, description) "  # noqa: S608
            f"SELECT t.id, %s, %s, %s, %s FROM tenants t WHERE t.id = %s RETURNING {_ENDPOINT_COLUMNS}",
            (url, self.cipher.encrypt(secret.encode()), list(kinds), description, as_uuid(tenant_id)),
        )
        return None if row is None else _endpoint(row)

    async def of_tenant(self, tenant_id: str) -> list[WebhookEndpoint]:
        """The tenant's endpoints, oldest first."""
        rows = await self._all(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s ORDER BY created_at, id",  # noqa: S608
            (as_uuid(tenant_id),),
        )
        return [_endpoint(r) for r in rows]

    async def get(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """One of the tenant's endpoints."""
        row = await self._one(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",  # noqa: S608
            (as_uuid(tenant_id), as_uuid(endpoint_id)),
        )
        return None if row is None else _endpoint(row)

    async def count(self, tenant_id: str) -> int:
        """How many endpoints the tenant has."""
        row = await self._one("SELECT count(*) AS n FROM webhook_endpoints WHERE tenant_id = %s", (as_uuid(tenant_id),))
        return int(row["n"]) if row else 0

    async def delete(self, tenant_id: str, endpoint_id: str) -> bool:
        """Remove an endpoint of the tenant (and its pending deliveries); whether it existed."""
        row = await self._one(
            "DELETE FROM webhook_endpoints WHERE tenant_id = %s AND id = %s RETURNING id",
            (as_uuid(tenant_id), as_uuid(endpoint_id)),
        )
        return row is not None

    async def next_pending(self, endpoint_id: str, stream: str) -> PendingDelivery | None:
        """The stream's first undelivered event for the endpoint (lowest sequence), if any."""
        row = await self._one(
            "SELECT d.endpoint_id, d.event_id, d.tenant_id, d.stream, d.sequence, d.attempts, d.next_attempt_at, "
            "w.url, w.secret, e.position, e.conversation_id, e.kind, e.data, e.created_at "
            "FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.tenant_id = d.tenant_id "
            "JOIN events e ON e.id = d.event_id AND e.tenant_id = d.tenant_id "
            "WHERE d.endpoint_id = %s AND d.stream = %s AND d.status = 'pending' AND w.active "
            "ORDER BY d.sequence LIMIT 1",
            (as_uuid(endpoint_id), stream),
        )
        if row is None:
            return None
        envelope = {
            "id": str(row["event_id"]),
            "kind": row["kind"],
            "tenant_id": str(row["tenant_id"]),
            "conversation_id": None if row["conversation_id"] is None else str(row["conversation_id"]),
            "sequence": int(row["sequence"]),
            "position": int(row["position"]),
            "created_at": row["created_at"].isoformat(),
            "data": dict(row["data"]),
        }
        return PendingDelivery(
            endpoint_id=str(row["endpoint_id"]),
            event_id=str(row["event_id"]),
            tenant_id=str(row["tenant_id"]),
            stream=row["stream"],
            sequence=int(row["sequence"]),
            attempts=int(row["attempts"]),
            next_attempt_at=row["next_attempt_at"],
            url=row["url"],
            secret=self.cipher.decrypt(bytes(row["secret"])).decode(),
            envelope=envelope,
        )

    async def delivered(self, endpoint_id: str, event_id: str) -> None:
        """Record a delivery the endpoint accepted."""
        await self._one(
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, finished_at = now(), "
            "last_error = NULL WHERE endpoint_id = %s AND event_id = %s RETURNING 1",
            (as_uuid(endpoint_id), as_uuid(event_id)),
        )

    async def failed(self, endpoint_id: str, event_id: str, error: str, *, retry_in: float | None) -> None:
        """Record a failed attempt: tried again in ``retry_in`` seconds, or given up (``None``)."""
        await self._one(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = %(error)s, "
            "status = CASE WHEN %(retry)s::float8 IS NULL THEN 'failed' ELSE 'pending' END, "
            "finished_at = CASE WHEN %(retry)s::float8 IS NULL THEN now() END, "
            "next_attempt_at = now() + coalesce(%(retry)s::float8, 0) * interval '1 second' "
            "WHERE endpoint_id = %(endpoint)s AND event_id = %(event)s RETURNING 1",
            {"error": error[:500], "retry": retry_in, "endpoint": as_uuid(endpoint_id), "event": as_uuid(event_id)},
        )

    async def overdue(self, older_than: float, limit: int = 500) -> list[tuple[str, str]]:
        """``(endpoint id, stream)`` of streams with a pending delivery due for ``older_than`` seconds."""
        rows = await self._all(
            "SELECT DISTINCT d.endpoint_id, d.stream FROM webhook_deliveries d JOIN webhook_endpoints w "
            "ON w.id = d.endpoint_id WHERE d.status = 'pending' AND w.active "
            "AND d.next_attempt_at < now() - %s * interval '1 second' LIMIT %s",
            (older_than, limit),
        )
        return [(str(r["endpoint_id"]), r["stream"]) for r in rows]

    async def deliveries(self, tenant_id: str, endpoint_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest deliveries to one of the tenant's endpoints (status, attempts, last error)."""
        rows = await self._all(
            "SELECT d.event_id, e.kind, e.conversation_id, d.sequence, d.status, d.attempts, d.last_error, "
            "d.next_attempt_at, d.finished_at FROM webhook_deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.tenant_id = %s AND d.endpoint_id = %s ORDER BY e.position DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(endpoint_id), limit),
        )
        return [
            {
                **r,
                "event_id": str(r["event_id"]),
                "conversation_id": None if r["conversation_id"] is None else str(r["conversation_id"]),
            }
            for r in rows
        ]
