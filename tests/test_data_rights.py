"""End users' data rights (docs/data-rights.md): export and erase one contact; deletions take their checkpoints along.

Real PostgreSQL and Redis (Valkey with the search module) throughout: the tables and the
checkpointer are read directly to prove what is gone and what stays.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis

from botloom.core.domain import Bot, UsageEvent
from botloom.core.messages import utcnow
from botloom.core.settings import Settings, load_settings
from botloom.runtime import erasure
from botloom.runtime.erasure import Contact, erase_contact, erase_threads
from botloom.runtime.retention import prune
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from tests.erasure_helpers import checkpoint_rows, fork_last_turn, late_write
from tests.helpers import Chat
from tests.test_api_resources import api_client, bearer

ADDRESS = "+15550100"
OTHER = "+15550199"
EXPORT = "/api/v1/tenants/acme/contacts/export"
CONTACTS = "/api/v1/tenants/acme/contacts"
QUERY = {"channel": "test", "address": ADDRESS}


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


@dataclass
class Contacted:
    """One contact's conversations with the demo bot, and what else is stored about them."""

    conversations: list[str]
    threads: list[str]
    """The conversations' checkpoint threads and the fork's."""
    fork_id: str
    handover_id: str
    dead_letter_id: str


async def contact_with_everything(services: Services, bot: Bot, address: str = ADDRESS) -> Contacted:
    """Two conversations of ``address``: turns, a handover with a note, a dead letter with delivery records,
    usage, an event and a fork."""
    first, second = Chat(services, bot, user=address), Chat(services, bot, user=address)
    await first.say("hello, my name is zebra-words")
    await first.say("where is my order 1234?")
    await second.say("hi again from zebra-words")
    assert (await second.say("I want to talk to a person")).escalated
    assert first.conversation_id is not None and second.conversation_id is not None
    store, tenant = services.store, bot.tenant_id
    handover = await store.handovers.open_of(tenant, second.conversation_id)
    assert handover is not None
    await store.handovers.add_note(tenant, handover.id, None, "zebra-words note by an agent")
    dead, _ = await store.messages.add_outbound(
        tenant, first.conversation_id, channel="test", text="zebra-words undelivered", status="failed"
    )
    await store.deliveries.add_part(tenant, dead.id, 0, channel="test", provider_id="SM-zebra")
    await store.deliveries.begin_attempt(tenant, dead.id, 1, channel="test")
    await store.usage.record(
        UsageEvent(
            tenant_id=tenant,
            bot_id=bot.id,
            conversation_id=first.conversation_id,
            kind="chat",
            model="gpt-4o-mini",
            prompt_tokens=120,
            completion_tokens=30,
        )
    )
    fork_id, fork_thread = await fork_last_turn(services, bot, first.conversation_id, "fork of zebra-words")
    conversations = [first.conversation_id, second.conversation_id]
    threads = [thread_id(tenant, bot.id, c) for c in conversations] + [fork_thread]
    return Contacted(conversations, threads, fork_id, handover.id, dead.id)


def rows_about(database_url: str, conversations: list[str]) -> dict[str, int]:
    """Rows of botloom's tables that belong to these conversations (directly or through a message or handover)."""
    ids = [uuid.UUID(c) for c in conversations]
    queries = {
        "conversations": "SELECT count(*) FROM conversations WHERE id = ANY(%s)",
        "messages": "SELECT count(*) FROM messages WHERE conversation_id = ANY(%s)",
        "message_parts": "SELECT count(*) FROM message_parts p WHERE p.provider_id = 'SM-zebra' OR p.message_id IN "
        "(SELECT id FROM messages WHERE conversation_id = ANY(%s))",
        "message_send_attempts": "SELECT count(*) FROM message_send_attempts a WHERE a.message_id IN "
        "(SELECT id FROM messages WHERE conversation_id = ANY(%s))",
        "handovers": "SELECT count(*) FROM handovers WHERE conversation_id = ANY(%s)",
        "events": "SELECT count(*) FROM events WHERE conversation_id = ANY(%s)",
        "event_streams": "SELECT count(*) FROM event_streams WHERE stream = ANY(%s::text[])",
        "debug_forks": "SELECT count(*) FROM debug_forks WHERE conversation_id = ANY(%s)",
        "usage_events": "SELECT count(*) FROM usage_events WHERE conversation_id = ANY(%s)",
    }
    with psycopg.connect(database_url) as conn:
        return {name: int(conn.execute(sql, (ids,)).fetchone()[0]) for name, sql in queries.items()}  # type: ignore[index]


