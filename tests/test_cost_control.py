"""Cost control (docs/cost-control.md): budgets set by the operator, usage read by the tenant, enforced on turns.

Real PostgreSQL, the real langchain-openai client against the scripted OpenAI server with
a priced model (``house-model``: $1,000 per million input tokens, $2,000 per million
output tokens, so 1,000 input tokens cost $1 and 1,000 output tokens $2), the real app.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY

from botloom.core.domain import Bot, ModelSettings, UsageEvent
from botloom.core.settings import Settings
from botloom.core.storage.repositories.budgets import month_of
from botloom.runtime.budgets import BUDGET_INTENT, HANDOVER_REASON, REFUSAL, Budgets, call_cost
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.testing.openai import Reply, ScriptedOpenAI, classification
from tests.helpers import Chat
from tests.test_api_resources import api_client, bearer


@pytest.fixture
def priced_settings(llm_settings: Settings) -> Settings:
    return msgspec.structs.replace(llm_settings, model_prices="house-model=1000/2000")


@pytest.fixture
async def priced(priced_settings: Settings, database_url: str) -> AsyncIterator[tuple[Services, DemoInfo]]:
    async with open_services(priced_settings, url=database_url) as services:
        demo = await ensure_demo(services)
        bot = await services.store.bots.update(
            demo.tenant.id,
            demo.bot.id,
            settings=msgspec.structs.replace(demo.bot.settings, model=ModelSettings(model="house-model")),
        )
        assert bot is not None
        yield services, DemoInfo(tenant=demo.tenant, bot=bot, api_key=demo.api_key, created=demo.created)


@pytest.fixture
async def client(priced_settings: Settings, priced: tuple[Services, DemoInfo]) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(priced_settings, priced[0]):
        yield c


def answer(content: str | dict[str, Any], prompt: int, completion: int) -> Reply:
    """A scripted answer with exact token counts."""
    text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
    return Reply(content=text, usage={"prompt_tokens": prompt, "completion_tokens": completion})


def three_dollar_turn(openai: ScriptedOpenAI) -> None:
    """Script one turn that costs $3: classify $1 (1,000 in), respond $2 (1,000 in, 500 out)."""
    openai.script(answer(classification("none", confidence=0.2), 1000, 0), answer("Here you go.", 1000, 500))


async def events_of(services: Services, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The tenant's stored budget events, oldest first."""
    async with services.store.db.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, data FROM events WHERE tenant_id = %s AND kind LIKE %s ORDER BY position",
            (tenant_id, "budget.%"),
        )
        return [(row["kind"], row["data"]) for row in await cur.fetchall()]


