"""The agent desk's follow-ups (#15): resolve vs. release, a release whose resume fails, idempotent agent
messages, the away timeout as a setting, capacity in the "nobody is available" notice, the demo's agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from botloom.core.settings import Settings, SettingsError, load_settings
from botloom.runtime.desk import UNAVAILABLE_NOTICE, Actor
from botloom.runtime.handover import Handovers
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from tests.desk import OPERATOR, DeskAgent, bearer, make_agent
from tests.helpers import Chat, api_client
from tests.test_desk_routing import agent, escalate, online

NOTE = "Refunded order 1234 in full; nothing else is open."


@pytest.fixture
async def client(services: Services, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(settings, services=services)) as http:
        yield http


async def with_agent(services: Services, demo: DemoInfo, user: str) -> tuple[Chat, str, Actor]:
    """A conversation that asked about an order, then for a person; claimed by an agent who answered once."""
    ann = await agent(services, demo, f"ann-{user}")
    actor = Actor(demo.tenant.id, ann)
    chat = Chat(services, demo.bot, user=user, channel="rest")
    await chat.say("where is my order 1234?")
    assert (await chat.say("I want to talk to a person")).escalated
    record = await services.store.handovers.open_of(demo.tenant.id, chat.conversation_id or "")
    assert record is not None
    await services.desk.claim(actor, record.id)
    await services.desk.send(actor, record.id, "Hi, Ann here.")
    return chat, record.id, actor


async def claimed_over_api(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, user: str
) -> tuple[DeskAgent, Chat, Any]:
    """Agent Ann (made over the API) and ``user``'s conversation with a person, whose handover Ann claimed."""
    ann = await make_agent(client, "acme", demo.api_key, "ann@acme.test", name="Ann")
    chat, (record, _) = await escalate(services, demo, user)
    assert (await ann.call("POST", f"/api/v1/handovers/{record.id}/claim")).status_code == 200
    return ann, chat, record


# -- 1. resolve closes the matter; release hands back with the note in context ----------------------------


