"""The ``/api/v1`` JSON API end to end: tenants, keys, bots, plugins, knowledge, conversations.

Everything goes through the real app on a real PostgreSQL; the app runs in the
test's event loop (httpx's ASGI transport), so the services the fixtures open
are the ones the routes use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from botloom import Secret, hookimpl
from botloom.core.config import MASK
from botloom.core.domain import BotSettings
from botloom.core.host import PluginHost
from botloom.core.settings import Settings, load_settings
from botloom.runtime.services import Services, open_services
from botloom.server.api.schemas import BotSettingsPatch, ModelSettingsPatch
from botloom.server.app import MAX_BODY_BYTES, create_app
from botloom.server.demo import DemoInfo, ensure_demo
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def api_client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with the operator's token, running in this event loop.

    Litestar 2's ``AsyncTestClient`` runs the app on another thread's loop,
    where the services' connection pool (bound to this loop) cannot grow, so
    the app runs here behind httpx's ASGI transport instead. Its lifespan runs
    in a task of its own: a fixture's setup and teardown run in different tasks,
    and anyio's cancel scopes must be left in the task that entered them.
    """
    app = create_app(settings, services=services)
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # startup failed: raise its error
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=ADMIN) as c:
            yield c
    finally:
        stop.set()
        await task


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def make_tenant(client: httpx.AsyncClient, slug: str) -> tuple[dict[str, Any], str]:
    r = await client.post("/api/v1/tenants", json={"slug": slug, "name": slug.title()})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["tenant"], body["api_key"]["key"]


async def make_bot(client: httpx.AsyncClient, tenant: str, slug: str, **extra: Any) -> dict[str, Any]:
    r = await client.post(f"/api/v1/tenants/{tenant}/bots", json={"slug": slug, "name": slug.title(), **extra})
    assert r.status_code == 201, r.text
    return r.json()


def field_errors(response: httpx.Response) -> set[str]:
    """The fields a 400 names in ``extra``."""
    assert response.status_code == 400, response.text
    return {e.get("key") or e.get("field") for e in response.json().get("extra") or []}


# -- tenants and keys -------------------------------------------------------------------


async def test_tenant_lifecycle(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tenants", json={"slug": "acme", "name": "Acme Inc."})
    assert r.status_code == 201, r.text
    body = r.json()
    tenant, key = body["tenant"], body["api_key"]
    assert tenant["slug"] == "acme"
    assert tenant["name"] == "Acme Inc."
    assert key["key"].startswith(key["prefix"])
    assert len(key["key"]) > 30

    assert (await client.post("/api/v1/tenants", json={"slug": "acme", "name": "Again"})).status_code == 409
    other, _ = await make_tenant(client, "globex")

    listed = (await client.get("/api/v1/tenants")).json()
    assert [t["slug"] for t in listed] == ["acme", "globex"]
    by_slug = (await client.get("/api/v1/tenants/acme")).json()
    by_id = (await client.get(f"/api/v1/tenants/{tenant['id']}")).json()
    assert by_slug == by_id == tenant

    # the tenant's own key sees only its own tenant, and the key itself is never listed again
    mine = await client.get("/api/v1/tenants", headers=bearer(key["key"]))
    assert [t["slug"] for t in mine.json()] == ["acme"]
    assert (await client.get(f"/api/v1/tenants/{other['id']}", headers=bearer(key["key"]))).status_code == 404

    assert (await client.delete("/api/v1/tenants/acme")).status_code == 204
    assert (await client.get("/api/v1/tenants/acme")).status_code == 404
    assert (await client.delete("/api/v1/tenants/acme")).status_code == 404
    assert (await client.get("/api/v1/tenants", headers=bearer(key["key"]))).status_code == 401


async def test_tenant_validation_names_fields(client: httpx.AsyncClient) -> None:
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "Not A Slug", "name": "x"})) == {"slug"}
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "-dash", "name": "x"})) == {"slug"}
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "a" * 64, "name": "x"})) == {"slug"}
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "ok"})) == {"name"}
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "ok", "name": 3})) == {"name"}
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "ok", "name": "x" * 201})) == {"name"}
    assert field_errors(await client.post("/api/v1/tenants", json={"slug": "ok", "name": "a\u0000b"})) == {"name"}
    r = await client.post("/api/v1/tenants", json={"slug": "ok", "name": "x", "plan": "gold"})
    assert r.status_code == 400
    assert "plan" in r.text
    assert (await client.post("/api/v1/tenants", json=["ok"])).status_code == 400
    assert (await client.get("/api/v1/tenants")).json() == []  # nothing half-written