async def set_budget(client: httpx.AsyncClient, tenant: str, **body: Any) -> dict[str, Any]:
    r = await client.put(f"/api/v1/tenants/{tenant}/budget", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- enforcement on the turn path -------------------------------------------------------


async def test_a_turn_that_uses_up_the_budget_switches_the_next_ones_to_the_offline_engine(
    priced: tuple[Services, DemoInfo], client: httpx.AsyncClient, openai: ScriptedOpenAI
) -> None:
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=5, alert_at=[0.5, 0.8], on_exhausted="offline")
    chat = Chat(services, demo.bot)

    three_dollar_turn(openai)
    assert (await chat.texts("how much is express shipping?")) == ["Here you go."]
    assert await events_of(services, demo.tenant.id) == [
        (
            "budget.alert",
            {
                "month": month_of(dt.datetime.now(dt.UTC)).strftime("%Y-%m"),
                "monthly_usd": 5.0,
                "spent_usd": 3.0,
                "threshold_usd": 2.5,
                "fraction": 0.5,
                "on_exhausted": "offline",
            },
        )
    ], "crossing half of the budget ($3 of $5) alerts once"

    three_dollar_turn(openai)
    assert (await chat.texts("and to Norway?")) == ["Here you go."], "a turn that starts under budget runs"
    kinds = [
        (kind, data["threshold_usd"], data["spent_usd"]) for kind, data in await events_of(services, demo.tenant.id)
    ]
    assert kinds == [("budget.alert", 2.5, 3.0), ("budget.alert", 4.0, 4.0), ("budget.exhausted", 5.0, 6.0)]

    calls = len(openai.chat_requests)
    result = await chat.say("hello there")
    assert len(openai.chat_requests) == calls, "no model call once the budget is used up"
    assert result.replies and result.replies[0].text
    assert openai.pending == 0
    state = await chat.state()
    assert state["model_calls"] == [], "the offline engine answered"
    transcript = await chat.transcript()
    assert ("inbound", "hello there") in transcript, "the end user's message is stored"
    assert transcript[-1][0] == "outbound"

    usage = await client.get("/api/v1/tenants/acme/usage")
    assert usage.status_code == 200, usage.text
    month = usage.json()["month_to_date"]
    assert month["spent_usd"] == 6.0 and month["monthly_usd"] == 5.0 and month["exhausted"] is True
    assert month["remaining_usd"] == 0.0 and month["used"] == pytest.approx(1.2)
    assert REGISTRY.get_sample_value("botloom_llm_cost_usd_total", {"tenant": demo.tenant.id}) == pytest.approx(6.0)
    assert REGISTRY.get_sample_value("botloom_tenant_month_spend_usd", {"tenant": demo.tenant.id}) == 6.0

    # The operator raises the budget: turns use the model again, and the thresholds of the new amount re-arm.
    await set_budget(client, "acme", monthly_usd=100, alert_at=[0.5], on_exhausted="offline")
    three_dollar_turn(openai)
    assert (await chat.texts("one more question")) == ["Here you go."]
    assert len(await events_of(services, demo.tenant.id)) == 3, "$9 is under half of $100: no new alert"


async def test_an_exhausted_budget_hands_the_conversation_to_a_person(
    priced: tuple[Services, DemoInfo], client: httpx.AsyncClient, openai: ScriptedOpenAI
) -> None:
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=3, alert_at=[], on_exhausted="handover")
    chat = Chat(services, demo.bot)
    three_dollar_turn(openai)
    first = await chat.say("how much is express shipping?")
    assert not first.escalated
    assert [kind for kind, _ in await events_of(services, demo.tenant.id)] == ["budget.exhausted"]

    calls = len(openai.chat_requests)
    result = await chat.say("and to Norway?")
    assert len(openai.chat_requests) == calls, "no model call"
    assert result.escalated, "the conversation waits for a person"
    state = await chat.state()
    assert state["intent"] == BUDGET_INTENT
    handovers = await services.store.handovers.list_all(demo.tenant.id)
    assert [h.conversation_id for h in handovers] == [chat.conversation_id]
    assert handovers[0].reason == HANDOVER_REASON, "the agent is told why"
    assert ("inbound", "and to Norway?") in await chat.transcript()


async def test_an_exhausted_budget_refuses_politely_and_stores_everything(
    priced: tuple[Services, DemoInfo], client: httpx.AsyncClient, openai: ScriptedOpenAI
) -> None:
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=2, alert_at=[1.0], on_exhausted="refuse")
    chat = Chat(services, demo.bot)
    three_dollar_turn(openai)
    await chat.say("how much is express shipping?")
    kinds = [(kind, data["threshold_usd"]) for kind, data in await events_of(services, demo.tenant.id)]
    assert kinds == [("budget.alert", 2.0), ("budget.exhausted", 2.0)], "an alert at 1.0 and the exhaustion"

    calls = len(openai.chat_requests)
    for text in ("and to Norway?", "hello?"):  # again and again: never escalated for "failing"
        result = await chat.say(text)
        assert [r.text for r in result.replies] == [REFUSAL]
        assert not result.escalated
    assert len(openai.chat_requests) == calls
    transcript = await chat.transcript()
    assert transcript[-4:] == [
        ("inbound", "and to Norway?"),
        ("outbound", REFUSAL),
        ("inbound", "hello?"),
        ("outbound", REFUSAL),
    ]
    assert len(await events_of(services, demo.tenant.id)) == 2, "each threshold once"


