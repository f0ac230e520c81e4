"""A hand-back whose resume fails: the end user is told the bot is back only once it really is, loses nothing,
and the desk shows the pending resume (status, failures, the error's code) and can retry it at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from botloom.core.settings import Settings
from botloom.runtime.desk import RESUME_ATTEMPTS
from botloom.runtime.services import Services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo
from botloom.server.desk.live import end_user_update, end_user_updates
from tests.desk import OPERATOR, bearer, frames_until
from tests.helpers import api_client
from tests.test_desk_followups import NOTE, claimed_over_api, failing_resume, with_agent

HELD = "hello? is anybody there?"


@pytest.fixture
async def client(services: Services, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(settings, services=services)) as http:
        yield http


async def events_after(services: Services, demo: DemoInfo, conversation_id: str, after: int) -> list[dict[str, Any]]:
    stored = await services.store.events.in_conversation(demo.tenant.id, conversation_id, after=after)
    return [e.envelope() for e in stored]


async def test_the_user_hears_the_bot_is_back_only_once_it_is_and_then_gets_the_answers(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-truth")
    conversation = chat.conversation_id or ""
    before = (await services.store.events.last_in_conversation(demo.tenant.id, conversation)).sequence  # type: ignore[union-attr]
    failing_resume(monkeypatch, times=1)
    await services.desk.release(actor, handover_id, NOTE)
    closing = await events_after(services, demo, conversation, before)
    assert [e["kind"] for e in closing] == ["handover.returned_to_bot", "handover.resume_failed"]
    shown = [end_user_update(e) for e in closing]
    assert all(u is None or u.kind != "bot_back" for u in shown), "the bot is not back while its resume fails"

    held = await chat.say(HELD)
    assert held.status == "for_agent", "what the user writes meanwhile is held"
    assert (await services.desk.sweep())["resumed"] == 1
    late = await events_after(services, demo, conversation, closing[-1]["sequence"])
    assert [e["kind"] for e in late] == ["conversation.user_message", "handover.resumed"]
    updates = end_user_updates(late[1])
    assert [u.kind for u in updates] == ["bot_back", "bot_message"], "the bot is back, then it answers"
    messages = await services.store.messages.list_all(demo.tenant.id, conversation)
    [inbound] = [m for m in messages if m.text == HELD]
    [answer] = [m for m in messages if m.direction == "outbound" and m.created_at > inbound.created_at]
    assert (updates[1].text, updates[1].id) == (answer.text, answer.id)
    assert late[1]["data"]["given_back"] is False


async def test_a_resume_that_succeeds_at_once_says_the_bot_is_back_with_the_close(
    services: Services, demo: DemoInfo
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-at-once")
    await services.desk.release(actor, handover_id, NOTE)
    [closed] = [
        e.envelope()
        for e in await services.store.events.in_conversation(demo.tenant.id, chat.conversation_id or "", after=0)
        if e.kind == "handover.returned_to_bot"
    ]
    assert closed["data"]["resumed"] is True
    assert [u.kind for u in end_user_updates(closed)] == ["bot_back"]
    assert (await services.desk.sweep())["resumed"] == 0


async def test_a_given_back_conversation_tells_the_user_the_bot_is_back(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-given-back")
    failing_resume(monkeypatch, times=None)
    await services.desk.release(actor, handover_id, NOTE)
    for _ in range(10):
        record = await services.store.handovers.get(demo.tenant.id, handover_id)
        assert record is not None
        if record.resumed_at is not None:
            break
        await services.desk.sweep()
    events = await events_after(services, demo, chat.conversation_id or "", 0)
    backs = [e for e in events if any(u.kind == "bot_back" for u in end_user_updates(e))]
    assert [e["kind"] for e in backs] == ["handover.resumed"], "told once, when the bot has it"
    assert backs[0]["data"]["given_back"] is True


def test_the_web_chat_shows_the_bot_back_and_the_held_answer_only_after_the_resume(
    socket_app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(app=socket_app) as client:
        services: Services = client.app.state.services
        made = client.post(
            "/api/v1/tenants/acme/agents",
            json={"email": "kim@acme.test", "name": "Kim", "password": "correct horse battery"},
            headers=OPERATOR,
        )
        assert made.status_code == 201, made.text
        kim = bearer(made.json()["token"])
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            socket.send_text(json.dumps({"type": "hello", "user": "ada"}))
            assert json.loads(socket.receive_text())["type"] == "ready"
            socket.send_text(json.dumps({"type": "message", "id": "m1", "text": "talk to a person"}))
            assert frames_until(socket, "done")[-1]["escalated"] is True
            [handover] = client.get("/api/v1/handovers", headers=kim).json()
            assert client.post(f"/api/v1/handovers/{handover['id']}/claim", headers=kim).status_code == 200
            assert frames_until(socket, "agent_joined")[-1]["name"] == "Kim"

            failing_resume(monkeypatch, times=1)
            r = client.post(f"/api/v1/handovers/{handover['id']}/release", json={"note": NOTE}, headers=kim)
            assert r.status_code == 200 and r.json()["resumed_at"] is None, r.text
            socket.send_text(json.dumps({"type": "message", "id": "m2", "text": HELD}))
            meanwhile = frames_until(socket, "done")
            assert meanwhile[-1]["escalated"] is True, "held while the bot is not back"
            client.blocking_portal.call(services.desk.sweep)
            after = frames_until(socket, "bot_back")
            answer = frames_until(socket, "reply")[-1]
        assert "bot_back" not in [f["type"] for f in meanwhile + after[:-1]], "told once, and only when true"
        assert answer.get("from") != "agent" and answer["text"], "the bot's answer to the held message, live"


# -- the desk: the pending resume, listed and retried ---------------------------------------------------------


async def test_the_desk_lists_a_pending_resume_and_retries_it_now(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-desk")
    calls = failing_resume(monkeypatch, times=1)
    await services.desk.release(actor, handover_id, NOTE)
    assert len(calls) == 1
    r = await client.get("/api/v1/handovers?resume=pending&tenant=acme", headers=OPERATOR)
    assert r.status_code == 200, r.text
    [pending] = r.json()
    assert pending["id"] == handover_id and pending["status"] == "returned_to_bot"
    assert (pending["resume_attempts"], pending["resume_error"]) == (1, "RuntimeError")
    assert "unreachable" not in r.text, "the error's code, never its text"
    r = await client.get("/api/v1/handovers?resume=pending&status=waiting&tenant=acme", headers=OPERATOR)
    assert r.json() == [], "open handovers have no resume pending"
    r = await client.get("/api/v1/handovers?resume=later&tenant=acme", headers=OPERATOR)
    assert r.status_code == 400
    _, waiting, _ = await with_agent(services, demo, "user-still-with-a-person")
    r = await client.post(f"/api/v1/handovers/{waiting}/resume?tenant=acme", headers=OPERATOR)
    assert r.status_code == 409, "an open handover has no resume to retry"

    done = await client.post(f"/api/v1/handovers/{handover_id}/resume?tenant=acme", headers=OPERATOR)
    assert done.status_code == 200, done.text
    assert done.json()["resumed_at"] is not None and len(calls) == 2, "retried at once, not at the next sweep"
    r = await client.get("/api/v1/handovers?resume=pending&tenant=acme", headers=OPERATOR)
    assert r.json() == []
    again = await client.post(f"/api/v1/handovers/{handover_id}/resume?tenant=acme", headers=OPERATOR)
    assert again.status_code == 200 and len(calls) == 2, "done already (by the sweep, say): nothing is retried"
    assert again.json()["resumed_at"] == done.json()["resumed_at"]
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "open"


async def test_a_failed_retry_now_keeps_it_pending_without_hastening_the_give_back(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, handover_id, actor = await with_agent(services, demo, "user-retry-fails")
    calls = failing_resume(monkeypatch, times=None)
    await services.desk.release(actor, handover_id, NOTE)  # the first failure, counted
    # an agent clicking "Retry now" again and again during the outage
    for _ in range(RESUME_ATTEMPTS + 1):
        r = await client.post(f"/api/v1/handovers/{handover_id}/resume?tenant=acme", headers=OPERATOR)
        assert r.status_code == 200, r.text
        assert (r.json()["resumed_at"], r.json()["resume_attempts"], r.json()["resume_error"]) == (
            None,
            1,
            "RuntimeError",
        ), "tried, its error kept, but not counted toward the give-back"
    assert len(calls) == RESUME_ATTEMPTS + 2, "each click retried the resume"
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "escalated", "not given back by the clicks"
    # the sweep's failures alone count: the fifth gives the conversation back
    for expected in range(2, RESUME_ATTEMPTS):
        await services.desk.sweep()
        record = await services.store.handovers.get(demo.tenant.id, handover_id)
        assert record is not None and (record.resume_attempts, record.resumed_at) == (expected, None)
    await services.desk.sweep()
    record = await services.store.handovers.get(demo.tenant.id, handover_id)
    assert record is not None and record.resume_attempts == RESUME_ATTEMPTS and record.resumed_at is not None
    r = await client.post(f"/api/v1/handovers/{handover_id}/resume?tenant=acme", headers={"Authorization": "x"})
    assert r.status_code == 401
    r = await client.post("/api/v1/handovers/not-an-id/resume?tenant=acme", headers=OPERATOR)
    assert r.status_code in {400, 404}
    r = await client.post(f"/api/v1/handovers/{'a' * 5000}/resume?tenant=acme", headers=OPERATOR)
    assert r.status_code in {400, 404, 414}


# -- the desk: an agent takes a pending resume back ------------------------------------------------------------


async def test_an_agent_takes_back_a_pending_resume_and_keeps_answering(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, chat, record = await claimed_over_api(client, services, demo, "user-take-back")
    calls = failing_resume(monkeypatch, times=None)
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/release", {"note": NOTE})
    assert r.status_code == 200 and r.json()["resumed_at"] is None, r.text
    held = await chat.say(HELD)
    assert held.status == "for_agent"

    # only an agent takes it back: the operator's and the tenant's tokens are supervisors
    for supervisor in (OPERATOR, bearer(demo.api_key)):
        r = await client.post(f"/api/v1/handovers/{record.id}/take-back?tenant=acme", headers=supervisor)
        assert r.status_code == 403, r.text
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/take-back")
    assert r.status_code == 200, r.text
    taken = r.json()
    assert (taken["status"], taken["agent_id"], taken["resumed_at"]) == ("assigned", ann.id, None)
    assert (taken["resume_attempts"], taken["resume_error"], taken["closed_at"]) == (0, None, None)
    assert len(calls) == 1

    # the pending resume is cancelled: the sweep leaves it alone, the bot does not take over
    pending = await client.get("/api/v1/handovers?resume=pending&tenant=acme", headers=OPERATOR)
    assert pending.json() == []
    await services.desk.sweep()
    assert len(calls) == 1, "no resume is retried any more"
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "escalated"
    kinds = [e.kind for e in await services.store.events.in_conversation(demo.tenant.id, conversation.id, after=0)]
    assert kinds[-1] == "handover.taken_back"
    # the person answers what the user wrote meanwhile, through the conversation's channel
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/messages", {"text": "Still here, Ann."})
    assert r.status_code == 201, r.text
    assert r.json()["handover"]["status"] == "with_agent"
    messages = await services.store.messages.list_all(demo.tenant.id, conversation.id)
    assert [m.status for m in messages if m.text == HELD] == ["for_agent"], "the bot never answered it"

    # and a second take-back, or one of an open handover, is a 409
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/take-back")
    assert r.status_code == 409, r.text


async def test_a_take_back_after_the_bot_took_over_is_a_409(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    ann, _, record = await claimed_over_api(client, services, demo, "user-too-late")
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/release", {"note": NOTE})
    assert r.status_code == 200 and r.json()["resumed_at"] is not None, r.text
    r = await ann.call("POST", f"/api/v1/handovers/{record.id}/take-back")
    assert r.status_code == 409, r.text
    r = await ann.call("POST", "/api/v1/handovers/not-an-id/take-back")
    assert r.status_code in {400, 404}
    r = await client.post(f"/api/v1/handovers/{record.id}/take-back", headers={"Authorization": "Bearer bla_nope"})
    assert r.status_code == 401


async def test_a_resume_racing_a_take_back_leaves_the_conversation_with_the_person(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep that listed the handover before the agent took it back resumes nothing."""
    chat, handover_id, actor = await with_agent(services, demo, "user-race")
    failing_resume(monkeypatch, times=1)
    await services.desk.release(actor, handover_id, NOTE)
    listed = await services.store.handovers.get(demo.tenant.id, handover_id)
    assert listed is not None and listed.resumed_at is None
    await services.desk.take_back(actor, handover_id)
    done = await services.desk._retry(listed)  # the sweep's stale row
    assert done.failure is None and not done.back and not done.first
    record = await services.store.handovers.get(demo.tenant.id, handover_id)
    assert record is not None and (record.status, record.resumed_at) == ("assigned", None)
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "escalated"
