"""The audit log: who changed what, when, in which tenant (``docs/audit.md``).

Rows are appended in the transaction of the change they record (``Database.transaction``,
or the ``conn`` a caller passes), listed newest first by keyset, and deleted only when
older than the retention setting. Nothing updates a row (a trigger of migration 0021
refuses it). ``botloom.runtime.audit.record`` is the function the rest of botloom calls.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import msgspec

from botloom.core.storage.database import Connection
from botloom.core.storage.repositories.base import Repository, as_uuid
from botloom.core.storage.repositories.events import storable


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded administrative action."""

    id: int
    at: dt.datetime
    tenant_id: str | None
    principal_kind: str
    """``operator``, ``api_key``, ``agent`` or ``system``."""
    principal_id: str | None
    """The API key's or the agent's id (never a secret); ``None`` for the operator and botloom itself."""
    action: str
    target_kind: str
    target_id: str | None
    request_id: str | None
    details: dict[str, Any]


_COLUMNS = "id, at, tenant_id, principal_kind, principal_id, action, target_kind, target_id, request_id, details"


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=row["at"],
        tenant_id=None if row["tenant_id"] is None else str(row["tenant_id"]),
        principal_kind=row["principal_kind"],
        principal_id=row["principal_id"],
        action=row["action"],
        target_kind=row["target_kind"],
        target_id=row["target_id"],
        request_id=row["request_id"],
        details=dict(row["details"]),
    )


class AuditRepository(Repository):
    """The ``audit_log`` table (see the module's docstring)."""

    async def append(  # noqa: PLR0913 - one keyword per column
        self,
        *,
        tenant_id: str | None,
        principal_kind: str,
        principal_id: str | None,
        action: str,
        target_kind: str,
        target_id: str | None,
        request_id: str | None,
        details: Mapping[str, Any],
        conn: Connection | None = None,
    ) -> int:
        """Append one row; its id. With ``conn``, on that connection (in its transaction).

        Without it, on :meth:`Database.connection`, which joins a ``Database.transaction()``
        block the caller is in. A failure raises, so the caller's transaction rolls back.
        """
        params = (
            as_uuid(tenant_id) if tenant_id is not None else None,
            principal_kind,
            principal_id,
            action,
            target_kind,
            target_id,
            request_id,
            json.dumps(storable(dict(details)), default=str),
        )
        sql = (
            "INSERT INTO audit_log (tenant_id, principal_kind, principal_id, action, target_kind, target_id, "
            "request_id, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
        )
        if conn is not None:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
        else:
            row = await self._one(sql, params)
        assert row is not None
        return int(row["id"])

    async def page(
        self,
        tenant_id: str | None,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        action: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """Rows of the tenant (every tenant's and the deployment's for ``None``), newest first, at most ``limit``.

        ``since`` inclusive, ``until`` exclusive; ``action`` exact, or a family with a
        trailing ``.*`` (``bot.*``); ``before``: only rows with a smaller id (the cursor).
        """
        tenant = as_uuid(tenant_id)
        if tenant is None and tenant_id is not None:
            return []
        prefix = action[:-1] if action is not None and action.endswith(".*") else None
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM audit_log WHERE (%(tenant)s::uuid IS NULL OR tenant_id = %(tenant)s) "  # noqa: S608
            "AND (%(since)s::timestamptz IS NULL OR at >= %(since)s) "
            "AND (%(until)s::timestamptz IS NULL OR at < %(until)s) "
            "AND (%(action)s::text IS NULL OR action = %(action)s) "
            "AND (%(prefix)s::text IS NULL OR starts_with(action, %(prefix)s)) "
            "AND (%(before)s::bigint IS NULL OR id < %(before)s) ORDER BY id DESC LIMIT %(limit)s",
            {
                "tenant": tenant,
                "since": since,
                "until": until,
                "action": None if prefix is not None else action,
                "prefix": prefix,
                "before": before,
                "limit": limit,
            },
        )
        return [_entry(r) for r in rows]

    async def prune(self, days: int, batch: int = 5000) -> int:
        """Delete up to ``batch`` rows older than ``days`` days; how many."""
        row = await self._one(
            "WITH old AS (SELECT id FROM audit_log WHERE at < now() - %s * interval '1 day' ORDER BY id LIMIT %s), "
            "gone AS (DELETE FROM audit_log a USING old WHERE a.id = old.id RETURNING 1) "
            "SELECT count(*) AS n FROM gone",
            (days, batch),
        )
        return int(row["n"]) if row else 0


__all__ = ["AuditEntry", "AuditRepository"]