async def test_each_alert_is_emitted_once_across_processes(
    priced: tuple[Services, DemoInfo], priced_settings: Settings, client: httpx.AsyncClient
) -> None:
    """Several processes (here: Budgets instances, each with its own memory) race to emit: one row decides."""
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=10, alert_at=[0.25, 0.5], on_exhausted="offline")
    event = UsageEvent(
        tenant_id=demo.tenant.id, bot_id=demo.bot.id, kind="chat", model="house-model", prompt_tokens=3000
    )
    processes = [Budgets(services.store, priced_settings, events=services.events) for _ in range(4)]
    for budgets in processes:
        assert await budgets.engine_for(demo.tenant.id, services.engine) is services.engine
    # Each process records $3 at once: $12 in all, every threshold crossed by someone.
    await asyncio.gather(*(budgets.record(event) for budgets in processes))
    # And each reads the month's spend again (as after its refresh): nobody emits twice.
    for budgets in processes:
        budgets.forget(demo.tenant.id)
        await budgets.known(demo.tenant.id)
    kinds = sorted((kind, data["threshold_usd"]) for kind, data in await events_of(services, demo.tenant.id))
    assert kinds == [("budget.alert", 2.5), ("budget.alert", 5.0), ("budget.exhausted", 10.0)]
    offline = getattr(services.engine, "offline", None)
    assert offline is not None
    for budgets in processes:
        assert await budgets.engine_for(demo.tenant.id, services.engine) is offline


async def test_an_alert_whose_event_fails_to_store_is_not_claimed_and_comes_later(
    priced: tuple[Services, DemoInfo], priced_settings: Settings, client: httpx.AsyncClient
) -> None:
    """The claim and its event commit together: a failed event leaves no claim, so the alert is not lost."""
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=10, alert_at=[0.25], on_exhausted="offline")
    budgets = Budgets(services.store, priced_settings, events=services.events)
    event = UsageEvent(
        tenant_id=demo.tenant.id, bot_id=demo.bot.id, kind="chat", model="house-model", prompt_tokens=3000
    )
    append = services.store.events.append

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("events table unavailable")

    services.store.events.append = broken  # type: ignore[method-assign]
    try:
        await budgets.record(event)  # $3: the 25 % alert ($2.50) is crossed, its event fails
    finally:
        del services.store.events.append
    assert services.store.events.append == append
    assert await events_of(services, demo.tenant.id) == []
    async with services.store.db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM budget_alerts WHERE tenant_id = %s", (demo.tenant.id,))
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0, "the claim was rolled back with its event"
    budgets.forget(demo.tenant.id)
    await budgets.known(demo.tenant.id)  # the next read of the spend checks the thresholds again
    kinds = [(kind, data["threshold_usd"]) for kind, data in await events_of(services, demo.tenant.id)]
    assert kinds == [("budget.alert", 2.5)]


async def test_a_cancelled_turn_does_not_cancel_the_budget_read_other_turns_share(
    priced: tuple[Services, DemoInfo], priced_settings: Settings, client: httpx.AsyncClient
) -> None:
    """Concurrent turns share one read of the tenant's budget; the first one's cancellation leaves the rest theirs."""
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=10)
    budgets = Budgets(services.store, priced_settings, events=services.events)
    state = services.store.budgets.state
    started, release = asyncio.Event(), asyncio.Event()
    reads: list[str] = []

    async def slow_state(tenant_id: str, month: dt.date) -> Any:
        reads.append(tenant_id)
        started.set()
        await release.wait()
        return await state(tenant_id, month)

    services.store.budgets.state = slow_state  # type: ignore[method-assign]
    try:
        first = asyncio.create_task(budgets.known(demo.tenant.id))
        await started.wait()
        second = asyncio.create_task(budgets.known(demo.tenant.id))
        await asyncio.sleep(0)  # let the second caller join the read under way
        first.cancel()
        release.set()
        known = await second
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        del services.store.budgets.state
    assert known.state.budget is not None and known.state.budget.monthly_usd == Decimal(10)
    assert reads == [demo.tenant.id], "one read, shared"


