"""The authorization matrix of ``/api/v1``: every route, every kind of caller.

Two tenants are made through the API with the operator's token; then every
route is tried on tenant B's resources with tenant A's key (404 with no hint
the resource exists, or 403 for the operator's routes), with a revoked key
(401), without a token and with malformed ``Authorization`` headers (401).
The table of routes is compared with the app's own routes, so a new route
that is not added here fails :func:`test_route_table_covers_every_api_route`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar.routes import HTTPRoute

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.app import create_app
from tests.conftest import ADMIN_TOKEN
from tests.test_api_resources import api_client, bearer
from tests.worlds import World, two_tenants


@dataclass(frozen=True)
class Call:
    """How to call one route: its body or query."""

    json: Any = None
    files: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


DOC = Call(json={"name": "planted.md", "content": "# Planted\n\nThis should never be stored."})
UPLOAD = Call(files={"file": ("planted.txt", b"This should never be stored.", "text/plain")})

ROUTES: dict[tuple[str, str], Call] = {
    ("POST", "/api/v1/tenants"): Call(json={"slug": "gamma", "name": "Gamma"}),
    ("GET", "/api/v1/tenants"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}"): Call(),
    ("DELETE", "/api/v1/tenants/{tenant:str}"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/keys"): Call(),
    ("POST", "/api/v1/tenants/{tenant:str}/keys"): Call(json={"name": "planted"}),
    ("DELETE", "/api/v1/tenants/{tenant:str}/keys/{key_id:str}"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/bots"): Call(),
    ("POST", "/api/v1/tenants/{tenant:str}/bots"): Call(json={"slug": "planted", "name": "Planted"}),
    ("GET", "/api/v1/bots/{bot:str}"): Call(),
    ("PATCH", "/api/v1/bots/{bot:str}"): Call(json={"name": "Hijacked", "persona": "Obey me."}),
    ("DELETE", "/api/v1/bots/{bot:str}"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/plugins"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/plugins/{plugin:str}"): Call(),
    ("PUT", "/api/v1/bots/{bot:str}/plugins/{plugin:str}"): Call(json={"enabled": False}),
    ("GET", "/api/v1/bots/{bot:str}/knowledge"): Call(),
    ("POST", "/api/v1/bots/{bot:str}/knowledge"): DOC,
    ("POST", "/api/v1/bots/{bot:str}/knowledge/files"): UPLOAD,
    ("DELETE", "/api/v1/bots/{bot:str}/knowledge/{document:str}"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/knowledge/search"): Call(params={"q": "refund"}),
    ("GET", "/api/v1/bots/{bot:str}/conversations"): Call(),
    ("GET", "/api/v1/conversations/{conversation_id:str}"): Call(),
    ("GET", "/api/v1/conversations/{conversation_id:str}/checkpoints"): Call(),
    ("POST", "/api/v1/bots/{bot:str}/messages"): Call(json={"text": "hello"}),
    ("GET", "/api/v1/bots/{bot:str}/dead-letters"): Call(),
    ("POST", "/api/v1/messages/{message_id:str}/retry"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/webhooks"): Call(),
    ("POST", "/api/v1/tenants/{tenant:str}/webhooks"): Call(json={"url": "http://127.0.0.1:9/planted"}),
    ("DELETE", "/api/v1/tenants/{tenant:str}/webhooks/{webhook_id:str}"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/webhooks/{webhook_id:str}/deliveries"): Call(),
    ("GET", "/api/v1/events"): Call(),
    ("GET", "/api/v1/debug/bots"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/graph"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/graph/json"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/debug/conversations"): Call(),
    ("GET", "/api/v1/conversations/{conversation_id:str}/transcript"): Call(),
    ("GET", "/api/v1/conversations/{conversation_id:str}/turns"): Call(),
    ("GET", "/api/v1/conversations/{conversation_id:str}/turns/{checkpoint_id:str}"): Call(),
    ("POST", "/api/v1/conversations/{conversation_id:str}/forks"): Call(json={"checkpoint_id": "x", "text": "planted"}),
    ("GET", "/api/v1/conversations/{conversation_id:str}/forks"): Call(),
    ("POST", "/api/v1/conversations/{conversation_id:str}/replay"): Call(json={}),
    ("GET", "/api/v1/conversations/{conversation_id:str}/golden-test"): Call(),
    ("GET", "/api/v1/forks/{fork_id:str}"): Call(),
    ("POST", "/api/v1/forks/{fork_id:str}/continue"): Call(json={}),
    ("DELETE", "/api/v1/forks/{fork_id:str}"): Call(),
    ("GET", "/api/v1/forks/{fork_id:str}/golden-test"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/synonyms"): Call(),
    ("PUT", "/api/v1/bots/{bot:str}/synonyms"): Call(json={"synonyms": {"planted": "refund"}}),
    ("GET", "/api/v1/bots/{bot:str}/intents/{intent:str}/examples"): Call(),
    ("POST", "/api/v1/bots/{bot:str}/intents/{intent:str}/examples"): Call(json={"text": "planted example"}),
    ("DELETE", "/api/v1/bots/{bot:str}/intents/{intent:str}/examples/{example:str}"): Call(),
    ("GET", "/api/v1/bots/{bot:str}/fallbacks"): Call(),
    ("POST", "/api/v1/bots/{bot:str}/teaching/preview"): Call(json={"synonyms": {"planted": "refund"}}),
    ("GET", "/api/v1/tenants/{tenant:str}/contacts/export"): Call(params={"channel": "rest", "address": "rest-user"}),
    ("DELETE", "/api/v1/tenants/{tenant:str}/contacts"): Call(params={"channel": "rest", "address": "rest-user"}),
    ("DELETE", "/api/v1/conversations/{conversation_id:str}"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/budget"): Call(),
    ("PUT", "/api/v1/tenants/{tenant:str}/budget"): Call(json={"monthly_usd": 1000}),
    ("DELETE", "/api/v1/tenants/{tenant:str}/budget"): Call(),
    ("GET", "/api/v1/tenants/{tenant:str}/usage"): Call(params={"group_by": "bot"}),
    ("GET", "/api/v1/audit"): Call(),
}
OPERATOR_ONLY = {("POST", "/api/v1/tenants"), ("DELETE", "/api/v1/tenants/{tenant:str}")}
LISTS_OWN = {("GET", "/api/v1/tenants"), ("GET", "/api/v1/debug/bots")}
"""Routes a tenant may call that answer only the caller's own data."""


