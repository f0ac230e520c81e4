"""The audit log (docs/audit.md): the recorder, its transaction, retention, ``GET /api/v1/audit``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.runtime import audit, retention
from botloom.runtime.audit import SYSTEM, Actor, record
from botloom.runtime.services import Services
from tests.desk import make_agent
from tests.test_api_resources import api_client, bearer, make_bot, make_tenant
from tests.worlds import two_tenants


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def _rows(services: Services, action: str | None = None) -> list[audit.AuditEntry]:
    return await services.store.audit.page(None, action=action, limit=100)


# -- the recorder and its transaction ----------------------------------------------------


async def test_record_in_a_transaction_commits_with_the_change(services: Services) -> None:
    store = services.store
    async with store.db.transaction():
        tenant = await store.tenants.create("audited", "Audited")
        await record(
            services,
            Actor("operator", request_id="r-1"),
            "tenant.created",
            tenant_id=tenant.id,
            target=("tenant", tenant.id),
            details={"slug": "audited"},
        )
    [row] = await _rows(services, "tenant.created")
    assert (row.tenant_id, row.principal_kind, row.principal_id, row.request_id) == (tenant.id, "operator", None, "r-1")
    assert (row.target_kind, row.target_id, row.details) == ("tenant", tenant.id, {"slug": "audited"})


async def test_a_failing_change_leaves_no_audit_row(services: Services) -> None:
    store = services.store

    async def change() -> None:
        async with store.db.transaction():
            tenant = await store.tenants.create("doomed", "Doomed")
            await record(services, SYSTEM, "tenant.created", tenant_id=tenant.id, target=("tenant", tenant.id))
            raise RuntimeError("the change fails after its row was written")

    with pytest.raises(RuntimeError):
        await change()
    assert await _rows(services) == []
    assert await store.tenants.get_by_slug("doomed") is None


async def test_a_failing_audit_row_aborts_the_change(services: Services) -> None:
    store = services.store

    async def change() -> None:
        async with store.db.transaction():
            await store.tenants.create("unrecorded", "Unrecorded")
            # A NUL character in a text column: refused, so the row cannot be written.
            await record(services, SYSTEM, "tenant.created\x00", tenant_id=None, target=("tenant", None))

    with pytest.raises(psycopg.Error):
        await change()
    assert await store.tenants.get_by_slug("unrecorded") is None
    assert await _rows(services) == []


async def test_rows_cannot_be_updated(services: Services, database_url: str) -> None:
    await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", None))
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("UPDATE audit_log SET action = 'bot.deleted'")


async def test_retention_prunes_old_rows_only(services: Services, database_url: str, store: Store) -> None:
    old = await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", "old"))
    new = await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", "new"))
    days = services.settings.audit_retention_days
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # The trigger refuses UPDATE (as the application must never): a database owner ages the rows here.
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        await conn.execute("UPDATE audit_log SET at = now() - %s WHERE id = %s", (timedelta(days=days, hours=1), old))
        await conn.execute("UPDATE audit_log SET at = now() - %s WHERE id = %s", (timedelta(days=days - 1), new))
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    assert (await retention.prune(services)).audit == 1  # the hourly pass prunes the audit log
    assert [r.id for r in await _rows(services)] == [new]


# -- GET /api/v1/audit: what each action records ------------------------------------------

AUDIT = "/api/v1/audit"


async def entries(client: httpx.AsyncClient, action: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get(AUDIT, params={"action": action, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_tenants_and_keys_are_recorded(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tenants", json={"slug": "acme", "name": "Acme"}, headers={"X-Request-ID": "req-t1"})
    assert r.status_code == 201, r.text
    tenant, first_key = r.json()["tenant"], r.json()["api_key"]
    [created] = await entries(client, "tenant.created")
    assert created["principal"] == {"kind": "operator", "id": None}
    assert created["target"] == {"kind": "tenant", "id": tenant["id"]} and created["tenant_id"] == tenant["id"]
    assert created["request_id"] == "req-t1" and created["details"] == {"slug": "acme", "api_key": first_key["id"]}
    # a tenant's key acts: recorded by the key's id, never the key
    key = bearer(first_key["key"])
    r = await client.post("/api/v1/tenants/acme/keys", json={"name": "ci"}, headers=key)
    assert r.status_code == 201, r.text
    made = r.json()
    assert (await client.delete(f"/api/v1/tenants/acme/keys/{made['id']}", headers=key)).status_code == 204
    [key_created] = await entries(client, "api_key.created")
    [revoked] = await entries(client, "api_key.revoked")
    for row in (key_created, revoked):
        assert row["principal"] == {"kind": "api_key", "id": first_key["id"]}
        assert row["target"] == {"kind": "api_key", "id": made["id"]}
    r = await client.get(AUDIT)
    assert made["key"] not in r.text and first_key["key"] not in r.text
    # a revocation that changes nothing records nothing
    assert (await client.delete(f"/api/v1/tenants/acme/keys/{made['id']}", headers=key)).status_code == 404
    assert len(await entries(client, "api_key.revoked")) == 1
    # the tenant's deletion is recorded and its rows stay (the operator reads them by the tenant's id)
    assert (await client.delete("/api/v1/tenants/acme")).status_code == 204
    [deleted] = await entries(client, "tenant.deleted")
    assert deleted["target"] == {"kind": "tenant", "id": tenant["id"]}
    kept = await entries(client, "api_key.*", tenant=tenant["id"])
    assert [row["action"] for row in kept] == ["api_key.revoked", "api_key.created"]  # newest first


async def test_a_slug_conflict_records_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/tenants", json={"slug": "acme", "name": "A"})).status_code == 201
    assert (await client.post("/api/v1/tenants", json={"slug": "acme", "name": "B"})).status_code == 409
    assert len(await entries(client, "tenant.created")) == 1


async def test_bots_plugins_synonyms_and_knowledge_are_recorded(client: httpx.AsyncClient) -> None:
    _, key = await make_tenant(client, "acme")
    owner = bearer(key)
    bot = await make_bot(client, "acme", "helper")
    r = await client.patch(
        "/api/v1/bots/acme/helper", json={"name": "Helpful", "model": {"max_tokens": 99}}, headers=owner
    )
    assert r.status_code == 200, r.text
    twilio = {"account_sid": "AC" + "0" * 32, "auth_token": "s3cret-token-value"}
    r = await client.put("/api/v1/bots/acme/helper/plugins/twilio", json={"enabled": True, "config": twilio})
    assert r.status_code == 200, r.text
    r = await client.put("/api/v1/bots/acme/helper/synonyms", json={"synonyms": {"pls": "please"}}, headers=owner)
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/bots/acme/helper/knowledge", json={"name": "faq.md", "content": "# FAQ\n\nYes."})
    assert r.status_code == 201, r.text
    document = r.json()["document_id"]
    assert (await client.delete("/api/v1/bots/acme/helper/knowledge/faq.md")).status_code == 204
    assert (await client.delete("/api/v1/bots/acme/helper", headers=owner)).status_code == 204

    [created] = await entries(client, "bot.created")
    assert created["target"] == {"kind": "bot", "id": bot["id"]} and created["details"] == {"slug": "helper"}
    [updated] = await entries(client, "bot.updated")
    assert updated["details"] == {"fields": ["name", "settings.model.max_tokens"]}
    assert updated["principal"]["kind"] == "api_key"
    [configured] = await entries(client, "plugin.configured")
    assert configured["target"] == {"kind": "plugin", "id": "twilio"}
    assert configured["details"] == {
        "bot_id": bot["id"],
        "enabled": True,
        "was_enabled": False,
        "fields": ["account_sid", "auth_token"],
    }
    [synonyms] = await entries(client, "synonyms.updated")
    assert synonyms["details"] == {"synonyms": 1} and synonyms["target"] == {"kind": "bot", "id": bot["id"]}
    [ingested] = await entries(client, "knowledge.ingested")
    assert ingested["target"] == {"kind": "document", "id": document}
    assert [row["action"] for row in await entries(client, "knowledge.*")] == [
        "knowledge.deleted",
        "knowledge.ingested",
    ]
    [deleted] = await entries(client, "bot.deleted")
    assert deleted["target"] == {"kind": "bot", "id": bot["id"]}
    everything = (await client.get(AUDIT, params={"limit": 200})).text
    assert "s3cret-token-value" not in everything and "please" not in everything


async def test_agents_are_recorded_without_their_email_or_token(client: httpx.AsyncClient) -> None:
    _, key = await make_tenant(client, "acme")
    agent = await make_agent(client, "acme", key, "ann@acme.test", teams=["vip"])
    [created] = await entries(client, "agent.created")
    assert created["target"] == {"kind": "agent", "id": agent.id} and created["details"] == {"teams": ["vip"]}
    text = (await client.get(AUDIT)).text
    assert "ann@acme.test" not in text and agent.token not in text and "correct horse" not in text
    # an agent's token reads no audit log
    assert (await client.get(AUDIT, headers=agent.headers)).status_code == 403


async def test_data_rights_actions_are_recorded_without_the_address(client: httpx.AsyncClient) -> None:
    world = await two_tenants(client, plugins=("rest", "smalltalk"))
    conversation = world.refs["conversation_id"]
    contact = {"channel": "rest", "address": conversation}  # a REST conversation is named by its id
    owner = bearer(world.key_b)
    r = await client.get("/api/v1/tenants/beta/contacts/export", params=contact, headers=owner)
    assert r.status_code == 200, r.text
    [exported] = await entries(client, "contact.exported")
    assert exported["details"] == {"channel": "rest", "conversations": 1}
    assert exported["target"] == {"kind": "contact", "id": None}
    # a conversation's erasure: its row says what went, under its own id
    r = await client.post("/api/v1/bots/beta/helper/messages", json={"text": "hello"}, headers=owner)
    other = r.json()["conversation_id"]
    r = await client.delete(f"/api/v1/conversations/{other}", headers=owner)
    assert r.status_code == 200, r.text
    [erased] = await entries(client, "conversation.erased")
    assert erased["target"] == {"kind": "conversation", "id": other}
    assert erased["details"]["messages"] == r.json()["messages"] > 0
    r = await client.delete("/api/v1/tenants/beta/contacts", params=contact, headers=owner)
    assert r.status_code == 200 and r.json()["conversations"] == 1, r.text
    [contact_erased] = await entries(client, "contact.erased")
    assert contact_erased["details"] == {"channel": "rest", "conversations": 1}
    # a contact's erasure does not erase the audit log, and no row holds the address
    assert len(await entries(client, "contact.*")) == 2
    assert conversation not in str([row["details"] for row in await entries(client, "contact.*")])


async def test_an_erasure_whose_audit_row_fails_erases_nothing(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    world = await two_tenants(client, plugins=("rest", "smalltalk"))
    conversation = world.refs["conversation_id"]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("ALTER TABLE audit_log ADD CONSTRAINT no_erasures CHECK (action <> 'conversation.erased')")
    r = await client.delete(f"/api/v1/conversations/{conversation}", headers=bearer(world.key_b))
    assert r.status_code == 500
    assert await services.store.conversations.get(world.refs["tenant"], conversation) is not None
    assert await services.store.contacts.messages(world.refs["tenant"], conversation, limit=10)


# -- GET /api/v1/audit: who sees what, paging, bad input -----------------------------------


async def test_a_tenant_sees_only_its_own_rows(client: httpx.AsyncClient) -> None:
    world = await two_tenants(client, plugins=("rest",))
    alpha = bearer(world.key_a)
    r = await client.get(AUDIT, headers=alpha, params={"limit": 200})
    assert r.status_code == 200, r.text
    tenants = {row["tenant_id"] for row in r.json()["items"]}
    assert len(tenants) == 1 and world.refs["tenant"] not in tenants
    # naming another tenant, by slug or id, is the same 404 as naming none that exists
    for ref in ("beta", world.refs["tenant"]):
        r = await client.get(AUDIT, headers=alpha, params={"tenant": ref})
        ghost = await client.get(
            AUDIT, headers=alpha, params={"tenant": "nobody" if ref == "beta" else str(uuid.uuid4())}
        )
        assert r.status_code == ghost.status_code == 404, r.text
        assert r.json()["detail"].replace(ref, "?") == ghost.json()["detail"].replace(
            ghost.request.url.params["tenant"], "?"
        )
    # the operator sees both, and filters by tenant
    everyone = await client.get(AUDIT, params={"limit": 200})
    assert {row["tenant_id"] for row in everyone.json()["items"]} == tenants | {world.refs["tenant"]}
    beta = await client.get(AUDIT, params={"tenant": "beta", "limit": 200})
    assert {row["tenant_id"] for row in beta.json()["items"]} == {world.refs["tenant"]}


async def test_without_a_valid_token_it_is_a_401(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer blk_nope"}, {"Authorization": "Basic x"}):
        request = client.build_request("GET", AUDIT, headers=headers)
        if "Authorization" not in headers:
            del request.headers["authorization"]
        assert (await client.send(request)).status_code == 401


async def test_pages_are_keyset_newest_first(client: httpx.AsyncClient, services: Services) -> None:
    ids = [await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", str(n))) for n in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        r = await client.get(AUDIT, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [row["target"]["id"] for row in page["items"]]
        # a row recorded meanwhile is newer than every page still to come: it never shifts them
        await record(services, SYSTEM, "bot.deleted", tenant_id=None, target=("bot", "late"))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(n) for n in reversed(range(7))] and len(ids) == 7
    # time filters: from inclusive, to exclusive
    [newest] = (await client.get(AUDIT, params={"limit": 1})).json()["items"]
    at = newest["at"]
    assert (await client.get(AUDIT, params={"from": at, "action": "bot.deleted"})).json()["items"]
    assert all(row["at"] < at for row in (await client.get(AUDIT, params={"to": at})).json()["items"])


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "bm9wZQ"}, "cursor"),  # base64 of something that is not one of ours
        ({"cursor": "x" * 101}, "cursor"),
        ({"action": "DROP TABLE"}, "action"),
        ({"action": "bot." + "x" * 70}, "action"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-12-01T00:00:00"}, "from"),  # no UTC offset
        ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "from"),
        ({"from": "2026-12-01T00:00:00Z" + " " * 40}, "from"),
        ({"to": "noon"}, "to"),
        ({"tenant": "a" * 201}, "tenant"),
        ({"tenant": "a\x00b"}, "tenant"),
    ],
)
async def test_malformed_and_oversized_queries_are_400s(
    client: httpx.AsyncClient, params: dict[str, str], key: str
) -> None:
    r = await client.get(AUDIT, params=params)
    assert r.status_code == 400, r.text
    assert key in r.text


def test_the_route_is_documented(settings: Settings) -> None:
    from botloom.server.app import create_app

    schema = create_app(settings).openapi_schema.to_schema()
    operation = schema["paths"]["/api/v1/audit"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"from", "to", "action", "tenant", "cursor", "limit"}
    assert {"200", "400", "401", "403", "404"} <= set(operation["responses"])