async def test_a_process_learns_of_other_processes_spend_within_its_refresh(
    priced: tuple[Services, DemoInfo], priced_settings: Settings, client: httpx.AsyncClient
) -> None:
    services, demo = priced
    await set_budget(client, "acme", monthly_usd=1, alert_at=[], on_exhausted="refuse")
    clock = [0.0]
    ours = Budgets(services.store, priced_settings, events=services.events, clock=lambda: clock[0])
    theirs = Budgets(services.store, priced_settings, events=services.events)
    assert await ours.engine_for(demo.tenant.id, services.engine) is services.engine
    spend = UsageEvent(tenant_id=demo.tenant.id, kind="chat", model="house-model", completion_tokens=1000)
    await theirs.record(spend)  # another process spends $2
    reads: list[str] = []
    original = services.store.budgets.state

    async def counted(tenant_id: str, month: dt.date) -> Any:
        reads.append(tenant_id)
        return await original(tenant_id, month)

    services.store.budgets.state = counted  # type: ignore[method-assign]
    try:
        clock[0] = priced_settings.budget_refresh_seconds - 0.5
        results = await asyncio.gather(*(ours.engine_for(demo.tenant.id, services.engine) for _ in range(20)))
        assert set(results) == {services.engine} and reads == [], "within the refresh: memory only, no read"
        clock[0] = priced_settings.budget_refresh_seconds + 0.5
        results = await asyncio.gather(*(ours.engine_for(demo.tenant.id, services.engine) for _ in range(20)))
        assert {type(r).__name__ for r in results} == {"RefuseEngine"}
        assert reads == [demo.tenant.id], "twenty turns at once share one read"
    finally:
        del services.store.budgets.state


async def test_turns_of_a_tenant_without_a_budget_read_no_budget_state(
    priced: tuple[Services, DemoInfo], priced_settings: Settings, client: httpx.AsyncClient, openai: ScriptedOpenAI
) -> None:
    """Across several refresh windows, a tenant without a budget costs one shared list of budgeted tenants a window."""
    services, demo = priced
    budgets = services.budgets
    assert budgets is not None
    other = await services.store.tenants.create("budgeted", "Budgeted")
    await set_budget(client, "budgeted", monthly_usd=5)  # another tenant has one: acme still has none
    clock = [1000.0]
    budgets.clock = lambda: clock[0]
    budgets.forget(demo.tenant.id)
    states: list[str] = []
    lists: list[int] = []
    state, listed = services.store.budgets.state, services.store.budgets.budgeted

    async def counted_state(tenant_id: str, month: dt.date) -> Any:
        states.append(tenant_id)
        return await state(tenant_id, month)

    async def counted_list() -> frozenset[str]:
        lists.append(1)
        return await listed()

    services.store.budgets.state = counted_state  # type: ignore[method-assign]
    services.store.budgets.budgeted = counted_list  # type: ignore[method-assign]
    try:
        chat = Chat(services, demo.bot)
        for window in range(3):
            clock[0] += priced_settings.budget_refresh_seconds + 1
            three_dollar_turn(openai)
            assert (await chat.texts(f"question {window}")) == ["Here you go."]
            results = await asyncio.gather(*(budgets.engine_for(demo.tenant.id, services.engine) for _ in range(10)))
            assert set(results) == {services.engine}
        assert states == [], "no per-tenant read for a tenant without a budget"
        assert lists == [1, 1, 1], "one shared list of budgeted tenants per refresh window"
        assert await budgets.engine_for(other.id, services.engine) is services.engine
        assert states == [other.id], "a tenant with a budget is read"
    finally:
        del services.store.budgets.state
        del services.store.budgets.budgeted
    assert REGISTRY.get_sample_value("botloom_tenant_month_spend_usd", {"tenant": demo.tenant.id}) == 9.0