def api_routes(settings: Settings) -> set[tuple[str, str]]:
    """Every (method, path) of the app under ``/api/v1`` (HTTP, not the chat WebSocket)."""
    app = create_app(settings)
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/api/v1/")
        for method in route.methods - {"OPTIONS", "HEAD"}
    }


def test_route_table_covers_every_api_route(settings: Settings) -> None:
    from tests.test_desk_auth import DESK_ROUTES  # the agent desk's routes, with their own matrix

    assert api_routes(settings) == set(ROUTES) | set(DESK_ROUTES)


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    world = await two_tenants(client, plugins=("rest", "smalltalk"))
    key_b, conversation, checkpoint = world.key_b, world.refs["conversation_id"], world.refs["checkpoint_id"]
    r = await client.post("/api/v1/bots/beta/helper/knowledge", json={"name": "faq.md", "content": "# FAQ\n\nRefunds."})
    assert r.status_code == 201, r.text
    fork = await client.post(
        f"/api/v1/conversations/{conversation}/forks", json={"checkpoint_id": checkpoint}, headers=bearer(key_b)
    )
    assert fork.status_code == 201, fork.text
    example = await client.post("/api/v1/bots/beta/helper/intents/greeting/examples", json={"text": "howdy partner"})
    assert example.status_code == 201, example.text
    r = await client.post("/api/v1/tenants/beta/keys", json={"name": "spare"})
    assert r.status_code == 201, r.text
    budget = await client.put("/api/v1/tenants/beta/budget", json={"monthly_usd": 5, "on_exhausted": "refuse"})
    assert budget.status_code == 200, budget.text
    world.refs |= {
        "key_id": r.json()["id"],
        "fork_id": fork.json()["fork_id"],
        "intent": "greeting",
        "example": example.json()["id"],
    }
    return world


def render(template: str, refs: dict[str, str]) -> str:
    path = template
    for name, value in refs.items():
        path = path.replace(f"{{{name}:str}}", value)
    assert "{" not in path, path
    return path


async def call(
    client: httpx.AsyncClient,
    method: str,
    template: str,
    refs: dict[str, str],
    headers: dict[str, str],
    routes: Mapping[tuple[str, str], Call] | None = None,
) -> httpx.Response:
    """Call a route of the table (``routes``: another); without an ``Authorization`` in ``headers``, it has none."""
    spec = (ROUTES if routes is None else routes)[(method, template)]
    request = client.build_request(
        method, render(template, refs), json=spec.json, files=spec.files, params=spec.params, headers=headers
    )
    if not any(name.lower() == "authorization" for name in headers):
        del request.headers["authorization"]
    return await client.send(request)


def by_slug(refs: dict[str, str]) -> dict[str, str]:
    """The same resources named by slugs (``beta``, ``beta/helper``) instead of ids."""
    return {**refs, "tenant": "beta", "bot": "beta/helper"}


def missing(refs: dict[str, str]) -> dict[str, str]:
    """References to resources that do not exist at all."""
    nobody = str(uuid.uuid4())
    return {
        "tenant": nobody,
        "bot": str(uuid.uuid4()),
        "key_id": str(uuid.uuid4()),
        "plugin": refs["plugin"],
        "document": "nothing.md",
        "conversation_id": str(uuid.uuid4()),
        "message_id": str(uuid.uuid4()),
        "webhook_id": str(uuid.uuid4()),
        "checkpoint_id": str(uuid.uuid4()),
        "fork_id": str(uuid.uuid4()),
        "intent": refs["intent"],
        "example": str(uuid.uuid4()),
    }


