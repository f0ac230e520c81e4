"""A web chat user sees every update of their conversation even when a live notice is lost.

Live notices (PostgreSQL ``NOTIFY`` here) are the fast path; the stored events are the
truth. A notice is "lost" in these tests by storing an event without notifying, as a
listener that was reconnecting, or a publish that failed, would leave it: the user
still sees it, in order, once, when the next notice shows a gap, or when the periodic
catch-up runs while a person is involved.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from botloom.runtime.services import Services
from botloom.server.desk import live
from tests.desk import OPERATOR, bearer, frames_until


def escalated_chat(client: TestClient[Litestar], socket: Any) -> str:
    """Open a chat on ``socket`` and ask for a person; the conversation's id."""
    socket.send_text(json.dumps({"type": "hello", "user": "ada"}))
    conversation: str = json.loads(socket.receive_text())["conversation_id"]
    socket.send_text(json.dumps({"type": "message", "id": "m1", "text": "talk to a person"}))
    assert frames_until(socket, "done")[-1]["escalated"] is True
    return conversation


def store_without_notice(client: TestClient[Litestar], conversation: str, kind: str, data: dict[str, Any]) -> None:
    """Store an event of the conversation as a lost notice leaves it: stored, nobody told."""
    services: Services = client.app.state.services

    async def append() -> None:
        [tenant] = [t for t in await services.store.tenants.list_all() if t.slug == "acme"]
        assert await services.store.events.append(tenant.id, kind, data, conversation_id=conversation) is not None

    client.blocking_portal.call(append)


def agent(client: TestClient[Litestar]) -> dict[str, str]:
    body = {"email": "sam@acme.test", "name": "Sam", "password": "correct horse battery"}
    made = client.post("/api/v1/tenants/acme/agents", json=body, headers=OPERATOR)
    assert made.status_code == 201, made.text
    return bearer(made.json()["token"])


def test_a_lost_notice_is_shown_before_the_next_one_in_order(socket_app: Litestar) -> None:
    with TestClient(app=socket_app) as client:
        sam = agent(client)
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            conversation = escalated_chat(client, socket)
            store_without_notice(client, conversation, "handover.claimed", {"agent_name": "Kim"})
            [handover] = client.get("/api/v1/handovers", headers=sam).json()
            assert client.post(f"/api/v1/handovers/{handover['id']}/claim", headers=sam).status_code == 200
            first = frames_until(socket, "agent_joined")[-1]
            second = frames_until(socket, "agent_joined")[-1]
        assert (first["name"], second["name"]) == ("Kim", "Sam"), "the lost one first, then the live one"


def test_a_lost_notice_is_shown_by_the_catch_up_while_a_person_is_involved(
    socket_app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "CATCH_UP_EVERY", 0.1)
    with TestClient(app=socket_app) as client, client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
        conversation = escalated_chat(client, socket)
        store_without_notice(client, conversation, "handover.claimed", {"agent_name": "Kim"})
        assert frames_until(socket, "agent_joined")[-1]["name"] == "Kim"
        store_without_notice(client, conversation, "handover.message", {"agent_name": "Kim", "text": "Hi Ada"})
        reply = frames_until(socket, "reply")[-1]
        assert (reply["text"], reply["from"]) == ("Hi Ada", "agent")


def test_a_reopened_chat_shows_only_what_happens_after_it_opened(socket_app: Litestar) -> None:
    with TestClient(app=socket_app) as client:
        sam = agent(client)
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            conversation = escalated_chat(client, socket)
        [handover] = client.get("/api/v1/handovers", headers=sam).json()
        assert client.post(f"/api/v1/handovers/{handover['id']}/claim", headers=sam).status_code == 200
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            socket.send_text(json.dumps({"type": "hello", "conversation_id": conversation, "user": "ada"}))
            assert json.loads(socket.receive_text())["type"] == "ready"
            r = client.post(f"/api/v1/handovers/{handover['id']}/messages", json={"text": "Sam here"}, headers=sam)
            assert r.status_code == 201, r.text
            frames = frames_until(socket, "reply")
        assert [f["type"] for f in frames] == ["reply"], "the claim before the chat reopened is not shown again"
        assert frames[0]["text"] == "Sam here"
