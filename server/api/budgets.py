"""``/api/v1/tenants/{tenant}/budget`` (the operator sets a tenant's monthly budget) and ``.../usage``.

The operator's token sets and removes budgets; a tenant's key reads its own budget and
usage (another tenant's is a 404, as everywhere). docs/cost-control.md describes what a
budget does on the turn path and how far it can overshoot.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request as HttpRequest
from litestar import delete, get, put
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.params import JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

from botloom.core.storage.repositories.budgets import Budget, month_of
from botloom.core.storage.repositories.usage import UsageGroup
from botloom.runtime.services import Services
from botloom.server.api.common import (
    READ_ERRORS,
    ApiController,
    TenantRef,
    check_request,
    integral,
    located,
    visible_tenant,
)
from botloom.server.api.schemas import Request
from botloom.server.auth import Principal, require_operator
from botloom.server.deps import PrincipalDep, ServicesDep

MAX_MONTHLY_USD = 1_000_000.0
"""The largest monthly budget (US dollars)."""
MAX_ALERTS = 5
"""Alert fractions one budget may have."""
MAX_DAYS = 366
"""The longest usage range, in days."""
OnExhausted = Literal["offline", "handover", "refuse"]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]
BUDGET_ERRORS = [*READ_ERRORS, PermissionDeniedException, ValidationException]


class BudgetIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant's monthly budget (a calendar month, UTC)."""

    monthly_usd: Annotated[float, msgspec.Meta(gt=0, le=MAX_MONTHLY_USD)]
    """US dollars the tenant's model calls may cost in a calendar month (UTC), at list prices."""
    alert_at: Annotated[list[Fraction], msgspec.Meta(max_length=MAX_ALERTS)] = msgspec.field(
        default_factory=lambda: [0.8, 0.95]
    )
    """Fractions of the budget (ascending, each in (0, 1]) whose crossing emits ``budget.alert`` once a month."""
    on_exhausted: OnExhausted = "offline"
    """What turns do once the month's spend reaches the budget: answer with the ``offline`` engine, ``handover``
    to a person, or ``refuse`` with a fixed polite message."""


class BudgetOut(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's monthly budget."""

    tenant_id: str
    monthly_usd: float
    alert_at: list[float]
    on_exhausted: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, budget: Budget) -> BudgetOut:
        """The answer for a stored budget."""
        return cls(
            tenant_id=budget.tenant_id,
            monthly_usd=float(budget.monthly_usd),
            alert_at=list(budget.alert_at),
            on_exhausted=budget.on_exhausted,
            created_at=budget.created_at,
            updated_at=budget.updated_at,
        )


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens and cost of one day, bot or model (or of the whole range)."""

    key: str | None
    """The day (``YYYY-MM-DD``, UTC), the bot's id (``null``: a deleted bot) or the model; ``null`` in the total."""
    label: str | None
    """The bot's slug when grouped by bot, else the key."""
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    """US dollars of the priced calls, at the list prices when each call was recorded."""
    unpriced_calls: int
    """Calls whose model had no price (``BOTLOOM_MODEL_PRICES``): their tokens are counted, not their cost."""

    @classmethod
    def of(cls, group: UsageGroup) -> UsageRow:
        """The answer for one group."""
        return cls(
            key=group.key,
            label=group.label,
            calls=group.calls,
            input_tokens=group.input_tokens,
            output_tokens=group.output_tokens,
            cost_usd=float(group.cost_usd),
            unpriced_calls=group.unpriced_calls,
        )


class MonthToDate(msgspec.Struct, frozen=True, kw_only=True):
    """The current calendar month's (UTC) spend against the budget."""

    month: str
    """``YYYY-MM``."""
    spent_usd: float
    monthly_usd: float | None
    """``null``: no budget."""
    remaining_usd: float | None
    used: float | None
    """``spent_usd / monthly_usd``."""
    exhausted: bool
    """Whether turns now do what ``on_exhausted`` says (within the refresh of each process)."""
    on_exhausted: str | None


