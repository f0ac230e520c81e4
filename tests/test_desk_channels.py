"""The agent desk's round trip on push and socket channels: Twilio (SMS and WhatsApp, through its stand-in),
e-mail (through the test SMTP server) and web chat (its WebSocket, no browser).

Each: the user escalates, an agent claims and answers (the answer reaches the user through the
conversation's own channel, by the same delivery as the bot's replies), hands back with a note
(kept in the graph's state, ``agent_note``), and the bot answers the next message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from botloom.core.settings import Settings
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from botloom.server.worker import workers
from botloom.testing.channel_contract import GREETING, configure_twilio, fast_app
from tests.desk import OPERATOR, DeskAgent, bearer, frames_until, make_agent
from tests.email_client import USER, email_config, post_mail, raw_mail
from tests.helpers import api_client
from tests.mailservers import RunningSmtp
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

WEBHOOK = "/channels/twilio/acme/support"
NOTE = "Order 1234 was re-sent by courier today; the bot can tell the user."


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(fast_app(settings, services)) as test_client:
        yield test_client


async def wait_sent(peer: TwilioPeer, count: int) -> list[str]:
    return [m.body for m in await asyncio.to_thread(peer.wait_for, count, 30)]


async def agent_note(services: Services, demo: DemoInfo, conversation: str) -> Any:
    graph = services.graphs.get(demo.bot.graph)
    config: Any = {"configurable": {"thread_id": thread_id(demo.tenant.id, demo.bot.id, conversation)}}
    return (await graph.aget_state(config)).values.get("agent_note")


async def claimed(agent: DeskAgent) -> dict[str, Any]:
    [handover] = await agent.queue()
    r = await agent.call("POST", f"/api/v1/handovers/{handover['id']}/claim")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


@pytest.mark.parametrize("sender", ["+15550001111", "whatsapp:+15550001111"])
async def test_twilio_round_trip(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer, sender: str
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    sam = await make_agent(client, "acme", demo.api_key, "sam@acme.test", name="Sam")
    await sam.available()
    async with workers(services):
        await post_signed(client, WEBHOOK, inbound_form("I want to talk to a person", sender=sender))
        assert "connecting you with a person" in (await wait_sent(peer, 1))[0]
        handover = await claimed(sam)
        r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/messages", {"text": "Hi, Sam here. Order?"})
        assert r.status_code == 201, r.text
        assert r.json()["messages"][0]["status"] in ("pending", "sending", "sent")
        sent = await asyncio.to_thread(peer.wait_for, 2, 30)
        assert sent[1].body == "Hi, Sam here. Order?" and sent[1].to == sender, "through the conversation's channel"

        await post_signed(client, WEBHOOK, inbound_form("order 1234", sender=sender))
        r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/release", {"note": NOTE})
        assert r.status_code == 200, r.text
        assert await agent_note(services, demo, handover["conversation_id"]) == NOTE
        await post_signed(client, WEBHOOK, inbound_form("hello", sender=sender))
        bodies = await wait_sent(peer, 3)
    assert len(bodies) == 3 and bodies[2] != "Hi, Sam here. Order?", "the bot answers again"
    messages = await services.store.messages.list_all(demo.tenant.id, handover["conversation_id"])
    agents = [m for m in messages if m.metadata.get("agent") == "Sam"]
    assert [(m.text, m.status) for m in agents] == [("Hi, Sam here. Order?", "sent")], "delivered, recorded"


async def test_whatsapp_outside_the_24_hour_window_needs_a_template(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    sam = await make_agent(client, "acme", demo.api_key, "sam@acme.test", name="Sam")
    async with workers(services):
        await post_signed(client, WEBHOOK, inbound_form("agent please", sender="whatsapp:+15550002222"))
        await wait_sent(peer, 1)
        handover = await claimed(sam)
        async with services.db.connection() as conn:
            await conn.execute(
                "UPDATE messages SET created_at = now() - interval '25 hours' WHERE conversation_id = %s "
                "AND direction = 'inbound'",
                (handover["conversation_id"],),
            )
        r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/messages", {"text": "Still there?"})
        assert r.status_code == 409, r.text
        assert "template" in r.json()["detail"] and "24 hours" in r.json()["detail"]
        await post_signed(client, WEBHOOK, inbound_form("yes I am", sender="whatsapp:+15550002222"))
        r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/messages", {"text": "Great, fixed."})
        assert r.status_code == 201, "the user wrote again: the window is open"
        assert [m.body for m in await asyncio.to_thread(peer.wait_for, 2, 30)][1] == "Great, fixed."
    assert all(m.body != "Still there?" for m in peer.sent)


def test_web_chat_round_trip_on_its_socket(socket_app: Litestar) -> None:
    with TestClient(app=socket_app) as client:
        body = {"email": "sam@acme.test", "name": "Sam", "password": "correct horse battery"}
        made = client.post("/api/v1/tenants/acme/agents", json=body, headers=OPERATOR)
        assert made.status_code == 201, made.text
        sam = bearer(made.json()["token"])
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            socket.send_text(json.dumps({"type": "hello", "user": "ada"}))
            conversation = json.loads(socket.receive_text())["conversation_id"]
            socket.send_text(json.dumps({"type": "message", "id": "m1", "text": "talk to a person"}))
            assert frames_until(socket, "done")[-1]["escalated"] is True
            [handover] = client.get("/api/v1/handovers", headers=sam).json()
            assert handover["conversation_id"] == conversation
            path = f"/api/v1/handovers/{handover['id']}"
            assert client.post(f"{path}/claim", headers=sam).status_code == 200
            assert frames_until(socket, "agent_joined")[-1]["name"] == "Sam", "live: a person joined"
            r = client.post(f"{path}/messages", json={"text": "Hi Ada, Sam here."}, headers=sam)
            assert r.status_code == 201, r.text
            assert r.json()["messages"][0]["status"] == "sent", "a socket channel's message is handed over at once"
            live = frames_until(socket, "reply")[-1]
            assert (live["text"], live["from"], live["name"]) == ("Hi Ada, Sam here.", "agent", "Sam"), "live"
            r = client.post(f"{path}/release", json={"note": NOTE}, headers=sam)
            assert r.status_code == 200, r.text
            assert frames_until(socket, "bot_back")[-1]["type"] == "bot_back"
            socket.send_text(json.dumps({"type": "message", "id": "m2", "text": "where is my order 1236"}))
            replies = [f.get("text", "") for f in frames_until(socket, "done") if f["type"] == "reply"]
            assert any("1236" in text for text in replies), "the bot answers again on the same socket"
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            socket.send_text(json.dumps({"type": "hello", "conversation_id": conversation, "user": "ada"}))
            history = json.loads(socket.receive_text())["history"]
        assert ("bot", "Hi Ada, Sam here.") in [(m["role"], m["text"]) for m in history]
        checkpoints = client.get(f"/api/v1/conversations/{conversation}/checkpoints", headers=OPERATOR).json()
        assert checkpoints[0]["values"]["agent_note"] == NOTE


async def test_email_round_trip_in_the_thread(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with api_client(fast_app(settings, services)) as client, workers(services):
        r = await client.put(
            "/api/v1/bots/acme/support/plugins/email",
            json={"enabled": True, "config": email_config(smtp)},
            headers=bearer(demo.api_key),
        )
        assert r.status_code == 200, r.text
        sam = await make_agent(client, "acme", demo.api_key, "sam@acme.test", name="Sam")
        await sam.available()
        first = raw_mail("I want to talk to a person", message_id="t1@example.org", subject="Broken kettle")
        assert (await post_mail(client, first)).status_code == 200
        [notice] = await asyncio.to_thread(smtp.wait_for, 1, 30)
        assert "connecting you with a person" in str(notice.message.get_body(preferencelist=("plain",)).get_content())
        handover = await claimed(sam)
        r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/messages", {"text": "Hi, Sam here. Photo?"})
        assert r.status_code == 201, r.text
        _, answer = await asyncio.to_thread(smtp.wait_for, 2, 30)
        mail = answer.message
        assert "Hi, Sam here. Photo?" in str(mail.get_body(preferencelist=("plain",)).get_content())
        assert mail["Subject"] == "Re: Broken kettle" and "<t1@example.org>" in mail["References"], "in the thread"
        assert answer.rcpt_tos == (USER,)
        r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/release", {"note": NOTE})
        assert r.status_code == 200, r.text
        again = raw_mail("hello", message_id="t2@example.org", in_reply_to=mail["Message-ID"].strip("<>"))
        assert (await post_mail(client, again)).status_code == 200
        third = (await asyncio.to_thread(smtp.wait_for, 3, 30))[2].message
        assert str(third.get_body(preferencelist=("plain",)).get_content()).strip() == GREETING, "the bot is back"
    conversations = await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)
    assert len(conversations) == 1, "one thread, one conversation, through the handover"
    assert await agent_note(services, demo, conversations[0].id) == NOTE