async def test_resolve_starts_the_next_message_fresh_and_keeps_the_resolution(
    services: Services, demo: DemoInfo
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-resolve")
    assert (await chat.state())["messages"], "before: the state has the conversation's history"
    closed = await services.desk.resolve(actor, handover_id, NOTE)
    assert closed.status == "resolved" and closed.note == NOTE, "the resolution is kept on the handover"
    assert closed.summary["intent"], "and so is the bot's summary"

    state = await chat.state()
    assert state["messages"] == [], "resolved: the bot starts the next message with no history"
    assert not state.get("slots") and not state.get("agent_note") and not state.get("pending_intent")
    assert not state.get("escalated")

    result = await chat.say("hi")
    assert not result.escalated and result.replies, "the bot answers the next message"
    after = await chat.state()
    assert after["messages"][0]["content"] == "hi", "a fresh start: nothing before the new message"
    assert not after.get("agent_note")


async def test_release_keeps_the_history_and_the_note(services: Services, demo: DemoInfo) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-release")
    closed = await services.desk.release(actor, handover_id, NOTE)
    assert closed.status == "returned_to_bot"
    state = await chat.state()
    assert state["agent_note"] == NOTE
    contents = [m["content"] for m in state["messages"]]
    assert "where is my order 1234?" in contents and "Hi, Ann here." in contents, "the history stays"
    result = await chat.say("thanks")
    assert not result.escalated and result.replies
    assert (await chat.state())["agent_note"] == NOTE, "the bot keeps answering with the note in context"


async def test_resolve_takes_a_resolution_through_the_api(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    ann, _, record = await claimed_over_api(client, services, demo, "user-api")
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/resolve", {"note": "x" * 4001})
    assert r.status_code == 400, "a resolution is at most 4000 characters"
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/resolve", {"note": NOTE})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "resolved" and r.json()["note"] == NOTE


# -- 2. a release whose resume fails is retried, never stranded ---------------------------------------------


def failing_resume(monkeypatch: pytest.MonkeyPatch, times: int | None) -> list[int]:
    """Make the graph's resume on a hand-back fail ``times`` times (``None``: always); the calls made."""
    calls: list[int] = []
    original = Handovers.agent_action

    async def flaky(self: Handovers, bot: Any, conversation_id: str, **kwargs: Any) -> Any:
        if kwargs.get("handback"):
            calls.append(1)
            if times is None or len(calls) <= times:
                raise RuntimeError("checkpointer unreachable")
        return await original(self, bot, conversation_id, **kwargs)

    monkeypatch.setattr(Handovers, "agent_action", flaky)
    return calls


async def events_of(services: Services, demo: DemoInfo, conversation_id: str) -> list[str]:
    return [e.kind for e in await services.store.events.in_conversation(demo.tenant.id, conversation_id, after=0)]


async def test_a_failed_resume_on_release_is_reported_and_retried(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-flaky")
    calls = failing_resume(monkeypatch, times=1)
    closed = await services.desk.release(actor, handover_id, NOTE)
    assert closed.status == "returned_to_bot" and len(calls) == 1
    assert closed.resumed_at is None, "the handover says the bot has not taken the conversation back yet"
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "escalated"
    assert "handover.resume_failed" in await events_of(services, demo, chat.conversation_id or "")

    swept = await services.desk.sweep()
    assert swept["resumed"] == 1 and len(calls) == 2, "the desk's sweep retries the resume"
    done = await services.store.handovers.get(demo.tenant.id, handover_id)
    assert done is not None and done.resumed_at is not None
    result = await chat.say("hi")
    assert not result.escalated and result.replies, "the bot answers again"
    assert (await chat.state())["agent_note"] == NOTE, "with the note in context"
    assert (await services.desk.sweep())["resumed"] == 0, "nothing is resumed twice"


async def test_what_the_user_wrote_while_the_resume_was_pending_is_answered_once_the_bot_is_back(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-waiting")
    failing_resume(monkeypatch, times=1)
    await services.desk.release(actor, handover_id, NOTE)
    held = await chat.say("hello? is anybody there?")
    assert held.status == "for_agent" and not held.replies, "the conversation is not the bot's yet: held"

    assert (await services.desk.sweep())["resumed"] == 1
    messages = await services.store.messages.list_all(demo.tenant.id, chat.conversation_id or "")
    [inbound] = [m for m in messages if m.text == "hello? is anybody there?"]
    assert inbound.status != "for_agent", "no longer held for a person who has gone"
    after = [m for m in messages if m.direction == "outbound" and m.created_at > inbound.created_at]
    assert after, "the bot answered it once it had the conversation back"
    assert (await services.desk.sweep())["resumed"] == 0


async def test_a_resume_that_keeps_failing_still_gives_the_conversation_back(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-broken")
    calls = failing_resume(monkeypatch, times=None)
    await services.desk.release(actor, handover_id, NOTE)
    while True:
        record = await services.store.handovers.get(demo.tenant.id, handover_id)
        assert record is not None
        if record.resumed_at is not None:
            break
        assert len(calls) <= 10, "the retries end"
        await services.desk.sweep()
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "open", "given back to the bot without the resume"
    result = await chat.say("hello?")
    assert not result.escalated and result.replies, "nobody-answers is never the end state"


# -- 3. an agent's message is stored and delivered once per idempotency key -------------------------------


async def test_a_retried_agent_message_is_stored_and_sent_once(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    ann, chat, record = await claimed_over_api(client, services, demo, "user-idem")
    path = f"/api/v1/handovers/{record.id}/messages"
    headers = ann.headers | {"Idempotency-Key": "click-1"}

    first, second = await asyncio.gather(
        client.post(path, json={"text": "On it."}, headers=headers),
        client.post(path, json={"text": "On it."}, headers=headers),
    )
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["messages"][0]["id"] == second.json()["messages"][0]["id"]
    again = await client.post(path, json={"text": "On it."}, headers=headers)
    assert again.status_code == 201 and again.json()["messages"][0]["id"] == first.json()["messages"][0]["id"]

    by_body = [await ann.call("POST", path, {"text": "Found it.", "client_message_id": "msg-2"}) for _ in range(2)]
    assert [r.status_code for r in by_body] == [201, 201]
    assert by_body[0].json()["messages"][0]["id"] == by_body[1].json()["messages"][0]["id"]

    outbound = [text for direction, text in await chat.transcript() if direction == "outbound"]
    assert outbound.count("On it.") == 1 and outbound.count("Found it.") == 1
    kinds = await events_of(services, demo, chat.conversation_id or "")
    assert kinds.count("handover.message") == 2, "one event (one live delivery) per message"
    state = await chat.state()
    assert [m["content"] for m in state["messages"]].count("On it.") == 1, "the graph heard it once"

    other = await client.post(path, json={"text": "Something else."}, headers=headers)
    assert other.status_code == 409 and "click-1" in other.text, "a key names one message"
    for bad in ("", "x" * 201, "a\nb"):
        r = await client.post(path, json={"text": "hm"}, headers=ann.headers | {"Idempotency-Key": bad})
        assert r.status_code == 400, (bad, r.text)
    r = await ann.call("POST", path, {"text": "hm", "client_message_id": "x" * 201})
    assert r.status_code == 400
    r = await client.post(
        path, json={"text": "hm", "client_message_id": "a"}, headers=ann.headers | {"Idempotency-Key": "b"}
    )
    assert r.status_code == 400, "two different keys"
    r = await client.post(path, json={"text": "On it."}, headers={"Idempotency-Key": "click-1"})
    assert r.status_code == 401


async def test_idempotency_keys_are_per_handover(client: httpx.AsyncClient, services: Services, demo: DemoInfo) -> None:
    ann = await make_agent(client, "acme", demo.api_key, "ann@acme.test", name="Ann")
    sent = []
    for user in ("user-a", "user-b"):
        _, (record, _) = await escalate(services, demo, user)
        assert (await ann.call("POST", f"/api/v1/handovers/{record.id}/claim")).status_code == 200
        r = await client.post(
            f"/api/v1/handovers/{record.id}/messages",
            json={"text": "Hello!"},
            headers=ann.headers | {"Idempotency-Key": "same"},
        )
        assert r.status_code == 201, r.text
        sent.append(r.json()["messages"][0])
    assert sent[0]["id"] != sent[1]["id"], "the same key on two handovers: two messages"

    r = await client.post("/api/v1/tenants", json={"slug": "beta", "name": "Beta"}, headers=OPERATOR)
    assert r.status_code == 201, r.text
    mole = await make_agent(client, "beta", r.json()["api_key"]["key"], "mole@beta.test", name="Mole")
    r = await client.post(
        f"/api/v1/handovers/{record.id}/messages",
        json={"text": "Hello!"},
        headers=mole.headers | {"Idempotency-Key": "same"},
    )
    assert r.status_code == 404, "another tenant's agent learns nothing of the handover or its keys"


# -- 4. the away timeout is a setting; capacity decides "nobody is available" --------------------------------


def test_the_away_timeout_is_a_setting() -> None:
    assert load_settings(environ={}).desk_away_seconds == 90
    assert load_settings(environ={"BOTLOOM_DESK_AWAY_SECONDS": "300"}).desk_away_seconds == 300
    for bad in ("0", "-5", "soon", "100000"):
        with pytest.raises(SettingsError, match="BOTLOOM_DESK_AWAY_SECONDS"):
            load_settings(environ={"BOTLOOM_DESK_AWAY_SECONDS": bad})


async def test_the_desk_uses_the_away_setting(settings: Settings, database_url: str) -> None:
    patient = msgspec.structs.replace(settings, desk_away_seconds=600.0)
    async with open_services(patient, url=database_url) as services:
        assert services.desk.away_after == 600.0
        demo = await ensure_demo(services)
        ann = await agent(services, demo, "ann")
        await online(services, ann)
        async with services.db.connection() as conn:
            await conn.execute("UPDATE agents SET last_seen_at = now() - interval '5 minutes' WHERE id = %s", (ann.id,))
        _, (record, _) = await escalate(services, demo, "user-1")
        assert record.summary["availability"] == "available", "5 minutes without a heartbeat is within 600 s"
        assigned = await services.store.handovers.get(demo.tenant.id, record.id)
        assert assigned is not None and assigned.agent_id == ann.id


async def test_agents_at_capacity_are_nobody_available(services: Services, demo: DemoInfo) -> None:
    ann = await agent(services, demo, "ann", capacity=1)
    await online(services, ann)
    _, (first, result) = await escalate(services, demo, "user-1")
    assert first.summary["availability"] == "available" and "connecting you" in result.replies[-1].text
    _, (second, result) = await escalate(services, demo, "user-2")
    assert second.summary["availability"] == "nobody_available", "the only agent online has no room"
    assert result.replies[-1].text == UNAVAILABLE_NOTICE
    waiting = await services.store.handovers.get(demo.tenant.id, second.id)
    assert waiting is not None and waiting.status == "waiting"


# -- 5. the demo has an agent ------------------------------------------------------------------------------


async def test_the_demo_makes_an_agent_who_can_sign_in(
    client: httpx.AsyncClient, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    from botloom.server.app import _start_demo

    await _start_demo(services, services.settings)
    printed = capsys.readouterr().out
    info = await ensure_demo(services, agent=True)
    assert info.agent_email and info.agent_password and info.agent_email in printed
    assert "/desk" in printed and "password" in printed
    r = await client.post(
        "/api/v1/agents/sign-in", json={"tenant": "acme", "email": info.agent_email, "password": info.agent_password}
    )
    assert r.status_code == 201, r.text
    desk = bearer(r.json()["token"])
    assert (await client.post("/api/v1/agents/me/presence", json={"status": "available"}, headers=desk)).is_success

    chat = Chat(services, info.bot, user="newcomer", channel="rest")
    assert (await chat.say("I want to talk to a person")).escalated
    r = await client.get("/api/v1/handovers?mine=true", headers=desk)
    assert [h["conversation_id"] for h in r.json()] == [chat.conversation_id], "the demo's agent gets it"

    again = await ensure_demo(services, agent=True)
    assert again.agent_email == info.agent_email and again.agent_password != info.agent_password
    old = {"tenant": "acme", "email": info.agent_email, "password": info.agent_password}
    assert (await client.post("/api/v1/agents/sign-in", json=old)).status_code == 401, "a new password each run"
    agents = await services.store.agents.list_all(info.tenant.id)
    assert len(agents) == 1