class UsageOut(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's usage over a range of days, grouped, with the month-to-date spend against the budget."""

    tenant_id: str
    from_: dt.date = msgspec.field(name="from")
    to: dt.date
    group_by: str
    groups: list[UsageRow]
    total: UsageRow
    month_to_date: MonthToDate


def _errors(body: Any) -> list[dict[str, str]]:
    """Every bad field of a budget's body (msgspec stops at the first; a 400 here names each)."""
    if not isinstance(body, dict):
        return [{"key": "body", "message": "Expected `object`", "source": "body"}]
    errors: list[dict[str, str]] = []
    fields = {f.encode_name: f for f in msgspec.structs.fields(BudgetIn)}
    for name in body:
        if name not in fields:
            errors.append({"key": str(name)[:64], "message": "unknown field", "source": "body"})
    for name, info in fields.items():
        if name not in body:
            if info.required:
                errors.append({"key": name, "message": "missing required field", "source": "body"})
            continue
        try:
            value = msgspec.convert(integral(body[name]), info.type, strict=True)
        except msgspec.ValidationError as exc:
            where, message = located(exc)
            key = f"{name}{'' if not where or where.startswith('[') else '.'}{where}"  # as msgspec: alert_at[0]
            errors.append({"key": key, "message": message, "source": "body"})
            continue
        if name == "alert_at" and any(a >= b for a, b in itertools.pairwise(value)):
            errors.append({"key": name, "message": "must be ascending, each fraction once", "source": "body"})
    return errors


async def check_budget(request: HttpRequest[Any, Any, Any]) -> None:
    """Before ``PUT .../budget`` parses its body: the tenant exists (else 404), then every bad field named (400)."""
    if request.route_handler.parsed_data_field is None:
        return
    tenant = request.path_params.get("tenant")
    services: Services = request.app.state.services
    principal: Principal = request.state.principal
    if isinstance(tenant, str):
        await visible_tenant(services, principal, tenant)
    require_operator(principal)
    raw = await request.body()
    if raw.strip():
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            body = None  # Litestar says the JSON is malformed
        else:
            errors = _errors(body)
            if errors:
                named = "; ".join(f"{e['key']}: {e['message']}" for e in errors)
                raise ValidationException(f"invalid budget: {named}", extra=errors)
    await check_request(request)


def _bad_query(key: str, message: str) -> ValidationException:
    return ValidationException(f"invalid {key}: {message}", extra=[{"key": key, "message": message, "source": "query"}])


class BudgetController(ApiController):
    """A tenant's monthly budget, and its usage."""

    path = "/tenants/{tenant:str}"
    tags = ("cost control",)
    before_request = check_budget

    @get("/budget", summary="Get a tenant's budget", raises=READ_ERRORS)
    async def get_budget(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> BudgetOut:
        """The tenant's monthly budget (the operator, or the tenant's own key); 404 when it has none."""
        found = await visible_tenant(services, principal, tenant)
        budget = await services.store.budgets.get(found.id)
        if budget is None:
            raise NotFoundException(f"tenant {tenant!r} has no budget")
        return BudgetOut.of(budget)

    @put("/budget", summary="Set a tenant's budget", raises=BUDGET_ERRORS)
    async def put_budget(
        self, tenant: TenantRef, data: JSONBody[BudgetIn], principal: PrincipalDep, services: ServicesDep
    ) -> BudgetOut:
        """Operator only. Sets (or replaces) the tenant's monthly budget; 400 names each bad field.

        Every process applies it within ``BOTLOOM_BUDGET_REFRESH_SECONDS`` (this one at once).
        """
        found = await visible_tenant(services, principal, tenant)
        require_operator(principal)
        before = await services.store.budgets.get(found.id)
        async with services.store.db.transaction():
            budget = await services.store.budgets.put(
                found.id,
                monthly_usd=Decimal(repr(data.monthly_usd)),
                alert_at=list(data.alert_at),
                on_exhausted=data.on_exhausted,
            )
            if budget is None:
                raise NotFoundException(f"no tenant {tenant!r}")
            await _audit(services, principal, "budget.updated", found.id, _changed(before, budget))
        if services.budgets is not None:
            services.budgets.forget(found.id)
        return BudgetOut.of(budget)

    @delete("/budget", summary="Remove a tenant's budget", raises=[*READ_ERRORS, PermissionDeniedException])
    async def delete_budget(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> None:
        """Operator only. Removes the tenant's budget (its turns are no longer limited); 404 when it has none."""
        found = await visible_tenant(services, principal, tenant)
        require_operator(principal)
        async with services.store.db.transaction():
            if not await services.store.budgets.delete(found.id):
                raise NotFoundException(f"tenant {tenant!r} has no budget")
            await _audit(services, principal, "budget.deleted", found.id, {})
        if services.budgets is not None:
            services.budgets.forget(found.id)

    @get(
        "/usage",
        summary="Get a tenant's usage",
        description=(
            "Tokens (input and output) and cost in US dollars of the tenant's model calls from day `from` to day "
            "`to` (both included, UTC; at most 366 days; by default the current month), grouped by `day`, `bot` or "
            "`model`, with the current month's spend against the budget. The operator, or the tenant's own key."
        ),
        raises=[*READ_ERRORS, ValidationException],
    )
    async def get_usage(
        self,
        tenant: TenantRef,
        *,
        principal: PrincipalDep,
        services: ServicesDep,
        since: Annotated[
            dt.date | None, QueryParameter(name="from", description="The first day (YYYY-MM-DD, UTC)")
        ] = None,
        until: Annotated[
            dt.date | None, QueryParameter(name="to", description="The last day (YYYY-MM-DD, UTC), included")
        ] = None,
        group_by: Annotated[
            Literal["day", "bot", "model"], QueryParameter(description="Group the usage by day, bot or model")
        ] = "day",
    ) -> UsageOut:
        """The tenant's usage over a range of days, grouped, with the month-to-date spend against its budget."""
        found = await visible_tenant(services, principal, tenant)
        now = dt.datetime.now(dt.UTC)
        start = since or month_of(now)
        end = until or now.date()
        if end >= dt.date.max:  # the range's exclusive end, the day after, would not be a date
            raise _bad_query("to", f"must be before {dt.date.max.isoformat()}")
        if start > end:
            raise _bad_query("from", "must not be after to")
        if (end - start).days + 1 > MAX_DAYS:
            raise _bad_query("to", f"the range is at most {MAX_DAYS} days")
        groups = await services.store.usage.report(found.id, start, end, group_by)
        state = await services.store.budgets.state(found.id, month_of(now))
        budget = state.budget
        total = UsageRow(
            key=None,
            label=None,
            calls=sum(g.calls for g in groups),
            input_tokens=sum(g.input_tokens for g in groups),
            output_tokens=sum(g.output_tokens for g in groups),
            cost_usd=float(sum((g.cost_usd for g in groups), Decimal(0))),
            unpriced_calls=sum(g.unpriced_calls for g in groups),
        )
        month = MonthToDate(
            month=state.month.strftime("%Y-%m"),
            spent_usd=float(state.spent_usd),
            monthly_usd=float(budget.monthly_usd) if budget else None,
            remaining_usd=float(max(budget.monthly_usd - state.spent_usd, Decimal(0))) if budget else None,
            used=float(state.spent_usd / budget.monthly_usd) if budget else None,
            exhausted=budget is not None and state.spent_usd >= budget.monthly_usd,
            on_exhausted=budget.on_exhausted if budget else None,
        )
        return UsageOut(
            tenant_id=found.id,
            from_=start,
            to=end,
            group_by=group_by,
            groups=[UsageRow.of(g) for g in groups],
            total=total,
            month_to_date=month,
        )


def _changed(before: Budget | None, after: Budget) -> dict[str, Any]:
    """The budget fields a change set (names only, as the audit log keeps them)."""
    if before is None:
        return {"fields": ["monthly_usd", "alert_at", "on_exhausted"], "created": True}
    names = [n for n in ("monthly_usd", "alert_at", "on_exhausted") if getattr(before, n) != getattr(after, n)]
    return {"fields": names}


async def _audit(
    services: Services, principal: Principal, action: str, tenant_id: str, details: dict[str, Any]
) -> None:
    """Record the change in the audit log (``runtime/audit.py``), in the change's transaction."""
    from botloom.runtime.audit import record
    from botloom.server.api.audit import actor_of

    actor = actor_of(principal)
    await record(services, actor, action, tenant_id=tenant_id, target=("tenant", tenant_id), details=details)


BUDGET_HANDLERS: list[ControllerRouterHandler] = [BudgetController]

__all__ = ["BUDGET_HANDLERS", "BudgetController", "BudgetIn", "BudgetOut", "MonthToDate", "UsageOut", "UsageRow"]