def test_a_calls_cost_is_exact_and_unpriced_models_cost_nothing_known(priced_settings: Settings) -> None:
    table = priced_settings.model_price_table
    call = UsageEvent(tenant_id="t", kind="chat", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
    assert call_cost(call, table) == Decimal("0.00027")
    assert call_cost(msgspec.structs.replace(call, model="mystery"), table) is None


# -- the budget API -----------------------------------------------------------------------


async def test_the_operator_sets_reads_and_removes_a_budget(
    priced: tuple[Services, DemoInfo], client: httpx.AsyncClient
) -> None:
    services, demo = priced
    r = await client.get("/api/v1/tenants/acme/budget")
    assert r.status_code == 404
    body = await set_budget(client, "acme", monthly_usd=50)
    assert body["monthly_usd"] == 50.0 and body["alert_at"] == [0.8, 0.95] and body["on_exhausted"] == "offline"
    body = await set_budget(client, demo.tenant.id, monthly_usd=12.5, alert_at=[0.5, 1], on_exhausted="refuse")
    assert (body["monthly_usd"], body["alert_at"], body["on_exhausted"]) == (12.5, [0.5, 1.0], "refuse")
    tenant_reads = await client.get("/api/v1/tenants/acme/budget", headers=bearer(demo.api_key))
    assert tenant_reads.status_code == 200 and tenant_reads.json() == body, "the tenant's key reads its own budget"
    r = await client.put("/api/v1/tenants/acme/budget", json={"monthly_usd": 1000}, headers=bearer(demo.api_key))
    assert r.status_code == 403, "only the operator sets a budget"
    r = await client.delete("/api/v1/tenants/acme/budget", headers=bearer(demo.api_key))
    assert r.status_code == 403
    assert (await client.get("/api/v1/tenants/acme/budget")).json()["monthly_usd"] == 12.5
    async with services.store.db.connection() as conn:
        cur = await conn.execute(
            "SELECT action, details FROM audit_log WHERE tenant_id = %s AND action LIKE %s ORDER BY id",
            (demo.tenant.id, "budget.%"),
        )
        rows = [(row["action"], row["details"]) for row in await cur.fetchall()]
    assert [action for action, _ in rows] == ["budget.updated", "budget.updated"]
    assert rows[1][1] == {"fields": ["monthly_usd", "alert_at", "on_exhausted"]}
    r = await client.delete("/api/v1/tenants/acme/budget")
    assert r.status_code == 204
    assert (await client.get("/api/v1/tenants/acme/budget")).status_code == 404
    assert (await client.delete("/api/v1/tenants/acme/budget")).status_code == 404


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        (
            {"monthly_usd": -1, "alert_at": [0.9, 0.5], "on_exhausted": "panic", "extra": 1},
            {"monthly_usd", "alert_at", "on_exhausted", "extra"},
        ),
        ({"monthly_usd": 0}, {"monthly_usd"}),
        ({"monthly_usd": 2_000_000}, {"monthly_usd"}),
        ({"monthly_usd": "5"}, {"monthly_usd"}),
        ({"monthly_usd": True}, {"monthly_usd"}),
        ({}, {"monthly_usd"}),
        ({"monthly_usd": 5, "alert_at": [0.5, 0.5]}, {"alert_at"}),
        ({"monthly_usd": 5, "alert_at": [0, 0.5]}, {"alert_at[0]"}),
        ({"monthly_usd": 5, "alert_at": [1.5]}, {"alert_at[0]"}),
        ({"monthly_usd": 5, "alert_at": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, {"alert_at"}),
        ({"monthly_usd": 5, "alert_at": "0.8"}, {"alert_at"}),
        ([5], {"body"}),
    ],
)
async def test_a_bad_budget_is_a_400_naming_each_bad_field(client: httpx.AsyncClient, body: Any, bad: set[str]) -> None:
    r = await client.put("/api/v1/tenants/acme/budget", json=body)
    assert r.status_code == 400, r.text
    assert {e["key"] for e in r.json()["extra"]} == bad, r.text
    assert (await client.get("/api/v1/tenants/acme/budget")).status_code == 404, "nothing stored"


