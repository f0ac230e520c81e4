"""The audit log (docs/audit.md): the recorder, its transaction, retention, ``GET /api/v1/audit``."""

from __future__ import annotations

import re
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
from tests.desk import DeskAgent, make_agent
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


async def owner_of(client: httpx.AsyncClient, slug: str) -> tuple[str, dict[str, str], str]:
    """A new tenant: its id, its first key's header and that key's id (as audit rows name it)."""
    r = await client.post("/api/v1/tenants", json={"slug": slug, "name": slug.title()})
    assert r.status_code == 201, r.text
    return r.json()["tenant"]["id"], bearer(r.json()["api_key"]["key"]), r.json()["api_key"]["id"]


async def test_an_agents_changes_and_removal_are_recorded_never_its_password(client: httpx.AsyncClient) -> None:
    world = await two_tenants(client, plugins=("rest", "smalltalk", "handoff"), text="agent", escalates=True)
    tenant, owner = world.refs["tenant"], bearer(world.key_b)
    key_id = (await client.get("/api/v1/tenants/beta/keys", headers=owner)).json()[0]["id"]
    agent = await make_agent(client, "beta", world.key_b, "bo@beta.test", capacity=5)
    path = f"/api/v1/tenants/beta/agents/{agent.id}"
    # capacity given unchanged: not named; the password always named when given, its value never
    change = {"name": "Bo Renamed", "password": "new secret horse", "capacity": 5, "teams": ["vip"]}
    r = await client.patch(path, json=change, headers=owner)
    assert r.status_code == 200, r.text
    [updated] = await entries(client, "agent.updated")
    assert updated["principal"] == {"kind": "api_key", "id": key_id} and updated["tenant_id"] == tenant
    assert updated["target"] == {"kind": "agent", "id": agent.id}
    assert updated["details"] == {"fields": ["name", "teams", "password"]}
    # changes that fail record nothing
    assert (await client.patch(path, json={"capacity": 0}, headers=owner)).status_code == 400
    r = await client.patch(f"/api/v1/tenants/beta/agents/{uuid.uuid4()}", json={"name": "X"}, headers=owner)
    assert r.status_code == 404
    r = await client.patch(f"/api/v1/tenants/alpha/agents/{agent.id}", json={"name": "X"})  # another tenant's agent
    assert r.status_code == 404
    assert len(await entries(client, "agent.updated")) == 1
    # its deletion puts the handover assigned to it back in the queue, in the row's transaction
    await agent.available()
    [handover] = await agent.queue()
    assert handover["status"] == "assigned" and handover["agent_id"] == agent.id
    assert (await client.delete(path)).status_code == 204
    [deleted] = await entries(client, "agent.deleted")
    assert deleted["principal"] == {"kind": "operator", "id": None} and deleted["tenant_id"] == tenant
    assert deleted["target"] == {"kind": "agent", "id": agent.id}
    assert deleted["details"] == {"handovers_requeued": 1}
    assert (await client.delete(path)).status_code == 404
    assert len(await entries(client, "agent.deleted")) == 1
    text = (await client.get(AUDIT, params={"limit": 200})).text
    assert "new secret horse" not in text and "correct horse" not in text and "Bo Renamed" not in text


async def an_agent_with_a_handover(client: httpx.AsyncClient) -> tuple[Any, DeskAgent, dict[str, Any]]:
    """Tenant beta's agent, available, with one escalated conversation's handover assigned to it."""
    world = await two_tenants(client, plugins=("rest", "smalltalk", "handoff"), text="agent", escalates=True)
    agent = await make_agent(client, "beta", world.key_b, "bo@beta.test")
    await agent.available()
    [handover] = await agent.queue()
    assert handover["status"] == "assigned"
    return world, agent, handover


