"""The agent desk's authorization matrix: every desk and agent route, every kind of caller, hostile input.

Tenant B has a bot with a handover, an agent, a team, a canned response and a note; tenant A
(its key and its own agent) tries every route on them: 404 with no hint they exist (or its
own, empty data for the lists). Without a token, or with a malformed one: 401. An agent's
token reaches the desk routes only: 403 on every other route of the API. Bodies that are
malformed, too large or carry control characters are 400s naming the field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.core.storage.repositories.agents import hashed_password
from botloom.runtime.services import Services
from tests.desk import OPERATOR, DeskAgent, bearer, make_agent
from tests.test_api_auth import MALFORMED, ROUTES, Call, render
from tests.test_api_auth import call as call_route
from tests.test_api_resources import api_client
from tests.worlds import two_tenants

NOTE = Call(json={"text": "planted note"})
DESK_ROUTES: dict[tuple[str, str], Call] = {
    ("POST", "/api/v1/tenants/{tenant:str}/agents"): Call(
        json={"email": "mole@alpha.test", "name": "Mole", "password": "long enough pw"}
    ),
    ("GET", "/api/v1/tenants/{tenant:str}/agents"): Call(),
    ("PATCH", "/api/v1/tenants/{tenant:str}/agents/{agent_id:str}"): Call(json={"name": "Hijacked"}),
    ("DELETE", "/api/v1/tenants/{tenant:str}/agents/{agent_id:str}"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/teams"): Call(),
    ("PUT", "/api/v1/tenants/{tenant:str}/teams/{team:str}"): Call(json={"timezone": "UTC", "hours": {}}),
    ("DELETE", "/api/v1/tenants/{tenant:str}/teams/{team:str}"): Call(),
    ("POST", "/api/v1/agents/sign-in"): Call(json={"tenant": "beta", "email": "bo@beta.test", "password": "guess"}),
    ("GET", "/api/v1/handovers"): Call(),
    ("GET", "/api/v1/handovers/stats"): Call(),
    ("GET", "/api/v1/handovers/{handover_id:str}"): Call(),
    ("POST", "/api/v1/handovers/{handover_id:str}/claim"): Call(),
    ("POST", "/api/v1/handovers/{handover_id:str}/messages"): Call(json={"text": "planted"}),
    ("POST", "/api/v1/handovers/{handover_id:str}/release"): Call(json={"note": "planted"}),
    ("POST", "/api/v1/handovers/{handover_id:str}/resolve"): Call(),
    ("POST", "/api/v1/handovers/{handover_id:str}/resume"): Call(),
    ("POST", "/api/v1/handovers/{handover_id:str}/take-back"): Call(),
    ("GET", "/api/v1/handovers/{handover_id:str}/notes"): Call(),
    ("POST", "/api/v1/handovers/{handover_id:str}/notes"): NOTE,
    ("POST", "/api/v1/handovers/{handover_id:str}/suggestion"): Call(),
    ("GET", "/api/v1/canned"): Call(),
    ("POST", "/api/v1/canned"): Call(json={"shortcut": "planted", "text": "planted"}),
    ("PATCH", "/api/v1/canned/{response_id:str}"): Call(json={"text": "hijacked"}),
    ("DELETE", "/api/v1/canned/{response_id:str}"): Call(),
    ("GET", "/api/v1/agents"): Call(),
    ("GET", "/api/v1/agents/me"): Call(),
    ("POST", "/api/v1/agents/me/presence"): Call(json={"status": "available"}),
}
"""Every route of the desk (``tests/test_api_auth.py`` checks the app has no route neither table names)."""

OWN_LISTS = {
    ("GET", "/api/v1/handovers"),
    ("GET", "/api/v1/handovers/stats"),
    ("GET", "/api/v1/canned"),
    ("GET", "/api/v1/agents"),
}
"""Desk routes that answer the caller's own tenant's data whatever the caller names."""
CREATES_OWN = {("POST", "/api/v1/canned")}
AGENT_ONLY = {("GET", "/api/v1/agents/me"), ("POST", "/api/v1/agents/me/presence")}
PUBLIC = {("POST", "/api/v1/agents/sign-in")}
ALL = {**ROUTES, **DESK_ROUTES}


@dataclass
class DeskWorld:
    """Tenant B's desk, and tenant A's key and agent."""

    key_a: str
    key_b: str
    agent_a: DeskAgent
    agent_b: DeskAgent
    refs: dict[str, str]


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


@pytest.fixture
async def world(client: httpx.AsyncClient) -> DeskWorld:
    world = await two_tenants(client, plugins=("rest", "smalltalk", "handoff"), text="agent", escalates=True)
    key_a, key_b = world.key_a, world.key_b
    agent_a = await make_agent(client, "alpha", key_a, "al@alpha.test")
    agent_b = await make_agent(client, "beta", key_b, "bo@beta.test", teams=["vip"])
    [handover] = await agent_b.queue()
    r = await agent_b.call("POST", f"/api/v1/handovers/{handover['id']}/notes", {"text": "beta's secret note"})
    assert r.status_code == 201, r.text
    r = await client.put("/api/v1/tenants/beta/teams/vip", json={"hours": {"mon": [["09:00", "17:00"]]}})
    assert r.status_code == 200, r.text
    r = await agent_b.call("POST", "/api/v1/canned", {"team": "vip", "shortcut": "hi", "text": "beta's canned"})
    assert r.status_code == 201, r.text
    refs = world.refs | {
        "key_id": str(uuid.uuid4()),
        "handover_id": handover["id"],
        "agent_id": agent_b.id,
        "team": "vip",
        "response_id": r.json()["id"],
    }
    return DeskWorld(key_a=key_a, key_b=key_b, agent_a=agent_a, agent_b=agent_b, refs=refs)


async def call(
    client: httpx.AsyncClient, method: str, template: str, refs: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    """Call a route of either table; without an ``Authorization`` in ``headers`` the request has none."""
    return await call_route(client, method, template, refs, headers, ALL)


def missing(refs: dict[str, str]) -> dict[str, str]:
    """The desk's references to things that do not exist."""
    return {**refs, "tenant": str(uuid.uuid4()), "handover_id": str(uuid.uuid4()), "agent_id": str(uuid.uuid4()),
            "team": "nobody", "response_id": str(uuid.uuid4())}  # fmt: skip