def masked(response: httpx.Response, refs: dict[str, str]) -> tuple[int, str]:
    """Status and detail with the references taken out, to compare answers about different resources."""
    detail = str(response.json().get("detail", ""))
    for value in sorted(refs.values(), key=len, reverse=True):
        detail = detail.replace(value, "<ref>")
    return response.status_code, detail


async def test_other_tenants_resources_are_invisible(client: httpx.AsyncClient, world: World) -> None:
    attacker = bearer(world.key_a)
    for method, template in sorted(ROUTES):
        for refs in (world.refs, by_slug(world.refs)):
            r = await call(client, method, template, refs, attacker)
            where = f"{method} {render(template, refs)}"
            if (method, template) in OPERATOR_ONLY:
                assert r.status_code == 403, where
            elif (method, template) == ("GET", "/api/v1/events"):  # the caller's own events: none
                assert r.status_code == 200 and r.json()["events"] == [], where
            elif (method, template) == ("GET", "/api/v1/audit"):  # the caller's own tenant's rows only
                assert r.status_code == 200 and r.json()["items"], where
                assert all(row["tenant_id"] != world.refs["tenant"] for row in r.json()["items"]), where
            elif (method, template) in LISTS_OWN:
                assert r.status_code == 200, where
                assert [t.get("tenant_slug", t["slug"]) for t in r.json()] == ["alpha"], where
            else:
                assert r.status_code == 404, f"{where}: {r.status_code} {r.text}"
                # the same answer as for something that does not exist: no hint that it does
                nothing = missing(refs)
                ghost = await call(client, method, template, nothing, attacker)
                assert masked(r, refs) == masked(ghost, nothing), where

    # nothing of B's changed, nothing was planted
    owner = bearer(world.key_b)
    bot = (await client.get("/api/v1/bots/beta/helper", headers=owner)).json()
    assert bot["name"] == "Helper"
    assert "Obey" not in bot["settings"]["persona"]
    assert [b["slug"] for b in (await client.get("/api/v1/tenants/beta/bots", headers=owner)).json()] == ["helper"]
    keys = (await client.get("/api/v1/tenants/beta/keys", headers=owner)).json()
    assert [(k["name"], k["revoked"]) for k in keys] == [("default", False), ("spare", False)]
    documents = (await client.get("/api/v1/bots/beta/helper/knowledge", headers=owner)).json()
    assert [d["name"] for d in documents] == ["faq.md"]
    smalltalk = (await client.get("/api/v1/bots/beta/helper/plugins/smalltalk", headers=owner)).json()
    assert smalltalk["enabled"] is True
    budget = (await client.get("/api/v1/tenants/beta/budget", headers=owner)).json()
    assert (budget["monthly_usd"], budget["on_exhausted"]) == (5.0, "refuse")
    assert [t["slug"] for t in (await client.get("/api/v1/tenants")).json()] == ["alpha", "beta"]
    # and the owner (and the operator) can read every one of those routes
    for method, template in sorted(ROUTES):
        if method == "GET":
            for headers in (owner, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
                r = await call(client, method, template, world.refs, headers)
                assert r.status_code == 200, f"{method} {template}: {r.status_code} {r.text}"


async def test_revoked_key_gets_401_everywhere(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post("/api/v1/tenants/beta/keys", json={"name": "doomed"}, headers=bearer(world.key_b))
    doomed = r.json()
    assert (await client.get("/api/v1/tenants/beta", headers=bearer(doomed["key"]))).status_code == 200
    r = await client.delete(f"/api/v1/tenants/beta/keys/{doomed['id']}", headers=bearer(world.key_b))
    assert r.status_code == 204
    for method, template in sorted(ROUTES):
        r = await call(client, method, template, world.refs, bearer(doomed["key"]))
        assert r.status_code == 401, f"{method} {template}: {r.status_code} {r.text}"
    assert (await client.get("/api/v1/tenants/beta", headers=bearer(world.key_b))).status_code == 200


MALFORMED = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer    "},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": f"Token {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": "Bearer blk_not-a-real-key"},
    {"X-Api-Key": ADMIN_TOKEN},
]


async def test_missing_or_malformed_credentials_get_401(client: httpx.AsyncClient, world: World) -> None:
    for headers in MALFORMED:
        for method, template in sorted(ROUTES):
            r = await call(client, method, template, world.refs, headers)
            assert r.status_code == 401, f"{headers} {method} {template}: {r.status_code} {r.text}"
            assert r.headers.get("www-authenticate", "").startswith("Bearer")
            assert r.json()["status_code"] == 401
    assert [t["slug"] for t in (await client.get("/api/v1/tenants")).json()] == ["alpha", "beta"]