def text_anywhere(database_url: str, needle: str) -> list[str]:
    """Tables of the public schema with a row whose JSON text has ``needle`` (the checkpoint blobs are bytes)."""
    found = []
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            sql = f'SELECT count(*) FROM "{table}" t WHERE to_jsonb(t)::text LIKE %s'
            if int(conn.execute(sql, (f"%{needle}%",)).fetchone()[0]):  # type: ignore[index]
                found.append(table)
    return found


async def other_tenant_with_the_same_address(services: Services) -> tuple[Bot, str]:
    tenant = await services.store.tenants.create("globex", "Globex")
    bot = await services.store.bots.create(tenant.id, "helper", "Helper")
    chat = Chat(services, bot, user=ADDRESS)
    await chat.say("globex-secret words")
    assert chat.conversation_id is not None
    return bot, chat.conversation_id


# -- export ------------------------------------------------------------------------


async def test_the_export_has_everything_about_the_contact_and_nothing_of_anyone_else(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    contacted = await contact_with_everything(services, demo.bot)
    neighbour = Chat(services, demo.bot, user=OTHER)
    await neighbour.say("neighbour-secret words")
    await other_tenant_with_the_same_address(services)

    response = await client.get(EXPORT, params=QUERY)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "neighbour-secret" not in response.text and "globex-secret" not in response.text
    document = response.json()
    assert document["complete"] is True and document["contact"] == {"channel": "test", "address": ADDRESS}
    exported = {c["conversation"]["id"]: c for c in document["conversations"]}
    assert sorted(exported) == sorted(contacted.conversations)
    first, second = (exported[c] for c in contacted.conversations)
    texts = [m["text"] for m in first["messages"]]
    assert "hello, my name is zebra-words" in texts and "zebra-words undelivered" in texts
    assert len([m for m in first["messages"] if m["direction"] == "outbound"]) >= 3, "the bot's replies too"
    dead = next(m for m in first["messages"] if m["id"] == contacted.dead_letter_id)
    assert [p["provider_id"] for p in dead["parts"]] == ["SM-zebra"] and [a["part"] for a in dead["send_attempts"]] == [
        1
    ]
    assert [u["prompt_tokens"] for u in first["usage"]] == [120]
    (handover,) = second["handovers"]
    assert handover["id"] == contacted.handover_id
    assert [n["text"] for n in handover["notes"]] == ["zebra-words note by an agent"] and handover["transitions"]
    assert any(e["kind"] == "handover.waiting" for e in second["events"])
    runs = first["checkpoints"]["runs"]
    assert any(r["user_text"] == "hello, my name is zebra-words" for r in runs), "every run of the thread"
    assert first["checkpoints"]["state"], "the newest state"
    (fork,) = first["forks"]
    assert fork["id"] == contacted.fork_id and fork["checkpoints"]["runs"]


async def test_the_export_is_the_tenants_own_and_recorded_without_the_address(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    await Chat(services, demo.bot, user=ADDRESS).say("hello from zebra-words")
    other = await client.post("/api/v1/tenants", json={"slug": "globex", "name": "Globex"})
    globex_key = other.json()["api_key"]["key"]
    created = (await client.post("/api/v1/tenants/acme/keys", json={"name": "dpo"})).json()
    acme_key = created["key"]

    assert (await client.get(EXPORT, params=QUERY, headers=bearer(globex_key))).status_code == 404
    assert (await client.delete(CONTACTS, params=QUERY, headers=bearer(globex_key))).status_code == 404
    own = await client.get(EXPORT, params=QUERY, headers=bearer(acme_key))
    assert own.status_code == 200 and len(own.json()["conversations"]) == 1
    nobody = await client.get(EXPORT, params={"channel": "test", "address": "+10000000000"})
    assert nobody.status_code == 200 and nobody.json()["conversations"] == []

    events = (await client.get("/api/v1/events", params={"tenant": "acme"})).json()["events"]
    audit = [e for e in events if e["kind"] == "contact.exported"]
    assert [e["data"]["by"] for e in audit] == [f"api_key:{created['id']}", "operator"]
    assert [e["data"]["conversations"] for e in audit] == [1, 0]
    assert ADDRESS not in json.dumps(audit)


async def test_the_export_reads_page_after_page(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(erasure, "PAGE", 7)
    monkeypatch.setattr(erasure, "TURN_PAGE", 3)
    chat = Chat(services, demo.bot, user=ADDRESS)
    for i in range(5):
        await chat.say(f"hello {i}")
    conversation = chat.conversation_id or ""
    for i in range(12):  # replies stored in one instant share created_at: the page's key is (created_at, id)
        await services.store.messages.add_outbound(demo.tenant.id, conversation, channel="test", text=f"extra {i}")
        tenant, bot = demo.tenant.id, demo.bot.id
        await services.store.usage.record(
            UsageEvent(tenant_id=tenant, bot_id=bot, conversation_id=conversation, kind="chat", model="m")
        )
    stored = await services.store.messages.list_all(demo.tenant.id, conversation)

    (exported,) = (await client.get(EXPORT, params=QUERY)).json()["conversations"]

    assert [m["id"] for m in exported["messages"]] == [m.id for m in stored] and len(stored) == 22
    assert len(exported["usage"]) == 12 and len({u["id"] for u in exported["usage"]}) == 12
    assert [r["user_text"] for r in exported["checkpoints"]["runs"]] == [f"hello {i}" for i in reversed(range(5))]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"channel": "test"}, 400),
        ({"address": ADDRESS}, 400),
        ({"channel": "", "address": ADDRESS}, 400),
        ({"channel": "test", "address": ""}, 400),
        ({"channel": "test", "address": "x" * 501}, 400),
        ({"channel": "t" * 65, "address": ADDRESS}, 400),
        ({"channel": "test", "address": "+1555\x000100"}, 400),
        ({"channel": "test", "address": "+1555\n0100"}, 400),
    ],
    ids=["no address", "no channel", "empty channel", "empty address", "long address", "long channel", "NUL", "NL"],
)
async def test_malformed_and_oversized_requests_are_refused(
    client: httpx.AsyncClient, demo: DemoInfo, params: dict[str, str], status: int
) -> None:
    assert (await client.get(EXPORT, params=params)).status_code == status
    assert (await client.delete(CONTACTS, params=params)).status_code == status


