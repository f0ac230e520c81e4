"""Forks of a turn (``POST /api/v1/conversations/{id}/forks``): never sent, the original untouched, breakpoints.

Everything goes through the real app on a real PostgreSQL, as ``/api/v1`` clients call it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from botloom import ToolContext, hookimpl
from botloom.core.definitions import Intent, Slot, Tool
from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from tests.conftest import ADMIN_TOKEN
from tests.helpers import Chat, api_client, enable, host_with
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBHOOK = "/channels/twilio/acme/support"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(settings, services=services)) as test_client:
        test_client.headers.update(ADMIN)
        yield test_client


async def turn_checkpoints(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's checkpoints, oldest first (one per turn)."""
    response = await client.get(f"/api/v1/conversations/{conversation_id}/checkpoints", params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))


async def first_turn(client: httpx.AsyncClient, services: Services, demo: DemoInfo, text: str) -> tuple[Chat, str]:
    """A conversation of the demo bot whose user said ``text``, and the checkpoint id of its first turn."""
    chat = Chat(services, demo.bot)
    await chat.say(text)
    assert chat.conversation_id is not None
    return chat, (await turn_checkpoints(client, chat.conversation_id))[0]["checkpoint_id"]


async def fork(client: httpx.AsyncClient, conversation_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1/conversations/{conversation_id}/forks", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def outbound_rows(services: Services) -> list[tuple[str, str]]:
    async with services.db.connection() as conn:
        cur = await conn.execute("SELECT id::text AS id, text FROM messages WHERE direction = 'outbound' ORDER BY id")
        return [(r["id"], r["text"]) for r in await cur.fetchall()]


async def count(services: Services, table: str) -> int:
    async with services.db.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
        row = await cur.fetchone()
        assert row is not None
        return int(row["n"])


async def test_a_fork_of_a_push_channel_turn_sends_nothing_and_leaves_the_original_alone(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    put = await client.put(
        f"/api/v1/bots/{demo.bot.id}/plugins/twilio", json={"enabled": True, "config": twilio_config(peer, "rest")}
    )
    assert put.status_code == 200, put.text
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("where is my order 1234?"))).status_code == 200
        sent = await asyncio.to_thread(peer.wait_for, 1, 30)
        assert "1234 has shipped" in sent[0].body
        conversation = (await services.store.conversations.list_all(demo.tenant.id, demo.bot.id))[0]
        assert conversation.channel == "twilio"
        checkpoints = await turn_checkpoints(client, conversation.id)
        messages_before = await outbound_rows(services)
        parts_before = await count(services, "message_parts")
        requests_before = peer.requests

        forked = await fork(client, conversation.id, checkpoint_id=checkpoints[-1]["checkpoint_id"], text="hi")

        assert forked["replies"] == ["Hello! How can I help you today?"]
        assert forked["path"] == ["retrieve", "classify", "respond"]
        assert forked["paused_at"] is None
        assert forked["original"]["intent"] == "order_status"
        assert forked["diff"]["intent"] == {"original": "order_status", "fork": "greeting"}
        assert forked["diff"]["path"]["original"] == ["retrieve", "classify", "act", "respond"]
        assert "Hello!" in forked["diff"]["replies"]["fork"][0]
        assert await outbound_rows(services) == messages_before, "no reply stored in the conversation"
        assert await count(services, "message_parts") == parts_before, "nothing queued for delivery"
        assert await turn_checkpoints(client, conversation.id) == checkpoints, "the original thread is untouched"
        # The workers still run: the next real message's reply is the next thing Twilio gets.
        assert (await post_signed(client, WEBHOOK, inbound_form("thanks"))).status_code == 200
        sent = await asyncio.to_thread(peer.wait_for, 2, 30)
    assert [m.body for m in sent][1].startswith("You're welcome")
    assert len(peer.sent) == 2
    assert peer.requests - requests_before == 1, "only the real reply reached Twilio"
    got = await client.get(f"/api/v1/forks/{forked['fork_id']}")
    assert got.status_code == 200
    assert got.json()["replies"] == forked["replies"]
    listed = await client.get(f"/api/v1/conversations/{conversation.id}/forks")
    assert [f["fork_id"] for f in listed.json()] == [forked["fork_id"]]