def masked(response: httpx.Response, refs: dict[str, str]) -> tuple[int, str]:
    detail = str(response.json().get("detail", ""))
    for value in sorted(refs.values(), key=len, reverse=True):
        detail = detail.replace(value, "<ref>")
    return response.status_code, detail


SECRETS = ("beta's secret note", "beta's canned", "bo@beta.test", "agent")


async def test_tenant_a_reaches_nothing_of_tenant_bs_desk(client: httpx.AsyncClient, world: DeskWorld) -> None:
    for attacker in (bearer(world.key_a), world.agent_a.headers):
        is_agent = attacker == world.agent_a.headers
        for method, template in sorted(DESK_ROUTES):
            r = await call(client, method, template, world.refs, attacker)
            where = f"{'agent' if is_agent else 'key'} {method} {template}: {r.status_code} {r.text}"
            if (method, template) in PUBLIC:
                assert r.status_code == 401, where
            elif template.startswith("/api/v1/tenants/") and is_agent:
                assert r.status_code == 403, f"an agent's token never reaches tenant admin routes: {where}"
            elif (method, template) in AGENT_ONLY:
                assert r.status_code == (200 if is_agent else 403), where
                assert "bo@beta.test" not in r.text
            elif (method, template) in OWN_LISTS:
                assert r.status_code == 200, where
                assert not any(s in r.text for s in SECRETS[:3]) and world.refs["handover_id"] not in r.text, where
            elif (method, template) in CREATES_OWN:  # in A's own tenant (the second caller finds the first's)
                assert r.status_code == (409 if is_agent else 201), where
            else:
                assert r.status_code == 404, where
                nothing = missing(world.refs)
                ghost = await call(client, method, template, nothing, attacker)
                assert masked(r, world.refs) == masked(ghost, nothing), where

    # nothing of B's changed
    b = world.agent_b
    [handover] = await b.queue()
    assert handover["status"] == "waiting" and handover["agent_id"] is None
    notes = (await b.call("GET", f"/api/v1/handovers/{handover['id']}/notes")).json()
    assert [n["text"] for n in notes] == ["beta's secret note"]
    canned = (await b.call("GET", "/api/v1/canned")).json()
    assert [(c["shortcut"], c["text"]) for c in canned] == [("hi", "beta's canned")]
    agents = (await client.get("/api/v1/tenants/beta/agents", headers=bearer(world.key_b))).json()
    assert [a["name"] for a in agents] == ["Bo"]
    teams = (await client.get("/api/v1/tenants/beta/teams", headers=bearer(world.key_b))).json()
    assert [t["name"] for t in teams] == ["vip"]
    transcript = (await client.get(f"/api/v1/conversations/{world.refs['conversation_id']}", headers=OPERATOR)).json()
    assert "planted" not in str(transcript["messages"])
    # and B's own agent, key and the operator read every GET route of the desk
    for method, template in sorted(DESK_ROUTES):
        if method != "GET":
            continue
        for who in (b.headers, bearer(world.key_b), OPERATOR):
            is_b = who == b.headers
            if template == "/api/v1/agents/me":
                expected = 200 if is_b else 403
            else:  # the tenant's admin routes are never an agent's
                expected = 403 if is_b and template.startswith("/api/v1/tenants/") else 200
            params = {"tenant": "beta"} if who is OPERATOR and not template.startswith("/api/v1/tenants/") else {}
            r = await client.get(render(template, world.refs), params=params, headers=who)
            assert r.status_code == expected, f"{method} {template}: {r.status_code} {r.text}"