async def test_malformed_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    json_header = {"content-type": "application/json"}
    r = await client.post("/api/v1/tenants", content=b'{"slug": "acme", ', headers=json_header)
    assert r.status_code == 400
    assert r.json()["detail"]
    r = await client.post("/api/v1/tenants", content=b"{slug: acme}", headers=json_header)
    assert r.status_code == 400
    assert "malformed" in r.json()["detail"].lower()
    assert (await client.post("/api/v1/tenants", content=b"", headers=json_header)).status_code == 400
    big = b'{"slug": "acme", "name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    assert (await client.post("/api/v1/tenants", content=big, headers=json_header)).status_code == 413
    r = await client.patch("/api/v1/bots/acme/support", content=b"{", headers=json_header)
    assert r.status_code in (400, 404)
    assert (await client.get("/api/v1/tenants")).json() == []


async def test_api_keys(client: httpx.AsyncClient) -> None:
    _, first = await make_tenant(client, "acme")
    r = await client.post("/api/v1/tenants/acme/keys", json={"name": "ci"}, headers=bearer(first))
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["name"] == "ci"
    assert (await client.get("/api/v1/tenants", headers=bearer(second["key"]))).status_code == 200

    listing = await client.get("/api/v1/tenants/acme/keys", headers=bearer(second["key"]))
    assert [k["name"] for k in listing.json()] == ["default", "ci"]
    assert first not in listing.text
    assert second["key"] not in listing.text
    assert all(k["revoked"] is False for k in listing.json())

    r = await client.delete(f"/api/v1/tenants/acme/keys/{second['id']}", headers=bearer(first))
    assert r.status_code == 204
    assert (await client.get("/api/v1/tenants", headers=bearer(second["key"]))).status_code == 401
    assert (await client.delete(f"/api/v1/tenants/acme/keys/{second['id']}")).status_code == 404
    assert (await client.delete("/api/v1/tenants/acme/keys/not-an-id")).status_code == 404
    revoked = {k["id"]: k for k in (await client.get("/api/v1/tenants/acme/keys")).json()}[second["id"]]
    assert revoked["revoked"] is True
    assert revoked["revoked_at"] is not None

    assert field_errors(await client.post("/api/v1/tenants/acme/keys", json={"name": ""})) == {"name"}
    r = await client.post("/api/v1/tenants/acme/keys", json={})
    assert r.status_code == 201
    assert r.json()["name"] == "default"


# -- bots -------------------------------------------------------------------------------


