"""Cost control: what each model call costs, each tenant's month-to-date spend in memory, budgets enforced, alerts.

The turn path never waits on a database round trip of its own for this (docs/cost-control.md):

* **spend** -- the statement that records a priced model call also adds its cost to the
  tenant's running total of the calendar month (UTC) and returns the new total
  (:meth:`UsageRepository.record`), so each process learns the total across every
  process whenever it records a call;
* **budgets** -- each process keeps the set of tenants that have a budget and reads it
  again (one statement for every tenant, :meth:`BudgetRepository.budgeted`) at most once
  per ``BOTLOOM_BUDGET_REFRESH_SECONDS``; a tenant not in it gets its engine at once and
  nothing is read for it. For a tenant with a budget, the process keeps its budget and
  month-to-date spend in memory and reads them again (one statement,
  :meth:`BudgetRepository.state`) at most once per tenant per refresh; concurrent callers
  share each read;
* **enforcement** -- a turn that starts once the spend reached ``monthly_usd`` gets the
  engine the budget's ``on_exhausted`` names instead of the model: ``offline`` (the
  offline engine), ``handover`` (an engine that asks for a person: the escalation path)
  or ``refuse`` (an engine that answers :data:`REFUSAL`); the graph runs as usual, so
  the end user's message and the answer are stored;
* **alerts** -- crossing each ``alert_at`` fraction and the budget itself emits
  ``budget.alert`` / ``budget.exhausted`` once per threshold and month: a row of
  ``budget_alerts`` decides which process emits it (:meth:`BudgetRepository.claim_alert`).

The idea is LiteLLM's budget manager's (a per-user running cost in memory, checked before
a call and added to after it, reset by period); unlike its proxy, which queues spend
increments in memory and writes them in batches, the increment here is atomic in the
statement that stores the call, so the totals never drift between processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from botloom.core.domain import UsageEvent
from botloom.core.pricing import MILLION, ModelPrice
from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.core.storage.repositories.budgets import AlertKind, Budget, BudgetState, month_of
from botloom.core.storage.repositories.usage import Spent
from botloom.graphs.context import TurnContext
from botloom.graphs.engines import Classification, Engine, Reply, offline_part
from botloom.graphs.state import TurnState

logger = logging.getLogger(__name__)

REFUSAL = (
    "I'm sorry, I can't answer right now: this service has reached its usage limit for the month. "
    "Your message has been received. Please try again later."
)
"""The answer of every turn of a tenant whose budget is used up with ``on_exhausted: refuse``."""
HANDOVER_REASON = "the tenant's monthly model budget is used up (on_exhausted: handover)"
"""Why a conversation is handed to a person by ``on_exhausted: handover`` (the agent desk shows it)."""
BUDGET_INTENT = "budget_exhausted"
"""The intent a turn records when the budget, not the user's message, decided its answer (``handover``/``refuse``)."""

SPEND = Counter(
    "botloom_llm_cost_usd_total",
    "US dollars of priced model calls recorded by this process, per tenant id (list prices, BOTLOOM_MODEL_PRICES)",
    ["tenant"],
)
MONTH_SPEND = Gauge(
    "botloom_tenant_month_spend_usd",
    "A tenant's spend in the current calendar month (UTC) as this process last read it, per tenant id",
    ["tenant"],
)
BUDGET_FRACTION = Gauge(
    "botloom_tenant_budget_used_ratio",
    "A tenant's month-to-date spend over its monthly budget as this process last read it (tenants with a budget)",
    ["tenant"],
)


def call_cost(event: UsageEvent, table: Mapping[str, ModelPrice]) -> Decimal | None:
    """The call's cost in US dollars at its model's list price, exactly; ``None`` when the model has no price."""
    price = table.get(event.model)
    if price is None:
        return None
    given = Decimal(repr(price.input_per_million)) * event.prompt_tokens
    taken = Decimal(repr(price.output_per_million)) * event.completion_tokens
    return (given + taken) / MILLION


def now_utc() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.UTC)


class RefuseEngine:
    """Answers every turn with :data:`REFUSAL`, calling no model (``on_exhausted: refuse``)."""

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """The budget's intent, sure of it (so no failure counts towards an escalation)."""
        return Classification(intent=BUDGET_INTENT, confidence=1.0)

    async def respond(self, state: TurnState, ctx: TurnContext) -> Reply:
        """The fixed, polite refusal."""
        return Reply(text=REFUSAL, answered=True)