async def test_unauthenticated_and_unknown_tenants_are_refused(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat = Chat(services, demo.bot, user=ADDRESS)
    await chat.say("hello")
    for method, url in (("GET", EXPORT), ("DELETE", CONTACTS)):
        no_token = await client.request(method, url, params=QUERY, headers={"Authorization": ""})
        assert no_token.status_code == 401
        assert (await client.request(method, url, params=QUERY, headers=bearer("blk_not-a-key"))).status_code == 401
        assert (await client.request(method, url.replace("acme", "nope"), params=QUERY)).status_code == 404
        assert (await client.request(method, url.replace("acme", "a" * 300), params=QUERY)).status_code == 400
    assert len(await chat.transcript()) == 2, "nothing was erased"


# -- erasure -----------------------------------------------------------------------


async def test_erasure_removes_every_row_and_checkpoint_thread_and_keeps_usage_counts(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, database_url: str
) -> None:
    contacted = await contact_with_everything(services, demo.bot)
    neighbour = Chat(services, demo.bot, user=OTHER)
    await neighbour.say("neighbour-secret words")
    _, foreign = await other_tenant_with_the_same_address(services)
    kept = [neighbour.conversation_id or "", foreign]
    kept_threads = [thread_id(demo.tenant.id, demo.bot.id, kept[0])]
    assert checkpoint_rows(database_url, contacted.threads) > 0 and checkpoint_rows(database_url, kept_threads) > 0
    assert all(rows_about(database_url, contacted.conversations)[t] for t in ("messages", "handovers", "events"))
    tokens = await services.store.usage.totals(demo.tenant.id)

    response = await client.delete(CONTACTS, params=QUERY)

    assert response.status_code == 200, response.text
    counts = response.json()
    assert counts["conversations"] == 2 and counts["checkpoint_threads"] == 2 and counts["forks"] == 1
    assert counts["handovers"] == 1 and counts["handover_notes"] == 1 and counts["dead_letters"] == 1
    assert counts["delivery_parts"] == 1 and counts["send_attempts"] == 1 and counts["usage_unlinked"] >= 1
    assert counts["messages"] >= 9 and counts["events"] >= 1
    assert rows_about(database_url, contacted.conversations) == dict.fromkeys(rows_about(database_url, []), 0), (
        "no row about the contact is left"
    )
    assert checkpoint_rows(database_url, contacted.threads) == 0, "every checkpoint thread went, the fork's too"
    assert text_anywhere(database_url, "zebra-words") == [], "no text of the contact is left in any table"
    assert await services.store.usage.totals(demo.tenant.id) == tokens, "usage keeps its counts"
    assert checkpoint_rows(database_url, kept_threads) > 0, "another contact keeps their checkpoints"
    assert rows_about(database_url, kept)["messages"] >= 3, "another contact's and another tenant's messages stay"
    assert "neighbour-secret words" in [t for _, t in await neighbour.transcript()]

    again = await client.delete(CONTACTS, params=QUERY)
    assert again.status_code == 200 and set(again.json().values()) == {0}, "idempotent: nothing left to erase"
    events = (await client.get("/api/v1/events", params={"tenant": "acme"})).json()["events"]
    erased = [e for e in events if e["kind"] == "contact.erased"]
    assert [e["data"]["conversations"] for e in erased] == [2, 0]
    assert erased[0]["data"]["messages"] == counts["messages"] and erased[0]["data"]["by"] == "operator"
    assert ADDRESS not in json.dumps(erased) and "zebra" not in json.dumps(erased)


async def test_erasing_one_conversation_removes_all_of_it_and_nothing_else(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, database_url: str
) -> None:
    contacted = await contact_with_everything(services, demo.bot)
    first, second = contacted.conversations
    first_threads = [contacted.threads[0], contacted.threads[2]]  # its own and its fork's
    kept_threads = [contacted.threads[1]]
    assert checkpoint_rows(database_url, first_threads) > 0 and checkpoint_rows(database_url, kept_threads) > 0
    kept_rows = rows_about(database_url, [second])
    tokens = await services.store.usage.totals(demo.tenant.id)

    response = await client.delete(f"/api/v1/conversations/{first}")

    assert response.status_code == 200, response.text
    counts = response.json()
    assert counts["conversations"] == 1 and counts["checkpoint_threads"] == 1 and counts["forks"] == 1
    assert counts["dead_letters"] == 1 and counts["delivery_parts"] == 1 and counts["send_attempts"] == 1
    assert counts["usage_unlinked"] == 1 and counts["handovers"] == 0 and counts["messages"] >= 5
    assert rows_about(database_url, [first]) == dict.fromkeys(kept_rows, 0), "no row of it is left"
    assert checkpoint_rows(database_url, first_threads) == 0, "its thread and its fork's went"
    assert await services.store.checkpoint_erasures.due(tenant_id=demo.tenant.id) == [], "deleted at once"
    assert await services.store.usage.totals(demo.tenant.id) == tokens, "usage keeps its counts"
    left = {**kept_rows, "message_parts": kept_rows["message_parts"] - 1}  # rows_about counts the first's SM-zebra
    assert rows_about(database_url, [second]) == left, "the contact's other conversation stays whole"
    assert checkpoint_rows(database_url, kept_threads) > 0

    again = await client.delete(f"/api/v1/conversations/{first}")
    assert again.status_code == 404, "a second call: the conversation is gone"
    events = (await client.get("/api/v1/events", params={"tenant": "acme"})).json()["events"]
    (erased,) = [e for e in events if e["kind"] == "conversation.erased"]
    assert erased["data"]["conversation_id"] == first and erased["data"]["by"] == "operator"
    assert erased["data"]["channel"] == "test" and erased["data"]["messages"] == counts["messages"]
    assert ADDRESS not in json.dumps(erased) and "zebra" not in json.dumps(erased)


async def test_erasing_a_conversation_is_the_tenants_own(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, database_url: str
) -> None:
    chat = Chat(services, demo.bot, user=ADDRESS)
    await chat.say("hello from zebra-words")
    url = f"/api/v1/conversations/{chat.conversation_id}"
    globex_key = (await client.post("/api/v1/tenants", json={"slug": "globex", "name": "Globex"})).json()["api_key"]
    acme_key = (await client.post("/api/v1/tenants/acme/keys", json={"name": "dpo"})).json()

    assert (await client.delete(url, headers=bearer(globex_key["key"]))).status_code == 404
    assert (await client.delete(url, headers={"Authorization": ""})).status_code == 401
    assert (await client.delete(url, headers=bearer("blk_not-a-key"))).status_code == 401
    assert (await client.delete("/api/v1/conversations/not-a-uuid")).status_code == 404
    assert (await client.delete(f"/api/v1/conversations/{uuid.uuid4()}")).status_code == 404
    assert (await client.delete("/api/v1/conversations/" + "a" * 300)).status_code == 400
    assert len(await chat.transcript()) == 2 and rows_about(database_url, [chat.conversation_id or ""])["messages"]
    assert checkpoint_rows(database_url, [thread_id(demo.tenant.id, demo.bot.id, chat.conversation_id or "")]) > 0

    own = await client.delete(url, headers=bearer(acme_key["key"]))
    assert own.status_code == 200 and own.json()["conversations"] == 1
    events = (await client.get("/api/v1/events", params={"tenant": "acme"})).json()["events"]
    assert [e["data"]["by"] for e in events if e["kind"] == "conversation.erased"] == [f"api_key:{acme_key['id']}"]


async def test_a_turn_running_for_the_contact_finishes_before_the_erasure_and_none_runs_after(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    chat = Chat(services, demo.bot, user=ADDRESS)
    await chat.say("hello from zebra-words")
    conversation = chat.conversation_id or ""
    thread = thread_id(demo.tenant.id, demo.bot.id, conversation)
    async with services.runner.locks.hold(conversation):  # as a running turn holds it
        erasing = asyncio.create_task(erase_contact(services, demo.tenant.id, Contact("test", ADDRESS)))
        await waiting_for_an_advisory_lock(database_url, erasing)
        # the "turn" stores its reply: the conversation is still there while its lock is held
        reply, _ = await services.store.messages.add_outbound(
            demo.tenant.id, conversation, channel="test", text="zebra-words late reply", status="pending"
        )
        assert reply is not None
    report = await erasing
    assert report.conversations == 1 and report.counts["messages"] == 3, "the late reply went with the rest"
    assert await services.inbound.run_turns(demo.tenant.id, demo.bot.id, conversation) == 0, "a queued turn: nothing"
    assert checkpoint_rows(database_url, [thread]) == 0
    assert text_anywhere(database_url, "zebra-words") == []


async def waiting_for_an_advisory_lock(database_url: str, task: asyncio.Task[Any]) -> None:
    """Wait until some session waits for an advisory lock (the erasure, for the conversation's)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            assert not task.done(), "the erasure did not wait for the conversation's lock"
            cur = await conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.02)


async def test_a_thread_written_after_its_erasure_is_erased_again_once_every_run_has_ended(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    chat = Chat(services, demo.bot, user=ADDRESS)
    await chat.say("hello from zebra-words")
    conversation = chat.conversation_id or ""
    _, fork_thread = await fork_last_turn(services, demo.bot, conversation, "fork of zebra-words")
    threads = [thread_id(demo.tenant.id, demo.bot.id, conversation), fork_thread]
    assert (await erase_contact(services, demo.tenant.id, Contact("test", ADDRESS))).conversations == 1
    assert checkpoint_rows(database_url, threads) == 0
    for thread in threads:  # runs that were still at work write once more
        await late_write(services, thread)
    assert checkpoint_rows(database_url, threads) > 0
    assert (await prune(services)).threads == 0, "not before every run that could write to them has ended"
    assert checkpoint_rows(database_url, threads) > 0
    report = await prune(services, now=utcnow() + timedelta(hours=1))
    assert report.threads == 2 and checkpoint_rows(database_url, threads) == 0, "the fork's thread too"
    assert await services.store.checkpoint_erasures.due(settled_before=utcnow() + timedelta(days=1)) == []


async def test_the_erasure_sweep_of_one_tenant_leaves_the_others_threads(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    foreign_bot, foreign = await other_tenant_with_the_same_address(services)
    foreign_thread = thread_id(foreign_bot.tenant_id, foreign_bot.id, foreign)
    await services.store.contacts.erase(foreign_bot.tenant_id, foreign)  # rows gone, thread recorded, not deleted
    assert checkpoint_rows(database_url, [foreign_thread]) > 0
    assert await services.store.checkpoint_erasures.due(tenant_id=demo.tenant.id) == []
    assert await erase_threads(services, tenant_id=demo.tenant.id) == 0
    assert checkpoint_rows(database_url, [foreign_thread]) > 0
    assert await erase_threads(services, tenant_id=foreign_bot.tenant_id) == 1
    assert checkpoint_rows(database_url, [foreign_thread]) == 0


# -- deleting a bot or a tenant --------------------------------------------------------


async def test_deleting_a_bot_deletes_its_conversations_checkpoint_threads(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, database_url: str
) -> None:
    contacted = await contact_with_everything(services, demo.bot)
    other = await services.store.bots.create(demo.tenant.id, "sales", "Sales")
    kept = Chat(services, other, user=ADDRESS)
    await kept.say("hello")
    kept_thread = thread_id(demo.tenant.id, other.id, kept.conversation_id or "")
    assert checkpoint_rows(database_url, contacted.threads) > 0

    assert (await client.delete(f"/api/v1/bots/{demo.bot.id}")).status_code == 204

    assert checkpoint_rows(database_url, contacted.threads) == 0, "the conversations' and the fork's threads went"
    assert checkpoint_rows(database_url, [kept_thread]) > 0, "another bot's stay"


async def test_deleting_a_tenant_deletes_its_conversations_checkpoint_threads(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, database_url: str
) -> None:
    contacted = await contact_with_everything(services, demo.bot)
    foreign_bot, foreign = await other_tenant_with_the_same_address(services)
    foreign_thread = thread_id(foreign_bot.tenant_id, foreign_bot.id, foreign)

    assert (await client.delete("/api/v1/tenants/acme")).status_code == 204

    assert checkpoint_rows(database_url, contacted.threads) == 0
    assert checkpoint_rows(database_url, [foreign_thread]) > 0, "another tenant's stay"


# -- Redis checkpoints ---------------------------------------------------------------


@pytest.fixture
async def redis_services(data_dir: Path, database_url: str, redis_url: str) -> AsyncIterator[Services]:
    settings: Settings = load_settings(
        environ={}, data_dir=str(data_dir), secret_key="k", checkpointer="redis", redis_url=redis_url
    )
    async with open_services(settings, url=database_url) as services:
        yield services


async def redis_keys_naming(redis_url: str, conversation_id: str) -> list[str]:
    """Keys of the Redis checkpointer that name the conversation (its thread and its forks' threads)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [
            key.decode()
            async for key in client.scan_iter(match=f"*{conversation_id}*", count=1000)
            if not key.startswith(b"botloom:lock:")
        ]
    finally:
        await client.aclose()


async def test_erasure_and_bot_deletion_with_redis_checkpoints(
    redis_services: Services, redis_url: str, database_url: str
) -> None:
    services = redis_services
    demo = await ensure_demo(services)
    contacted = await contact_with_everything(services, demo.bot)
    neighbour = Chat(services, demo.bot, user=OTHER)
    await neighbour.say("hello")
    for conversation in contacted.conversations:
        assert await redis_keys_naming(redis_url, conversation)

    report = await erase_contact(services, demo.tenant.id, Contact("test", ADDRESS))

    assert (report.conversations, report.checkpoint_threads, report.counts["forks"]) == (2, 2, 1)
    for conversation in contacted.conversations:
        assert await redis_keys_naming(redis_url, conversation) == [], "no checkpoint, write or fork key is left"
    assert rows_about(database_url, contacted.conversations)["messages"] == 0
    assert await redis_keys_naming(redis_url, neighbour.conversation_id or ""), "another contact's stay"

    assert await services.store.bots.delete(demo.tenant.id, demo.bot.id)
    await erase_threads(services, tenant_id=demo.tenant.id)
    assert await redis_keys_naming(redis_url, neighbour.conversation_id or "") == [], "the deleted bot's threads go"