async def test_bot_crud_by_id_and_by_slugs(client: httpx.AsyncClient) -> None:
    await make_tenant(client, "acme")
    bot = await make_bot(client, "acme", "support", settings={"persona": "Be brief.", "model": {"temperature": 0.5}})
    assert bot["settings"]["persona"] == "Be brief."
    assert bot["settings"]["model"]["temperature"] == 0.5
    assert bot["settings"]["model"]["max_tokens"] == BotSettings().model.max_tokens
    assert bot["settings"]["escalation_threshold"] == BotSettings().escalation_threshold

    r = await client.post("/api/v1/tenants/acme/bots", json={"slug": "support", "name": "Again"})
    assert r.status_code == 409
    assert (await client.get(f"/api/v1/bots/{bot['id']}")).json() == bot
    assert (await client.get("/api/v1/bots/acme/support")).json() == bot
    assert [b["id"] for b in (await client.get("/api/v1/tenants/acme/bots")).json()] == [bot["id"]]

    # partial: top-level settings fields, or under "settings"; nested model fields merge
    r = await client.patch("/api/v1/bots/acme/support", json={"name": "Help", "escalation_threshold": 0.5})
    assert r.status_code == 200, r.text
    r = await client.patch(
        f"/api/v1/bots/{bot['id']}",
        json={"settings": {"model": {"max_tokens": 100}, "burst_policy": "merge", "retention_days": 30}},
    )
    assert r.status_code == 200, r.text
    r = await client.patch(
        "/api/v1/bots/acme/support", json={"allowed_origins": ["https://shop.example"], "fallback_reply": "Hm?"}
    )
    patched = r.json()
    assert patched["name"] == "Help"
    settings = patched["settings"]
    assert settings["persona"] == "Be brief."
    assert settings["escalation_threshold"] == 0.5
    assert settings["model"] == {**settings["model"], "temperature": 0.5, "max_tokens": 100}
    assert settings["burst_policy"] == "merge"
    assert settings["retention_days"] == 30
    assert settings["allowed_origins"] == ["https://shop.example"]
    assert settings["fallback_reply"] == "Hm?"
    assert patched["updated_at"] >= bot["updated_at"]
    r = await client.patch("/api/v1/bots/acme/support", json={"retention_days": None})
    assert r.json()["settings"]["retention_days"] is None

    # validation names the field and changes nothing
    assert field_errors(await client.patch("/api/v1/bots/acme/support", json={"escalation_threshold": 2})) == {
        "escalation_threshold"
    }
    r = await client.patch("/api/v1/bots/acme/support", json={"settings": {"model": {"temperature": "hot"}}})
    assert field_errors(r) == {"settings.model.temperature"}
    r = await client.patch("/api/v1/bots/acme/support", json={"burst_policy": "drop"})
    assert field_errors(r) == {"burst_policy"}
    r = await client.patch("/api/v1/bots/acme/support", json={"persona": "a", "settings": {"persona": "b"}})
    assert field_errors(r) == {"persona"}
    r = await client.patch("/api/v1/bots/acme/support", json={"colour": "red"})
    assert r.status_code == 400
    assert "colour" in r.text
    assert (await client.get("/api/v1/bots/acme/support")).json()["settings"] == settings | {"retention_days": None}

    assert field_errors(await client.post("/api/v1/tenants/acme/bots", json={"slug": "Sales!", "name": "S"})) == {
        "slug"
    }
    r = await client.post("/api/v1/tenants/acme/bots", json={"slug": "sales", "name": "S", "settings": {"x": 1}})
    assert r.status_code == 400
    assert (await client.post("/api/v1/tenants/nobody/bots", json={"slug": "s", "name": "S"})).status_code == 404

    assert (await client.delete("/api/v1/bots/acme/support")).status_code == 204
    assert (await client.get(f"/api/v1/bots/{bot['id']}")).status_code == 404
    assert (await client.get("/api/v1/tenants/acme/bots")).json() == []
    assert (await client.delete("/api/v1/bots/acme/support")).status_code == 404


def test_settings_patch_covers_every_setting() -> None:
    """Adding a field to BotSettings without adding it to the PATCH body fails here."""
    fields = {f.name for f in msgspec.structs.fields(BotSettings)}
    assert {f.name for f in msgspec.structs.fields(BotSettingsPatch)} == fields
    model = {f.name for f in msgspec.structs.fields(type(BotSettings().model))}
    assert {f.name for f in msgspec.structs.fields(ModelSettingsPatch)} == model


# -- plugins and secrets ----------------------------------------------------------------


class VaultConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A throw-away plugin's config with a secret."""

    api_token: Secret
    region: str = "eu"
    retries: int = 3


class VaultPlugin:
    """A plugin that takes a secret in its config."""

    @hookimpl
    def plugin_config_schema(self) -> type[msgspec.Struct]:
        return VaultConfig


@pytest.fixture
async def vault_services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    host = PluginHost.discover()
    host.register(VaultPlugin(), "vault")
    async with open_services(settings, host=host, url=database_url) as opened:
        yield opened


@pytest.fixture
async def vault_client(settings: Settings, vault_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, vault_services):
        yield c