async def test_an_agents_deletion_whose_audit_row_fails_changes_nothing(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    world, agent, _ = await an_agent_with_a_handover(client)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("ALTER TABLE audit_log ADD CONSTRAINT no_removals CHECK (action <> 'agent.deleted')")
    assert (await client.delete(f"/api/v1/tenants/beta/agents/{agent.id}")).status_code == 500
    # the agent is still there, its handover still assigned to it (the requeue rolled back with it)
    assert await services.store.agents.get(world.refs["tenant"], agent.id) is not None
    [still] = await agent.queue()
    assert (still["status"], still["agent_id"]) == ("assigned", agent.id)


async def test_an_agents_deletion_announces_its_requeued_handovers(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The handovers assigned to a deleted agent wait again, and the desk hears so (``handover.waiting``)."""
    world, agent, handover = await an_agent_with_a_handover(client)
    assert (await client.delete(f"/api/v1/tenants/beta/agents/{agent.id}")).status_code == 204
    events = await services.store.events.after(world.refs["tenant"], 0)
    waiting = [e for e in events if e.kind == "handover.waiting" and e.data.get("by") == "agent_deleted"]
    assert [e.data["handover_id"] for e in waiting] == [handover["id"]]
    transitions = await services.store.handovers.transitions(world.refs["tenant"], handover["id"])
    assert [(t.from_status, t.to_status, t.detail) for t in transitions][-1] == (
        "assigned",
        "waiting",
        {"by": "agent_deleted"},
    )
    [row] = await entries(client, "agent.deleted")
    assert row["details"] == {"handovers_requeued": 1}


async def test_a_teams_business_hours_are_recorded(client: httpx.AsyncClient) -> None:
    tenant, owner, key_id = await owner_of(client, "acme")
    path = "/api/v1/tenants/acme/teams/vip"
    r = await client.put(path, json={"timezone": "Europe/Berlin", "hours": {"mon": [["09:00", "17:00"]]}})
    assert r.status_code == 200, r.text
    week = {"mon": [["09:00", "17:00"]], "tue": [["10:00", "12:00"]]}
    r = await client.put(path, json={"timezone": "Europe/Berlin", "hours": week}, headers=owner)
    assert r.status_code == 200, r.text
    replaced, created = await entries(client, "team.updated")  # newest first
    assert created["principal"] == {"kind": "operator", "id": None} and created["tenant_id"] == tenant
    assert created["target"] == {"kind": "team", "id": "vip"}
    assert created["details"] == {"fields": ["timezone", "hours.mon"], "created": True}
    assert replaced["principal"] == {"kind": "api_key", "id": key_id}
    assert replaced["details"] == {"fields": ["hours.tue"]}
    # changes that fail record nothing
    assert (await client.put(path, json={"timezone": "Mars/Olympus"}, headers=owner)).status_code == 400
    bad = {"hours": {"mon": [["17:00", "09:00"]]}}
    assert (await client.put(path, json=bad, headers=owner)).status_code == 400
    assert (await client.delete("/api/v1/tenants/acme/teams/nobody", headers=owner)).status_code == 404
    assert len(await entries(client, "team.*")) == 2
    assert (await client.delete(path, headers=owner)).status_code == 204
    [deleted] = await entries(client, "team.deleted")
    assert deleted["target"] == {"kind": "team", "id": "vip"} and deleted["tenant_id"] == tenant
    assert deleted["principal"] == {"kind": "api_key", "id": key_id} and deleted["details"] == {}
    assert (await client.delete(path, headers=owner)).status_code == 404
    assert len(await entries(client, "team.deleted")) == 1


async def test_canned_responses_are_recorded_by_who_wrote_them_never_their_text(client: httpx.AsyncClient) -> None:
    tenant, owner, key_id = await owner_of(client, "acme")
    agent = await make_agent(client, "acme", owner["Authorization"].removeprefix("Bearer "), "ann@acme.test")
    body = {"team": "vip", "shortcut": "/refund", "text": "Your refund of 42 EUR is on its way"}
    r = await agent.call("POST", "/api/v1/canned", body)
    assert r.status_code == 201, r.text
    made = r.json()["id"]
    [created] = await entries(client, "canned_response.created")
    assert created["principal"] == {"kind": "agent", "id": agent.id} and created["tenant_id"] == tenant
    assert created["target"] == {"kind": "canned_response", "id": made}
    assert created["details"] == {"team": "vip", "shortcut": "/refund"}
    # a conflict (the team has the shortcut) and a bad body record nothing
    assert (await agent.call("POST", "/api/v1/canned", body)).status_code == 409
    assert (await agent.call("POST", "/api/v1/canned", {**body, "shortcut": "two words"})).status_code == 400
    assert len(await entries(client, "canned_response.created")) == 1
    r = await client.patch(f"/api/v1/canned/{made}", json={"text": "Refunds take 5 days"}, headers=owner)
    assert r.status_code == 200, r.text
    [updated] = await entries(client, "canned_response.updated")
    assert updated["principal"] == {"kind": "api_key", "id": key_id}
    assert updated["target"] == {"kind": "canned_response", "id": made}
    assert updated["details"] == {"fields": ["text"]}
    # the same text again, with the shortcut it has: recorded, naming no field
    r = await client.patch(f"/api/v1/canned/{made}", json={"text": "Refunds take 5 days", "shortcut": body["shortcut"]},
                           headers=owner)  # fmt: skip
    assert r.status_code == 200, r.text
    unchanged, updated_again = await entries(client, "canned_response.updated")  # newest first
    assert unchanged["details"] == {"fields": []} and updated_again == updated
    r = await client.patch(f"/api/v1/canned/{uuid.uuid4()}", json={"text": "x"}, headers=owner)
    assert r.status_code == 404
    r = await agent.call("POST", "/api/v1/canned", {**body, "shortcut": "/other"})
    assert r.status_code == 201, r.text
    r = await client.patch(f"/api/v1/canned/{made}", json={"shortcut": "/other"}, headers=owner)
    assert r.status_code == 409
    assert len(await entries(client, "canned_response.updated")) == 2
    # the operator acts on the tenant it names
    assert (await client.delete(f"/api/v1/canned/{made}", params={"tenant": "acme"})).status_code == 204
    [deleted] = await entries(client, "canned_response.deleted")
    assert deleted["principal"] == {"kind": "operator", "id": None} and deleted["tenant_id"] == tenant
    assert deleted["target"] == {"kind": "canned_response", "id": made} and deleted["details"] == {}
    assert (await client.delete(f"/api/v1/canned/{made}", params={"tenant": "acme"})).status_code == 404
    assert len(await entries(client, "canned_response.deleted")) == 1
    text = (await client.get(AUDIT, params={"limit": 200})).text
    assert "refund of 42" not in text and "5 days" not in text


async def test_taught_examples_are_recorded_never_their_text(client: httpx.AsyncClient) -> None:
    tenant, owner, key_id = await owner_of(client, "acme")
    bot = await make_bot(client, "acme", "helper")
    r = await client.put("/api/v1/bots/acme/helper/plugins/smalltalk", json={"enabled": True}, headers=owner)
    assert r.status_code == 200, r.text
    path = "/api/v1/bots/acme/helper/intents/greeting/examples"
    r = await client.post(path, json={"text": "ahoy matey"}, headers=owner)
    assert r.status_code == 201, r.text
    example = r.json()["id"]
    # the same text again is the same example: nothing changed, nothing recorded
    assert (await client.post(path, json={"text": " ahoy   matey "}, headers=owner)).json()["id"] == example
    [created] = await entries(client, "intent_example.created")
    assert created["principal"] == {"kind": "api_key", "id": key_id} and created["tenant_id"] == tenant
    assert created["target"] == {"kind": "intent_example", "id": example}
    assert created["details"] == {"bot_id": bot["id"], "intent": "greeting"}
    # changes that fail record nothing
    assert (await client.post(path, json={"text": " \t "}, headers=owner)).status_code == 400
    r = await client.post("/api/v1/bots/acme/helper/intents/no_such_intent/examples", json={"text": "hi"})
    assert r.status_code == 404
    assert len(await entries(client, "intent_example.created")) == 1
    assert (await client.delete(f"{path}/{example}")).status_code == 204
    [deleted] = await entries(client, "intent_example.deleted")
    assert deleted["principal"] == {"kind": "operator", "id": None} and deleted["tenant_id"] == tenant
    assert deleted["target"] == {"kind": "intent_example", "id": example}
    assert deleted["details"] == {"bot_id": bot["id"], "intent": "greeting"}
    assert (await client.delete(f"{path}/{example}")).status_code == 404
    assert len(await entries(client, "intent_example.deleted")) == 1
    assert "ahoy" not in (await client.get(AUDIT, params={"limit": 200})).text


async def test_webhooks_are_recorded_by_host_never_the_secret_path_or_query(client: httpx.AsyncClient) -> None:
    tenant, owner, key_id = await owner_of(client, "acme")
    _, other, _ = await owner_of(client, "globex")
    url = "http://127.0.0.1:9/hooks/p4th-t0ken?token=qu3ry-t0ken"
    r = await client.post(
        "/api/v1/tenants/acme/webhooks", json={"url": url, "kinds": ["handover.waiting"]}, headers=owner
    )
    assert r.status_code == 201, r.text
    endpoint, secret = r.json()["id"], r.json()["secret"]
    r = await client.post("/api/v1/tenants/globex/webhooks", json={"url": "http://localhost:9/hook"}, headers=other)
    assert r.status_code == 201, r.text
    [created] = await entries(client, "webhook.created", tenant="acme")
    assert created["principal"] == {"kind": "api_key", "id": key_id} and created["tenant_id"] == tenant
    assert created["target"] == {"kind": "webhook", "id": endpoint}
    assert created["details"] == {"host": "127.0.0.1", "kinds": ["handover.waiting"]}
    # a refused URL records nothing
    r = await client.post("/api/v1/tenants/acme/webhooks", json={"url": "http://10.0.0.7/hook"}, headers=owner)
    assert r.status_code == 400
    assert len(await entries(client, "webhook.created", tenant="acme")) == 1
    # a tenant's key sees its own rows only
    r = await client.get(AUDIT, params={"action": "webhook.*"}, headers=other)
    assert [row["details"]["host"] for row in r.json()["items"]] == ["localhost"]
    assert (await client.delete(f"/api/v1/tenants/acme/webhooks/{endpoint}", headers=other)).status_code == 404
    assert (await client.delete(f"/api/v1/tenants/acme/webhooks/{endpoint}", headers=owner)).status_code == 204
    [deleted] = await entries(client, "webhook.deleted")
    assert deleted["principal"] == {"kind": "api_key", "id": key_id} and deleted["tenant_id"] == tenant
    assert deleted["target"] == {"kind": "webhook", "id": endpoint} and deleted["details"] == {"host": "127.0.0.1"}
    assert (await client.delete(f"/api/v1/tenants/acme/webhooks/{endpoint}", headers=owner)).status_code == 404
    assert len(await entries(client, "webhook.deleted")) == 1
    text = (await client.get(AUDIT, params={"limit": 200})).text
    assert secret not in text and "p4th-t0ken" not in text and "qu3ry-t0ken" not in text and "/hooks" not in text


def test_every_action_is_documented() -> None:
    from pathlib import Path

    table = (Path(__file__).parents[1] / "docs" / "audit.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == set(audit.ACTIONS)


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
