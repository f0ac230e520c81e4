"""Tenants' monthly budgets, their month-to-date spend, and the alerts each month claims once (migration 0020)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

from botloom.core.storage.repositories.base import Repository, as_uuid

OnExhausted = Literal["offline", "handover", "refuse"]
"""What a tenant's turns do once its month's spend reaches the budget (docs/cost-control.md)."""
AlertKind = Literal["alert", "exhausted"]


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's monthly budget."""

    tenant_id: str
    monthly_usd: Decimal
    alert_at: list[float]
    on_exhausted: OnExhausted
    created_at: dt.datetime
    updated_at: dt.datetime


class BudgetState(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's budget (``None``: none set) and what the calendar month (UTC) ``month`` has cost so far."""

    budget: Budget | None
    month: dt.date
    spent_usd: Decimal


def month_of(moment: dt.datetime) -> dt.date:
    """The first day of ``moment``'s calendar month in UTC."""
    utc = moment.astimezone(dt.UTC)
    return dt.date(utc.year, utc.month, 1)


_BUDGET = "tenant_id, monthly_usd, alert_at, on_exhausted, created_at, updated_at"


def _budget(row: dict[str, object]) -> Budget:
    return Budget(
        tenant_id=str(row["tenant_id"]),
        monthly_usd=Decimal(str(row["monthly_usd"])),
        alert_at=[float(x) for x in row["alert_at"] or []],  # type: ignore[attr-defined]
        on_exhausted=row["on_exhausted"],  # type: ignore[arg-type]
        created_at=row["created_at"],  # type: ignore[arg-type]
        updated_at=row["updated_at"],  # type: ignore[arg-type]
    )


class BudgetRepository(Repository):
    """Tenants' budgets, month-to-date spend and claimed alerts (see the module docstring)."""

    async def get(self, tenant_id: str) -> Budget | None:
        """The tenant's budget, or ``None``."""
        row = await self._one(f"SELECT {_BUDGET} FROM tenant_budgets WHERE tenant_id = %s", (as_uuid(tenant_id),))  # noqa: S608
        return _budget(row) if row is not None else None

    async def put(
        self, tenant_id: str, *, monthly_usd: Decimal, alert_at: list[float], on_exhausted: OnExhausted
    ) -> Budget | None:
        """Set (or replace) the tenant's budget; ``None`` when the tenant does not exist."""
        row = await self._one(
            f"INSERT INTO tenant_budgets (tenant_id, monthly_usd, alert_at, on_exhausted) "  # noqa: S608
            "SELECT id, %(usd)s, %(alerts)s, %(mode)s FROM tenants WHERE id = %(tenant)s "
            "ON CONFLICT (tenant_id) DO UPDATE SET monthly_usd = EXCLUDED.monthly_usd, "
            "alert_at = EXCLUDED.alert_at, on_exhausted = EXCLUDED.on_exhausted, updated_at = now() "
            f"RETURNING {_BUDGET}",
            {"tenant": as_uuid(tenant_id), "usd": monthly_usd, "alerts": list(alert_at), "mode": on_exhausted},
        )
        return _budget(row) if row is not None else None

    async def delete(self, tenant_id: str) -> bool:
        """Remove the tenant's budget; whether there was one."""
        row = await self._one(
            "DELETE FROM tenant_budgets WHERE tenant_id = %s RETURNING tenant_id", (as_uuid(tenant_id),)
        )
        return row is not None

    async def budgeted(self) -> frozenset[str]:
        """The ids of every tenant that has a budget (each process reads it once per refresh, for every tenant)."""
        rows = await self._all("SELECT tenant_id FROM tenant_budgets", ())
        return frozenset(str(row["tenant_id"]) for row in rows)

    async def state(self, tenant_id: str, month: dt.date) -> BudgetState:
        """The tenant's budget and ``month``'s spend so far, in one statement (the turn path's periodic read)."""
        row = await self._one(
            "SELECT b.tenant_id, b.monthly_usd, b.alert_at, b.on_exhausted, b.created_at, b.updated_at, "
            "coalesce(s.cost_usd, 0) AS spent FROM (SELECT %(tenant)s::uuid AS id) t "
            "LEFT JOIN tenant_budgets b ON b.tenant_id = t.id "
            "LEFT JOIN tenant_spend s ON s.tenant_id = t.id AND s.month = %(month)s",
            {"tenant": as_uuid(tenant_id), "month": month},
        )
        assert row is not None
        budget = _budget(row) if row["tenant_id"] is not None else None
        return BudgetState(budget=budget, month=month, spent_usd=Decimal(str(row["spent"])))

    async def claim_alert(self, tenant_id: str, month: dt.date, kind: AlertKind, threshold_usd: Decimal) -> bool:
        """Claim the month's alert ``kind`` at ``threshold_usd`` for the tenant: ``True`` for exactly one caller."""
        row = await self._one(
            "INSERT INTO budget_alerts (tenant_id, month, kind, threshold_usd) "
            "SELECT id, %(month)s, %(kind)s, %(usd)s FROM tenants WHERE id = %(tenant)s "
            "ON CONFLICT DO NOTHING RETURNING tenant_id",
            {"tenant": as_uuid(tenant_id), "month": month, "kind": kind, "usd": threshold_usd},
        )
        return row is not None


__all__ = ["AlertKind", "Budget", "BudgetRepository", "BudgetState", "OnExhausted", "month_of"]