class HandoverEngine(RefuseEngine):
    """Hands every turn to a person through the escalation path, calling no model (``on_exhausted: handover``)."""

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """A person is wanted (the ``escalate`` node pauses the conversation for the agent desk)."""
        return Classification(intent=BUDGET_INTENT, confidence=1.0, wants_human=True, escalation_reason=HANDOVER_REASON)


@dataclass
class _Tenant:
    """What this process knows of one tenant's budget and spend."""

    state: BudgetState
    read_at: float
    tried: set[tuple[str, Decimal]] = field(default_factory=set)
    """Thresholds of ``state.month`` this process already tried to claim (claimed by it or by another)."""


class Budgets:
    """Each tenant's budget and month-to-date spend in memory; the engine a turn gets; alerts (see the module)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        events: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.datetime] = now_utc,
    ) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        """:class:`~botloom.runtime.events.Events`, set by the composition root once it is open."""
        self.refresh = settings.budget_refresh_seconds
        self.prices = settings.model_price_table
        self.clock = clock
        self.today = today
        self._tenants: dict[str, _Tenant] = {}
        self._reading: dict[str, asyncio.Task[_Tenant]] = {}
        self._budgeted: frozenset[str] | None = None
        """The tenants that have a budget, as last read (``None``: to read)."""
        self._budgeted_at = 0.0
        self._listing: asyncio.Task[frozenset[str]] | None = None
        self._generation = 0
        """Bumped by :meth:`forget`: a list read that started before it is not kept."""
        self._refuse = RefuseEngine()
        self._handover = HandoverEngine()

    # -- the turn path ---------------------------------------------------------------

    async def engine_for(self, tenant_id: str, engine: Engine) -> Engine:
        """The engine a turn of the tenant starts with: ``engine``, or what ``on_exhausted`` says once spent."""
        offline = offline_part(engine)
        if offline is None or offline is engine:
            return engine  # no model to spend on
        if tenant_id not in await self.budgeted():
            return engine  # no budget: nothing read for this tenant
        known = await self.known(tenant_id)
        budget = known.state.budget
        if budget is None or known.state.spent_usd < budget.monthly_usd:
            return engine
        if budget.on_exhausted == "handover":
            return self._handover
        if budget.on_exhausted == "refuse":
            return self._refuse
        return offline

    async def record(self, event: UsageEvent) -> None:
        """Store a model call's usage with its cost; learn the month's spend and emit the alerts it crossed."""
        cost = call_cost(event, self.prices)
        spent = await self.store.usage.record(event, cost)
        if cost is not None and cost > 0:
            SPEND.labels(event.tenant_id).inc(float(cost))
        if spent is not None:
            await self.learned(event.tenant_id, spent)

    # -- what this process knows -----------------------------------------------------

    async def budgeted(self) -> frozenset[str]:
        """The tenants that have a budget: one statement per ``BOTLOOM_BUDGET_REFRESH_SECONDS``, shared by callers."""
        listed = self._budgeted
        if listed is not None and self.clock() - self._budgeted_at < self.refresh:
            return listed
        task = self._listing
        if task is None:
            task = asyncio.create_task(self._list(self._generation))
            self._listing = task
            task.add_done_callback(self._listed)
        return await asyncio.shield(task)

    async def _list(self, generation: int) -> frozenset[str]:
        started = self.clock()
        listed = await self.store.budgets.budgeted()
        if generation == self._generation:
            self._budgeted, self._budgeted_at = listed, started
        return listed

    def _listed(self, task: asyncio.Task[frozenset[str]]) -> None:
        if self._listing is task:
            self._listing = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter raises it itself

    async def known(self, tenant_id: str) -> _Tenant:
        """The tenant's budget and spend as this process knows them, read again when older than the refresh."""
        month = month_of(self.today())
        known = self._tenants.get(tenant_id)
        if known is not None and known.state.month == month and self.clock() - known.read_at < self.refresh:
            return known
        reading = self._reading.get(tenant_id)
        if reading is None:  # one read a tenant at a time, its own task: a cancelled caller does not cancel it
            reading = asyncio.create_task(self._read(tenant_id, month))
            self._reading[tenant_id] = reading
            reading.add_done_callback(functools.partial(self._read_done, tenant_id))
        return await asyncio.shield(reading)

    async def _read(self, tenant_id: str, month: dt.date) -> _Tenant:
        known = self._remember(tenant_id, await self.store.budgets.state(tenant_id, month))
        await self._check(known)
        return known

    def _read_done(self, tenant_id: str, task: asyncio.Task[_Tenant]) -> None:
        if self._reading.get(tenant_id) is task:
            del self._reading[tenant_id]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter raises it itself

    def forget(self, tenant_id: str) -> None:
        """Drop what this process knows of the tenant (its budget changed here): the next turn reads it again."""
        self._tenants.pop(tenant_id, None)
        self._budgeted = None  # and which tenants have a budget, at once
        self._listing = None  # a list read under way may predate the change
        self._generation += 1

    def _remember(self, tenant_id: str, state: BudgetState) -> _Tenant:
        previous = self._tenants.get(tenant_id)
        tried = previous.tried if previous is not None and previous.state.month == state.month else set()
        known = _Tenant(state=state, read_at=self.clock(), tried=tried)
        self._tenants[tenant_id] = known
        self._gauges(tenant_id, state)
        return known

    async def learned(self, tenant_id: str, spent: Spent) -> None:
        """A recorded call told the month's total across every process: keep it, emit what it crossed."""
        if tenant_id not in await self.budgeted():
            MONTH_SPEND.labels(tenant_id).set(float(spent.spent_usd))  # no budget: nothing more to read or check
            return
        known = self._tenants.get(tenant_id)
        if known is None or known.state.month != spent.month:
            known = await self.known(tenant_id)
            if known.state.month != spent.month:
                return
        if spent.spent_usd > known.state.spent_usd:
            state = BudgetState(budget=known.state.budget, month=known.state.month, spent_usd=spent.spent_usd)
            known.state = state
            self._gauges(tenant_id, state)
        await self._check(known)

    @staticmethod
    def _gauges(tenant_id: str, state: BudgetState) -> None:
        MONTH_SPEND.labels(tenant_id).set(float(state.spent_usd))
        if state.budget is not None:
            BUDGET_FRACTION.labels(tenant_id).set(float(state.spent_usd / state.budget.monthly_usd))

    # -- alerts ----------------------------------------------------------------------

    async def _check(self, known: _Tenant) -> None:
        """Claim and emit each threshold the month's spend reached that this process has not tried yet."""
        state = known.state
        if state.budget is None:
            return
        for kind, fraction, threshold in thresholds(state.budget):
            key = (kind, threshold)
            if state.spent_usd < threshold or key in known.tried:
                continue
            known.tried.add(key)
            try:
                await self._emit(state, kind, fraction, threshold)
            except Exception:  # an alert must never fail the turn that crossed it
                logger.warning("budget %s of tenant %s not emitted", kind, state.budget.tenant_id, exc_info=True)
                known.tried.discard(key)

    async def _emit(self, state: BudgetState, kind: AlertKind, fraction: float, threshold: Decimal) -> None:
        budget = state.budget
        assert budget is not None
        tenant_id = budget.tenant_id
        if self.events is None:
            return
        data = {
            "month": state.month.strftime("%Y-%m"),
            "monthly_usd": float(budget.monthly_usd),
            "spent_usd": float(state.spent_usd),
            "threshold_usd": float(threshold),
            "on_exhausted": budget.on_exhausted,
        }
        if kind == "alert":
            data["fraction"] = fraction
        async with self.store.db.transaction():  # the claim and its event commit together or not at all
            if not await self.store.budgets.claim_alert(tenant_id, state.month, kind, threshold):
                return
            stored = await self.events.store_event(tenant_id, f"budget.{kind}", data=data)
        if stored is None:  # the tenant is gone
            return
        await self.events.announce(stored)
        logger.info("tenant %s: budget.%s at %s USD (%s USD spent)", tenant_id, kind, threshold, state.spent_usd)


def thresholds(budget: Budget) -> list[tuple[AlertKind, float, Decimal]]:
    """The budget's alerts (``alert``, fraction, dollars) in order, then its exhaustion (``exhausted``, 1, dollars)."""
    out: list[tuple[AlertKind, float, Decimal]] = [
        ("alert", fraction, (budget.monthly_usd * Decimal(repr(fraction))).quantize(Decimal("0.000001")))
        for fraction in budget.alert_at
    ]
    out.append(("exhausted", 1.0, budget.monthly_usd))
    return out


__all__ = [
    "BUDGET_INTENT",
    "HANDOVER_REASON",
    "REFUSAL",
    "Budgets",
    "HandoverEngine",
    "RefuseEngine",
    "call_cost",
    "thresholds",
]