async def test_plugins_config_and_secrets(vault_client: httpx.AsyncClient, vault_services: Services) -> None:
    token, token2 = "tok-very-secret-123456", "tok-rotated-654321"
    answers: list[str] = []
    client = vault_client

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, path, **kwargs)
        answers.append(response.text)
        return response

    await make_tenant(client, "acme")
    bot = await make_bot(client, "acme", "support")
    listing = (await call("GET", "/api/v1/bots/acme/support/plugins")).json()
    by_name = {p["name"]: p for p in listing}
    assert set(by_name) == set(vault_services.host.infos)
    vault = by_name["vault"]
    assert vault["enabled"] is False
    assert vault["configurable"] is True
    assert vault["config"] == {}
    schema = msgspec.json.encode(vault["config_schema"]).decode()
    assert "api_token" in schema
    assert "writeOnly" in schema
    assert by_name["smalltalk"]["configurable"] is False
    assert "intent" in by_name["smalltalk"]["kinds"]

    # every bad field is named
    r = await call("PUT", "/api/v1/bots/acme/support/plugins/vault", json={"config": {"retries": "x", "z": 1}})
    assert field_errors(r) == {"config.api_token", "config.retries", "config.z"}
    r = await call("PUT", "/api/v1/bots/acme/support/plugins/vault", json={"enabled": "yes"})
    assert field_errors(r) == {"enabled"}
    r = await call("PUT", "/api/v1/bots/acme/support/plugins/smalltalk", json={"config": {"x": 1}})
    assert field_errors(r) == {"config.x"}
    assert (await call("PUT", "/api/v1/bots/acme/support/plugins/nope", json={})).status_code == 404
    assert (await call("GET", "/api/v1/bots/acme/support/plugins/nope")).status_code == 404
    assert (await call("GET", "/api/v1/bots/acme/support/plugins/vault")).json()["enabled"] is False

    r = await call(
        "PUT", f"/api/v1/bots/{bot['id']}/plugins/vault", json={"enabled": True, "config": {"api_token": token}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["config"] == {"api_token": MASK, "region": "eu", "retries": 3}
    assert r.json()["enabled"] is True

    # re-saving what was read keeps the secret; leaving it out keeps it too
    read = (await call("GET", "/api/v1/bots/acme/support/plugins/vault")).json()
    r = await call("PUT", "/api/v1/bots/acme/support/plugins/vault", json={"config": read["config"]})
    assert r.status_code == 200, r.text
    r = await call("PUT", "/api/v1/bots/acme/support/plugins/vault", json={"config": {"region": "us"}})
    assert r.json()["config"] == {"api_token": MASK, "region": "us", "retries": 3}
    stored = await vault_services.store.plugin_settings.get(bot["tenant_id"], bot["id"], "vault")
    assert stored is not None
    assert stored.config["api_token"] == token

    # the bot's turns see the secret; only enabled plugins count
    r = await call("PUT", "/api/v1/bots/acme/support/plugins/vault", json={"enabled": False})
    assert r.json()["config"]["region"] == "us"
    found = await vault_services.store.bots.get(bot["tenant_id"], bot["id"])
    assert found is not None
    assert "vault" not in (await vault_services.runner.bot_view(found)).configs
    r = await call(
        "PUT", "/api/v1/bots/acme/support/plugins/vault", json={"enabled": True, "config": {"api_token": token2}}
    )
    assert r.json()["config"] == {"api_token": MASK, "region": "eu", "retries": 3}
    assert (await vault_services.runner.bot_view(found)).configs["vault"]["api_token"] == token2

    # the clear text is in no answer and not in the database, only its ciphertext
    assert not [a for a in answers if token in a or token2 in a]
    async with vault_services.db.connection() as conn:
        cur = await conn.execute("SELECT config::text AS config, secrets FROM bot_plugins WHERE plugin = 'vault'")
        row = await cur.fetchone()
    assert row is not None
    assert "api_token" not in row["config"]
    assert row["secrets"]
    assert token2.encode() not in bytes(row["secrets"])
    assert token.encode() not in bytes(row["secrets"])


# -- knowledge --------------------------------------------------------------------------


async def test_knowledge_documents_and_search(client: httpx.AsyncClient, services: Services) -> None:
    await make_tenant(client, "acme")
    await make_bot(client, "acme", "support")
    base = "/api/v1/bots/acme/support/knowledge"
    doc = {"name": "returns.md", "content": "# Returns\n\nYou can return a jacket within 30 days for a refund."}
    r = await client.post(base, json=doc)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "created"
    assert created["chunks"] >= 1
    assert (await client.post(base, json=doc)).json()["status"] == "unchanged"

    files = {"file": ("hours.txt", b"We are open Monday to Friday, nine to five.", "text/plain")}
    r = await client.post(f"{base}/files", files=files)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "hours.txt"

    listed = (await client.get(base)).json()
    assert [d["name"] for d in listed] == ["hours.txt", "returns.md"]
    assert {d["content_type"] for d in listed} == {"text/plain", "text/markdown"}

    found = (await client.get(f"{base}/search", params={"q": "can I send back my jacket?", "limit": 1})).json()
    assert found["query"] == "can I send back my jacket?"
    assert len(found["passages"]) == 1
    assert found["passages"][0]["document"] == "returns.md"
    assert 0 < found["passages"][0]["score"] <= 1
    assert (await client.get(f"{base}/search")).status_code == 400
    assert (await client.get(f"{base}/search", params={"q": "x", "limit": 0})).status_code == 400
    assert (await client.get(f"{base}/search", params={"q": "x", "limit": 51})).status_code == 400

    # bad files: a clear 400 with the reason, nothing stored
    r = await client.post(base, json={"name": "manual.pdf", "content": "%PDF-1.7"})
    assert r.status_code == 400
    assert "unsupported" in r.json()["detail"]
    r = await client.post(f"{base}/files", files={"file": ("a.csv", b"\x00\x01binary", "text/csv")})
    assert r.status_code == 400
    assert "binary" in r.json()["detail"]
    assert (await client.post(base, json={"name": "empty.md", "content": "  "})).status_code == 400
    r = await client.post(f"{base}/files", files={"other": ("a.md", b"# A", "text/markdown")})
    assert field_errors(r) == {"file"}
    r = await client.post(f"{base}/files", data={"file": "not a file"}, files={"x": ("", b"", "")})
    assert r.status_code == 400
    assert field_errors(await client.post(base, json={"content": "x"})) == {"name"}
    services.knowledge.max_bytes = 1000
    r = await client.post(base, json={"name": "big.md", "content": "word " * 300})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    assert [d["name"] for d in (await client.get(base)).json()] == ["hours.txt", "returns.md"]

    assert (await client.delete(f"{base}/returns.md")).status_code == 204
    assert (await client.delete(f"{base}/{listed[0]['id']}")).status_code == 204
    assert (await client.delete(f"{base}/returns.md")).status_code == 404
    assert (await client.get(base)).json() == []
    assert (await client.get(f"{base}/search", params={"q": "jacket"})).json()["passages"] == []


# -- conversations ----------------------------------------------------------------------


async def test_conversations_and_checkpoints(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    key = bearer(demo.api_key)
    r = await client.post("/api/v1/bots/acme/support/messages", json={"text": "where is my order 1234?"}, headers=key)
    assert r.status_code == 200, r.text
    conversation_id = r.json()["conversation_id"]
    r = await client.post(
        f"/api/v1/bots/{demo.bot.id}/messages",
        json={"text": "I want to talk to a person", "conversation_id": conversation_id},
        headers=key,
    )
    assert r.json()["escalated"] is True

    listed = (await client.get("/api/v1/bots/acme/support/conversations", headers=key)).json()
    assert [c["id"] for c in listed] == [conversation_id]
    assert listed[0]["status"] == "escalated"
    assert (await client.get("/api/v1/bots/acme/support/conversations?limit=0")).status_code == 400

    detail = (await client.get(f"/api/v1/conversations/{conversation_id}", headers=key)).json()
    assert detail["status"] == "escalated"
    assert detail["channel"] == "rest"
    messages = detail["messages"]
    assert [m["direction"] for m in messages] == ["inbound", "outbound", "inbound", "outbound"]
    assert messages[0]["text"] == "where is my order 1234?"
    assert messages[0]["intent"] == "order_status"
    assert messages[2]["outcome"]["escalated"] is True
    assert all(m["created_at"] for m in messages)
    assert (await client.get(f"/api/v1/conversations/{conversation_id}")).json() == detail  # the operator too

    checkpoints = (await client.get(f"/api/v1/conversations/{conversation_id}/checkpoints", headers=key)).json()
    assert checkpoints
    newest = checkpoints[0]
    assert newest["interrupts"]  # the handover waits for a person
    assert newest["next"]
    assert newest["values"]["intent"]
    assert newest["values"]["messages"][-1]["content"] == "I want to talk to a person"
    stamps = [c["created_at"] for c in checkpoints]
    assert stamps == sorted(stamps, reverse=True)
    assert all(c["checkpoint_id"] for c in checkpoints)
    ids = {c["checkpoint_id"] for c in checkpoints}
    assert any(c["parent_id"] in ids for c in checkpoints)
    one = (await client.get(f"/api/v1/conversations/{conversation_id}/checkpoints?limit=1")).json()
    assert [c["checkpoint_id"] for c in one] == [newest["checkpoint_id"]]
    assert (await client.get(f"/api/v1/conversations/{conversation_id}/checkpoints?limit=101")).status_code == 400

    for missing in ("00000000-0000-0000-0000-000000000000", "not-an-id"):
        assert (await client.get(f"/api/v1/conversations/{missing}")).status_code == 404
        assert (await client.get(f"/api/v1/conversations/{missing}/checkpoints")).status_code == 404


HOSTILE = [
    ("GET", "/api/v1/bots/acme/support/knowledge/search?q=%00", None, 400),
    ("GET", "/api/v1/bots/acme/support/knowledge/search?q=x&threshold=nan", None, 400),
    ("GET", "/api/v1/bots/acme/support/conversations?limit=99999999999999999999", None, 400),
    ("GET", "/api/v1/bots/%00", None, 400),
    ("GET", "/api/v1/bots/%ED%A0%80", None, 404),
    ("GET", "/api/v1/bots/" + "a" * 5000, None, 400),
    ("GET", "/api/v1/tenants/%00", None, 400),
    ("GET", "/api/v1/tenants/%ED%A0%80/bots", None, 404),
    ("DELETE", "/api/v1/bots/acme/support/knowledge/%00", None, 400),
    ("GET", "/api/v1/bots/acme/support/plugins/%00", None, 400),
    ("GET", "/api/v1/conversations/%00", None, 400),
    ("PATCH", "/api/v1/bots/acme/support", {"persona": "x\u0000"}, 400),
    ("PATCH", "/api/v1/bots/acme/support", {"allowed_origins": ["\u0000"]}, 400),
    ("PUT", "/api/v1/bots/acme/support/plugins/demo_shop", {"config": {"shop_name": "a\u0000"}}, 400),
    ("POST", "/api/v1/bots/acme/support/knowledge", {"name": "a\u0000.md", "content": "x"}, 400),
    ("POST", "/api/v1/tenants/acme/keys", {"name": "\u0000"}, 400),
]
"""Inputs PostgreSQL cannot store (NUL), bytes that are not UTF-8, numbers out of range: 4xx, never 500."""


async def test_hostile_inputs_get_4xx(client: httpx.AsyncClient) -> None:
    await make_tenant(client, "acme")
    await make_bot(client, "acme", "support")
    for method, path, body, status in HOSTILE:
        r = await client.request(method, path, json=body)
        assert r.status_code == status, f"{method} {path[:60]} {body}: {r.status_code} {r.text}"
    bot = (await client.get("/api/v1/bots/acme/support")).json()
    assert bot["settings"]["persona"] == BotSettings().persona


# -- the OpenAPI document ---------------------------------------------------------------


def test_openapi_documents_every_operation_and_its_errors(settings: Settings) -> None:
    from litestar.routes import HTTPRoute

    app = create_app(settings)
    operations = app.openapi_schema.to_schema()["paths"]
    checked = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.fn.__module__.startswith("botloom.server.api."):
                continue
            path = route.path.replace(":str", "")
            for method in handler.http_methods:
                operation = operations[path][method.lower()]
                where = f"{method} {path}"
                assert operation.get("summary"), where
                assert handler.fn.__doc__, where
                responses = set(operation["responses"])
                assert "401" in responses, where
                if "{" in path:
                    assert "404" in responses, where
                if "requestBody" in operation or operation.get("parameters"):
                    assert "400" in responses, where
                if "requestBody" in operation:
                    assert operation["requestBody"]["content"], where
                checked += 1
    assert checked >= 22


def install_distribution(folder: Path, plugin: str) -> None:
    """Install a distribution declaring the botloom plugin ``plugin`` into ``folder`` (as pip would, metadata only)."""
    info = folder / f"late_{plugin}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: late-{plugin}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[botloom]\n{plugin} = late_{plugin}_module\n")


async def test_a_plugin_installed_while_the_server_runs_is_not_loaded_until_a_restart(
    client: httpx.AsyncClient, demo: DemoInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.put("/api/v1/bots/acme/support/plugins/latecomer", json={})).json()["detail"] == (
        "no plugin 'latecomer' is installed"
    )
    install_distribution(tmp_path / "site", "latecomer")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # pip install, after the server started

    for method in ("PUT", "GET"):
        r = await client.request(
            method, "/api/v1/bots/acme/support/plugins/latecomer", json={} if method == "PUT" else None
        )
        assert r.status_code == 404
        detail = r.json()["detail"]
        assert detail.startswith("plugin 'latecomer' is installed but not loaded")
        assert "restart the server" in detail


async def test_a_plugin_left_out_by_the_settings_says_which_setting(
    data_dir: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_distribution(tmp_path / "site", "latecomer")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    settings = load_settings(
        environ={}, data_dir=str(data_dir), admin_token=ADMIN_TOKEN, secret_key="k", block_plugins="latecomer,smalltalk"
    )
    async with open_services(settings, url=database_url) as services:
        await ensure_demo(services)
        async for client in api_client(settings, services):
            for plugin in ("latecomer", "smalltalk"):
                r = await client.put(f"/api/v1/bots/acme/support/plugins/{plugin}", json={})
                assert r.status_code == 404
                assert r.json()["detail"] == (
                    f"plugin {plugin!r} is installed but not loaded: BOTLOOM_BLOCK_PLUGINS names it"
                )