async def test_an_agents_token_reaches_only_the_desk(client: httpx.AsyncClient, world: DeskWorld) -> None:
    agent = world.agent_b.headers
    for method, template in sorted(ROUTES):
        names = re.findall(r"\{(\w+):str\}", template)  # routes of other areas may name more than this world has
        refs = {**{name: str(uuid.uuid4()) for name in names}, **world.refs}
        r = await call(client, method, template, refs, agent)
        assert r.status_code == 403, f"{method} {template}: {r.status_code} {r.text}"
        assert "desk" in r.json()["detail"]
    assert (await client.get("/api/v1/handovers", headers=agent)).status_code == 200


async def test_missing_malformed_or_dead_tokens_get_401(client: httpx.AsyncClient, world: DeskWorld) -> None:
    r = await client.delete(f"/api/v1/tenants/beta/agents/{world.agent_b.id}", headers=bearer(world.key_b))
    assert r.status_code == 204
    dead = {"Authorization": f"Bearer {world.agent_b.token}"}
    forged = {"Authorization": "Bearer bla_not-a-real-token"}
    session = {"Authorization": "Bearer bls_not-a-real-session"}
    for headers in [*MALFORMED, dead, forged, session]:
        for method, template in sorted(DESK_ROUTES):
            r = await call(client, method, template, world.refs, headers)
            assert r.status_code == 401, f"{headers} {method} {template}: {r.status_code} {r.text}"
            assert r.headers.get("www-authenticate", "").startswith("Bearer")


async def test_sign_in_with_the_password_only(client: httpx.AsyncClient, world: DeskWorld, services: Services) -> None:
    good = {"tenant": "beta", "email": "BO@beta.test", "password": "correct horse battery"}
    r = await client.post("/api/v1/agents/sign-in", json=good)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token.startswith("bls_") and r.json()["agent"]["id"] == world.agent_b.id
    assert (await client.get("/api/v1/agents/me", headers=bearer(token))).json()["email"] == "bo@beta.test"
    for wrong in (
        {**good, "password": "correct horse batter"},
        {**good, "tenant": "alpha"},
        {**good, "email": "x@y.z"},
    ):
        r = await client.post("/api/v1/agents/sign-in", json=wrong)
        assert r.status_code == 401, r.text
    # the password is stored as an Argon2id hash, never as itself
    async with services.db.connection() as conn:
        rows = await (await conn.execute("SELECT password_hash, token_hash FROM agents")).fetchall()
    assert all(row["password_hash"].startswith("$argon2id$") for row in rows)
    assert not any("correct horse" in row["password_hash"] for row in rows)
    assert all(world.agent_b.token.encode() not in bytes(row["token_hash"]) for row in rows)