async def test_budget_and_usage_refuse_malformed_oversized_unauthenticated_and_cross_tenant_requests(
    priced: tuple[Services, DemoInfo], client: httpx.AsyncClient
) -> None:
    services, _ = priced
    other = await services.store.tenants.create("other", "Other")
    _, other_key = await services.store.api_keys.create(other.id, "default")
    await set_budget(client, "acme", monthly_usd=5)

    r = await client.put(
        "/api/v1/tenants/acme/budget", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.put("/api/v1/tenants/acme/budget", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 400
    huge = b'{"monthly_usd": 5, "alert_at": [' + b"0.5, " * 400_000 + b"0.5]}"
    r = await client.put("/api/v1/tenants/acme/budget", content=huge, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413), r.status_code
    r = await client.put("/api/v1/tenants/nobody/budget", json={"monthly_usd": 5})
    assert r.status_code == 404
    r = await client.put("/api/v1/tenants/nobody/budget", json={"monthly_usd": -5})
    assert r.status_code == 404, "an unknown tenant is a 404 whatever the body"
    assert (await client.get("/api/v1/tenants/nobody/usage")).status_code == 404

    for method, path in [
        ("GET", "/api/v1/tenants/acme/budget"),
        ("PUT", "/api/v1/tenants/acme/budget"),
        ("DELETE", "/api/v1/tenants/acme/budget"),
        ("GET", "/api/v1/tenants/acme/usage"),
    ]:
        body = {"monthly_usd": 1} if method == "PUT" else None
        anonymous = client.build_request(method, path, json=body)
        del anonymous.headers["authorization"]
        assert (await client.send(anonymous)).status_code == 401, f"{method} {path}"
        foreign = await client.request(method, path, json=body, headers=bearer(other_key))
        assert foreign.status_code == 404, f"{method} {path} with another tenant's key: {foreign.status_code}"
        ghost = await client.request(method, path.replace("acme", "ghost"), json=body, headers=bearer(other_key))
        assert foreign.json()["detail"].replace("acme", "x") == ghost.json()["detail"].replace("ghost", "x")
    assert (await client.get("/api/v1/tenants/acme/budget")).json()["monthly_usd"] == 5.0, "unchanged"
    own = await client.get("/api/v1/tenants/other/usage", headers=bearer(other_key))
    assert own.status_code == 200 and own.json()["total"]["calls"] == 0

    for params in [
        {"from": "2026-13-01"},
        {"from": "yesterday"},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"from": "2025-01-01", "to": "2026-01-02"},
        {"group_by": "week"},
        {"to": "9" * 300},
        {"from": "9999-12-31", "to": "9999-12-31"},
        {"from": "9999-12-01", "to": "9999-12-31"},
    ]:
        r = await client.get("/api/v1/tenants/acme/usage", params=params)
        assert r.status_code == 400, f"{params}: {r.status_code} {r.text}"
    r = await client.get("/api/v1/tenants/acme/usage", params={"from": "2025-01-01", "to": "2026-01-01"})
    assert r.status_code == 200, "366 days is the longest range"


# -- usage ------------------------------------------------------------------------------------


async def backdate(services: Services, tenant_id: str, days: int) -> None:
    """Move the tenant's newest usage row ``days`` back (a call made then)."""
    async with services.store.db.connection() as conn:
        await conn.execute(
            "UPDATE usage_events SET created_at = created_at - make_interval(days => %s) "
            "WHERE id = (SELECT max(id) FROM usage_events WHERE tenant_id = %s)",
            (days, tenant_id),
        )


async def test_usage_grouped_by_day_bot_and_model_sums_exactly(
    priced: tuple[Services, DemoInfo], client: httpx.AsyncClient
) -> None:
    services, demo = priced
    assert services.budgets is not None
    second = await services.store.bots.create(demo.tenant.id, "second", "Second")
    today = dt.datetime.now(dt.UTC).date()

    async def call(bot: Bot | Any, model: str, prompt: int, completion: int, days_ago: int = 0) -> None:
        assert services.budgets is not None
        await services.budgets.record(
            UsageEvent(
                tenant_id=demo.tenant.id,
                bot_id=bot.id,
                kind="chat",
                model=model,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
        )
        if days_ago:
            await backdate(services, demo.tenant.id, days_ago)

    await call(demo.bot, "house-model", 1000, 500)  # $2, today
    await call(demo.bot, "gpt-4o-mini", 1_000_000, 100_000, days_ago=1)  # $0.15 + $0.06 = $0.21, yesterday
    await call(second, "house-model", 10, 20, days_ago=1)  # $0.01 + $0.04 = $0.05, yesterday
    await call(second, "mystery-model", 7, 3)  # no price, today
    await call(second, "gpt-4o-mini", 3, 1, days_ago=400)  # out of range

    since = (today - dt.timedelta(days=1)).isoformat()

    async def report(group_by: str) -> dict[str, Any]:
        r = await client.get(
            "/api/v1/tenants/acme/usage",
            params={"from": since, "to": today.isoformat(), "group_by": group_by},
            headers=bearer(demo.api_key),
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def rows(body: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (
                g["key"],
                g["label"],
                g["calls"],
                g["input_tokens"],
                g["output_tokens"],
                g["cost_usd"],
                g["unpriced_calls"],
            )
            for g in body["groups"]
        ]

    yesterday = (today - dt.timedelta(days=1)).isoformat()
    by_day = await report("day")
    assert rows(by_day) == [
        (yesterday, yesterday, 2, 1_000_010, 100_020, 0.26, 0),
        (today.isoformat(), today.isoformat(), 2, 1007, 503, 2.0, 1),
    ]
    assert by_day["total"] == {
        "key": None,
        "label": None,
        "calls": 4,
        "input_tokens": 1_001_017,
        "output_tokens": 100_523,
        "cost_usd": 2.26,
        "unpriced_calls": 1,
    }
    assert (by_day["from"], by_day["to"], by_day["group_by"]) == (since, today.isoformat(), "day")
    by_bot = await report("bot")
    assert rows(by_bot) == [
        (demo.bot.id, demo.bot.slug, 2, 1_001_000, 100_500, 2.21, 0),
        (second.id, "second", 2, 17, 23, 0.05, 1),
    ]
    by_model = await report("model")
    assert rows(by_model) == [
        ("house-model", "house-model", 2, 1010, 520, 2.05, 0),
        ("gpt-4o-mini", "gpt-4o-mini", 1, 1_000_000, 100_000, 0.21, 0),
        ("mystery-model", "mystery-model", 1, 7, 3, 0.0, 1),
    ]
    assert by_model["total"]["cost_usd"] == by_bot["total"]["cost_usd"] == by_day["total"]["cost_usd"]
    month = by_day["month_to_date"]
    assert month["monthly_usd"] is None and month["exhausted"] is False


async def test_the_new_routes_are_in_the_api_schema(client: httpx.AsyncClient) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    budget = paths["/api/v1/tenants/{tenant}/budget"]
    assert set(budget) >= {"get", "put", "delete"}
    body = r.json()["components"]["schemas"]["BudgetIn"]
    assert set(body["properties"]) == {"monthly_usd", "alert_at", "on_exhausted"}
    usage = paths["/api/v1/tenants/{tenant}/usage"]["get"]
    assert {p["name"] for p in usage["parameters"]} >= {"from", "to", "group_by"}