async def test_breakpoints_pause_and_continue_with_edited_state(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hi")
    await chat.say("where is my order 1234?")
    assert chat.conversation_id is not None
    checkpoints = await turn_checkpoints(client, chat.conversation_id)
    order_turn = checkpoints[1]["checkpoint_id"]

    paused = await fork(client, chat.conversation_id, checkpoint_id=order_turn, break_after=["classify"])
    assert (paused["paused_at"], paused["pause"]) == ("classify", "after")
    assert paused["replies"] == [] and paused["path"] == ["retrieve", "classify"]
    assert paused["next"] == ["act"]
    assert paused["state"]["intent"] == "order_status"
    assert paused["state"]["slots"] == {"order_number": "1234"}

    edited = {"slots": {"order_number": "1236"}}
    resumed = await client.post(f"/api/v1/forks/{paused['fork_id']}/continue", json={"state": edited})
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["paused_at"] is None
    assert body["replies"] == ["Your Acme Shop order 1236 was delivered on Monday."]
    assert body["path"] == ["retrieve", "classify", "act", "respond"]
    assert body["diff"]["slots"] == {"original": {"order_number": "1234"}, "fork": {"order_number": "1236"}}
    again = await client.post(f"/api/v1/forks/{paused['fork_id']}/continue", json={})
    assert again.status_code == 409
    assert "not paused" in again.json()["detail"]

    # An edit re-routes: the intent changed after classify takes classify's edges again.
    rerouted = await fork(client, chat.conversation_id, checkpoint_id=order_turn, break_after=["classify"])
    body = (
        await client.post(
            f"/api/v1/forks/{rerouted['fork_id']}/continue", json={"state": {"intent": "greeting", "slots": {}}}
        )
    ).json()
    assert body["path"] == ["retrieve", "classify", "respond"]
    assert body["replies"] == ["Hello! How can I help you today?"]

    # Two pauses before nodes, continued one at a time.
    stepped = await fork(client, chat.conversation_id, checkpoint_id=order_turn, break_before=["act", "respond"])
    assert (stepped["paused_at"], stepped["pause"]) == ("act", "before")
    step = (await client.post(f"/api/v1/forks/{stepped['fork_id']}/continue", json={})).json()
    assert (step["paused_at"], step["path"]) == ("respond", ["retrieve", "classify", "act"])
    assert step["state"]["tool_results"][0]["result"]["carrier"] == "DHL"
    done = (await client.post(f"/api/v1/forks/{stepped['fork_id']}/continue", json={})).json()
    assert done["paused_at"] is None
    assert done["diff"] == {}, "the same turn, run again unchanged"

    history = await turn_checkpoints(client, chat.conversation_id)
    assert history == checkpoints
    transcript = await chat.transcript()
    assert len(transcript) == 4, "forks stored no messages"


async def test_a_state_edit_before_the_first_turn(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat, first = await first_turn(client, services, demo, "qwertyuiop asdfgh")
    assert chat.conversation_id is not None
    plain = await fork(client, chat.conversation_id, checkpoint_id=first)
    assert plain["path"] == ["retrieve", "classify", "respond"]
    assert plain["diff"] == {}
    assert plain["state"]["failures"] == 1
    # One more failure in a row than the conversation had: the bot hands over to a person.
    failing = await fork(client, chat.conversation_id, checkpoint_id=first, state={"failures": 1})
    assert failing["path"] == ["retrieve", "classify", "escalate"]
    assert failing["escalated"] is True
    assert failing["diff"]["escalation_reason"]["fork"].startswith("no answer for 2 turns in a row")
    assert failing["diff"]["path"] == {"original": plain["path"], "fork": failing["path"]}


class DryRunRecorder:
    """A plugin whose tool records whether it was told it runs dry."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    @hookimpl
    def register_tools(self) -> list[Tool]:
        async def refund(order_number: str, context: ToolContext) -> dict[str, str]:
            """Refund an order."""
            self.seen.append(context.dry_run)
            return {"reply": f"Refunded {order_number}." if not context.dry_run else f"Would refund {order_number}."}

        return [Tool.from_function(refund)]

    @hookimpl
    def register_intents(self) -> list[Intent]:
        return [
            Intent(
                name="refund",
                description="The user wants their money back.",
                examples=("refund my order", "I want a refund for order 1234", "give me my money back"),
                slots=(Slot(name="order_number", pattern=r"\b(\d{4})\b", required=True),),
                tools=("refund",),
            )
        ]


async def test_tools_in_a_fork_are_told_they_run_dry(settings: Settings, database_url: str) -> None:
    recorder = DryRunRecorder()
    async with open_services(settings, url=database_url, host=host_with(("refunds", recorder))) as services:
        demo = await ensure_demo(services)
        await enable(services, demo.bot, "refunds")
        chat = Chat(services, demo.bot)
        assert await chat.texts("I want a refund for order 1234") == ["Refunded 1234."]
        async with api_client(create_app(settings, services=services)) as client:
            client.headers.update(ADMIN)
            assert chat.conversation_id is not None
            turn = (await turn_checkpoints(client, chat.conversation_id))[0]["checkpoint_id"]
            forked = await fork(client, chat.conversation_id, checkpoint_id=turn)
    assert recorder.seen == [False, True]
    assert forked["replies"] == ["Would refund 1234."]


# ----------------------------------------------------------------------------- bad input, other tenants


@pytest.fixture
async def conversation(services: Services, demo: DemoInfo) -> tuple[str, str]:
    """A demo conversation of two turns: its id and the checkpoint id of its last turn."""
    chat = Chat(services, demo.bot)
    await chat.say("hi")
    await chat.say("where is my order 1234?")
    assert chat.conversation_id is not None
    snapshot = await services.graphs.get(demo.bot.graph).aget_state(
        {"configurable": {"thread_id": f"{demo.tenant.id}:{demo.bot.id}:{chat.conversation_id}"}}
    )
    return chat.conversation_id, str(snapshot.config["configurable"]["checkpoint_id"])


BAD_FORKS: dict[str, tuple[Any, int, str]] = {
    "unknown checkpoint": ({"checkpoint_id": "1f000000-0000-6000-8000-000000000000"}, 404, "no checkpoint"),
    "no checkpoint": ({"text": "hi"}, 400, "checkpoint_id"),
    "blank text": ({"text": "   "}, 400, "text"),
    "long text": ({"text": "x" * 4001}, 400, "text"),
    "text not a string": ({"text": 5}, 400, "text"),
    "unknown node": ({"break_before": ["clasify"]}, 400, "unknown node(s) 'clasify'"),
    "node not a string": ({"break_after": [3]}, 400, "break_after"),
    "too many breakpoints": ({"break_after": ["respond"] * 21}, 400, "break_after"),
    "unknown state field": ({"state": {"mood": "happy"}}, 400, "unknown state field(s) mood"),
    "wrong type": ({"state": {"failures": "many"}}, 400, "failures"),
    "reset by the turn": ({"state": {"intent": "greeting"}}, 400, "pause at a breakpoint"),
    "state not an object": ({"state": [1, 2]}, 400, "state"),
    "oversized state": ({"state": {"pending_intent": "x" * 70_000}}, 400, "more than the 65536"),
    "unknown field": ({"checkpoint": "x"}, 400, "checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_FORKS), ids=list(BAD_FORKS))
async def test_malformed_fork_requests_are_refused_clearly(
    client: httpx.AsyncClient, conversation: tuple[str, str], case: str
) -> None:
    conversation_id, checkpoint = conversation
    body, status, says = BAD_FORKS[case]
    if "checkpoint_id" not in body and case not in {"no checkpoint", "unknown field"}:
        body = {"checkpoint_id": checkpoint, **body}
    response = await client.post(f"/api/v1/conversations/{conversation_id}/forks", json=body)
    assert response.status_code == status, response.text
    assert says in response.text


async def test_bad_continue_requests(client: httpx.AsyncClient, conversation: tuple[str, str]) -> None:
    conversation_id, checkpoint = conversation
    paused = await fork(client, conversation_id, checkpoint_id=checkpoint, break_after=["classify"])
    url = f"/api/v1/forks/{paused['fork_id']}/continue"
    for body, says in [
        ({"state": {"intent": 7}}, "intent"),
        ({"state": {"nope": 1}}, "unknown state field(s) nope"),
        ({"state": {"slots": "x" * 70_000}}, "more than"),
        ({"stat": {}}, "stat"),
    ]:
        response = await client.post(url, json=body)
        assert response.status_code == 400, (body, response.text)
        assert says in response.text
    assert (await client.post(url, content=b"{nope", headers={"content-type": "application/json"})).status_code == 400
    assert (await client.get("/api/v1/forks/not-a-uuid")).status_code == 404
    nobody = "/api/v1/forks/00000000-0000-4000-8000-000000000000/continue"
    assert (await client.post(nobody, json={})).status_code == 404
    still = await client.get(f"/api/v1/forks/{paused['fork_id']}")
    assert still.json()["paused_at"] == "classify", "refused edits changed nothing"


async def test_forks_belong_to_their_tenant(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, conversation: tuple[str, str]
) -> None:
    conversation_id, checkpoint = conversation
    created = await client.post("/api/v1/tenants", json={"slug": "globex", "name": "Globex"})
    other = bearer(created.json()["api_key"]["key"])
    own = bearer(demo.api_key)
    body = {"checkpoint_id": checkpoint, "break_after": ["classify"]}

    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with anonymous:
        assert (await anonymous.post(f"/api/v1/conversations/{conversation_id}/forks", json=body)).status_code == 401
    refused = await client.post(f"/api/v1/conversations/{conversation_id}/forks", json=body, headers=other)
    assert refused.status_code == 404
    mine = await client.post(f"/api/v1/conversations/{conversation_id}/forks", json=body, headers=own)
    assert mine.status_code == 201, mine.text
    fork_id = mine.json()["fork_id"]
    for method, path, payload in [
        ("GET", f"/api/v1/forks/{fork_id}", None),
        ("POST", f"/api/v1/forks/{fork_id}/continue", {}),
        ("DELETE", f"/api/v1/forks/{fork_id}", None),
        ("GET", f"/api/v1/forks/{fork_id}/golden-test", None),
        ("GET", f"/api/v1/conversations/{conversation_id}/forks", None),
    ]:
        response = await client.request(method, path, json=payload, headers=other)
        assert response.status_code == 404, (method, path, response.text)
    assert (await client.get(f"/api/v1/forks/{fork_id}", headers=own)).json()["paused_at"] == "classify"
    deleted = await client.delete(f"/api/v1/forks/{fork_id}", headers=own)
    assert deleted.status_code == 204
    assert (await client.get(f"/api/v1/forks/{fork_id}", headers=own)).status_code == 404
    thread = f"fork:{conversation_id}:{fork_id}"
    assert services.graphs.checkpointer is not None
    assert await services.graphs.checkpointer.aget_tuple({"configurable": {"thread_id": thread}}) is None


async def test_a_fork_that_asks_for_a_person_hands_nothing_over(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat, turn = await first_turn(client, services, demo, "hi")
    assert chat.conversation_id is not None
    forked = await fork(client, chat.conversation_id, checkpoint_id=turn, text="I want to talk to a human")
    assert forked["escalated"] is True
    assert forked["path"][-1] == "escalate"
    assert forked["paused_at"] is None, "a pause for a person is not a breakpoint"
    assert forked["replies"], "the handover notice the end user would have got"
    assert forked["diff"]["path"]["original"] == ["retrieve", "classify", "respond"]
    refused = await client.post(f"/api/v1/forks/{forked['fork_id']}/continue", json={})
    assert refused.status_code == 409
    assert "paused for a person" in refused.json()["detail"]
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id)
    assert conversation is not None and conversation.status == "open", "no handover was made"
    assert len(await chat.transcript()) == 2