HOSTILE: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/handovers/{handover_id:str}/messages", {"text": ""}, "text"),
    ("POST", "/api/v1/handovers/{handover_id:str}/messages", {"text": "x" * 4001}, "text"),
    ("POST", "/api/v1/handovers/{handover_id:str}/messages", {"text": "a\x00b"}, "text"),
    ("POST", "/api/v1/handovers/{handover_id:str}/messages", {"text": "hi", "html": "<b>"}, "html"),
    ("POST", "/api/v1/handovers/{handover_id:str}/messages", {"text": 5}, "text"),
    ("POST", "/api/v1/handovers/{handover_id:str}/release", {"note": "n\x07"}, "note"),
    ("POST", "/api/v1/handovers/{handover_id:str}/notes", {"text": "y" * 5000}, "text"),
    ("POST", "/api/v1/agents/me/presence", {"status": "invisible"}, "status"),
    ("POST", "/api/v1/canned", {"shortcut": "two words", "text": "x"}, "shortcut"),
    ("POST", "/api/v1/canned", {"shortcut": "ok", "text": ""}, "text"),
]
ADMIN_HOSTILE: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/tenants/beta/agents", {"email": "no-at-sign", "name": "X", "password": "long enough"}, "email"),
    ("POST", "/api/v1/tenants/beta/agents", {"email": "a@b.c", "name": "X", "password": "short"}, "password"),
    ("POST", "/api/v1/tenants/beta/agents", {"email": "a@b.c", "name": "X\x1b", "password": "long enough"}, "name"),
    (
        "POST",
        "/api/v1/tenants/beta/agents",
        {"email": "a@b.c", "name": "X", "password": "long enough", "capacity": 0},
        "capacity",
    ),
    (
        "POST",
        "/api/v1/tenants/beta/agents",
        {"email": "a@b.c", "name": "X", "password": "long enough", "teams": ["x"] * 21},
        "teams",
    ),
    ("PUT", "/api/v1/tenants/beta/teams/vip", {"hours": {"mon": [["25:00", "26:00"]]}}, "hours"),
    ("PUT", "/api/v1/tenants/beta/teams/vip", {"hours": {"someday": [["09:00", "10:00"]]}}, "someday"),
    ("PUT", "/api/v1/tenants/beta/teams/vip", {"hours": {"mon": [["17:00", "09:00"]]}}, "hours"),
    ("PUT", "/api/v1/tenants/beta/teams/vip", {"timezone": "Mars/Olympus"}, "timezone"),
]


async def test_hostile_bodies_are_400s_naming_the_field(client: httpx.AsyncClient, world: DeskWorld) -> None:
    b = world.agent_b
    [handover] = await b.queue()
    await b.call("POST", f"/api/v1/handovers/{handover['id']}/claim")
    for method, template, body, field in HOSTILE:
        path = template.replace("{handover_id:str}", handover["id"])
        r = await b.call(method, path, body)
        assert r.status_code == 400, f"{method} {path} {body!r}: {r.status_code} {r.text}"
        assert field in r.text, r.text
    for method, path, body, field in ADMIN_HOSTILE:
        r = await client.request(method, path, json=body, headers=bearer(world.key_b))
        assert r.status_code == 400, f"{method} {path} {body!r}: {r.status_code} {r.text}"
        assert field in r.text, r.text
    r = await b.call("POST", f"/api/v1/handovers/{handover['id']}/messages", None)
    assert r.status_code == 400
    r = await client.post(
        f"/api/v1/handovers/{handover['id']}/messages",
        content=b'{"text": "' + b"x" * 2_000_000 + b'"}',
        headers={**b.headers, "content-type": "application/json"},
    )
    assert r.status_code == 413
    r = await b.call("GET", "/api/v1/handovers?status=lost")
    assert r.status_code == 400 and "lost" in r.text
    for bad in ("not-a-uuid", "0" * 200, "%00"):
        r = await b.call("GET", f"/api/v1/handovers/{bad}")
        assert r.status_code in (400, 404), r.text
    transcript = (await client.get(f"/api/v1/conversations/{world.refs['conversation_id']}", headers=OPERATOR)).json()
    assert [m["text"] for m in transcript["messages"] if m["direction"] == "outbound"][1:] == []


async def test_a_password_hashed_before_the_transaction_is_stored_as_it_is(store: Store) -> None:
    """The API hashes an agent's password before its transaction (Argon2 takes a while); the repository keeps it."""
    tenant = await store.tenants.create("hashers", "Hashers")
    agent, _ = await store.agents.create(
        tenant.id, email="ada@hashers.test", name="Ada", password=await hashed_password("first-pass")
    )
    assert await store.agents.sign_in(tenant.id, "ada@hashers.test", "first-pass") is not None
    await store.agents.update(tenant.id, agent.id, {"password": await hashed_password("second-pass")})
    assert await store.agents.sign_in(tenant.id, "ada@hashers.test", "first-pass") is None
    assert await store.agents.sign_in(tenant.id, "ada@hashers.test", "second-pass") is not None
    await store.agents.update(tenant.id, agent.id, {"password": "third-pass"})  # a plain one is still hashed
    assert await store.agents.sign_in(tenant.id, "ada@hashers.test", "third-pass") is not None
