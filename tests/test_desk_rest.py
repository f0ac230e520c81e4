"""The agent desk's round trip on REST chat, with a language model: escalate, claim, answer, hand back with a note.

The model is the real langchain-openai client against the scripted server: the bot's answer
after the hand-back is checked to have the agent's note in its system prompt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from botloom.core.settings import Settings, load_settings
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from tests.conftest import ADMIN_TOKEN
from tests.desk import bearer, make_agent
from tests.helpers import LOCAL_ENDPOINTS, api_client
from tests.servers import ScriptedOpenAI

NOTE = "Refund for order 1234 approved by Sam; it reaches the card within 5 working days."


def classification(intent: str, *, confidence: float = 0.9, wants_human: bool = False) -> dict[str, object]:
    return {"intent": intent, "confidence": confidence, "slots": {}, "wants_human": wants_human}


@pytest.fixture
def llm_settings(data_dir: Path, openai: ScriptedOpenAI) -> Settings:
    return load_settings(
        environ={},
        data_dir=str(data_dir),
        secret_key="k",
        admin_token=ADMIN_TOKEN,
        openai_api_key="test-key",
        openai_base_url=openai.base_url,
        allowed_endpoints=LOCAL_ENDPOINTS,
    )


@pytest.fixture
async def llm_services(llm_settings: Settings, database_url: str) -> AsyncIterator[Services]:
    async with open_services(llm_settings, url=database_url) as services:
        yield services


@pytest.fixture
async def llm_demo(llm_services: Services) -> DemoInfo:
    return await ensure_demo(llm_services)


@pytest.fixture
async def client(llm_services: Services, llm_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(llm_settings, services=llm_services)) as http:
        yield http


async def chat(client: httpx.AsyncClient, demo: DemoInfo, text: str, conversation: str | None) -> dict[str, Any]:
    body = {"text": text, **({"conversation_id": conversation} if conversation else {})}
    r = await client.post("/api/v1/bots/acme/support/messages", json=body, headers=bearer(demo.api_key))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_rest_round_trip_with_the_note_in_the_bots_context(
    client: httpx.AsyncClient, llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI
) -> None:
    sam = await make_agent(client, "acme", llm_demo.api_key, "sam@acme.test", name="Sam")
    await sam.available()

    openai.script(classification("human_handoff", wants_human=True))
    first = await chat(client, llm_demo, "I was charged twice for order 1234, I want a person", None)
    conversation = first["conversation_id"]
    assert first["escalated"] is True
    assert "connecting you with a person" in first["replies"][-1]["text"], "an agent is available: the usual notice"

    [handover] = await sam.queue()
    assert handover["status"] == "assigned" and handover["agent_id"] == sam.id, "routed to the one available agent"
    summary = handover["summary"]
    assert summary["intent"] == "human_handoff" and summary["availability"] == "available"
    assert any("charged twice" in m["content"] for m in summary["last_messages"])
    assert summary["channel"] == "rest"

    r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/claim")
    assert r.status_code == 200 and r.json()["status"] == "with_agent", r.text

    r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/messages", {"text": "Hi, Sam here. Checking."})
    assert r.status_code == 201, r.text
    assert [m["text"] for m in r.json()["messages"]] == ["Hi, Sam here. Checking."]

    held = await chat(client, llm_demo, "thanks, my email is pat@example.org", conversation)
    assert held["replies"] == [] and held["escalated"] is True, "with a person: the bot stays quiet"

    transcript = await client.get(f"/api/v1/conversations/{conversation}", headers=bearer(llm_demo.api_key))
    texts = [(m["direction"], m["text"]) for m in transcript.json()["messages"]]
    assert ("outbound", "Hi, Sam here. Checking.") in texts, "REST: the agent's message is in the conversation"
    assert texts[-1] == ("inbound", "thanks, my email is pat@example.org")

    detail = (await sam.call("GET", f"/api/v1/handovers/{handover['id']}")).json()
    assert [t["to_status"] for t in detail["transitions"]] == ["waiting", "assigned", "with_agent"]
    assert detail["first_response_at"] is not None
    assert detail["messages"][-1]["text"] == "thanks, my email is pat@example.org"

    r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/release", {"note": NOTE})
    assert r.status_code == 200 and r.json()["status"] == "returned_to_bot", r.text
    assert r.json()["note"] == NOTE

    openai.script(classification("none", confidence=0.9), "Your refund is approved and arrives within 5 working days.")
    after = await chat(client, llm_demo, "so what happens with my money?", conversation)
    assert after["escalated"] is False
    assert after["replies"][0]["text"] == "Your refund is approved and arrives within 5 working days."
    system = openai.chat_requests[-1]["messages"][0]["content"]
    assert NOTE in system, "the bot answers with the agent's note in its prompt"

    r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/messages", {"text": "late"})
    assert r.status_code == 409, "a handover handed back takes no more messages"

    stats = (await sam.call("GET", "/api/v1/handovers/stats")).json()
    assert stats == [
        {
            "bot_id": llm_demo.bot.id,
            "team": "",
            "waiting": 0,
            "with_agents": 0,
            "resolved": 0,
            "returned_to_bot": 1,
            "timed_out_to_bot": 0,
            "first_response_seconds_avg": stats[0]["first_response_seconds_avg"],
            "first_response_seconds_max": stats[0]["first_response_seconds_max"],
        }
    ]
    assert stats[0]["first_response_seconds_avg"] is not None
    metrics = (await client.get("/metrics")).text
    assert f'botloom_handovers_total{{bot="{llm_demo.bot.id}",outcome="returned_to_bot",team=""}}' in metrics
    assert "botloom_handover_first_response_seconds_count" in metrics

    events = await llm_services.store.events.after(llm_demo.tenant.id, 0, limit=100)
    assert [e.kind for e in events] == [
        "handover.waiting",
        "handover.assigned",
        "handover.claimed",
        "handover.message",
        "conversation.user_message",
        "handover.returned_to_bot",
    ]
    assert events[4].data["follow_up_email"] == "pat@example.org"


async def test_suggested_reply_needs_a_model(
    client: httpx.AsyncClient, llm_demo: DemoInfo, openai: ScriptedOpenAI
) -> None:
    sam = await make_agent(client, "acme", llm_demo.api_key, "sam@acme.test")
    openai.script(classification("human_handoff", wants_human=True))
    await chat(client, llm_demo, "a person please", None)
    [handover] = await sam.queue()
    openai.script("Sorry about the double charge, I'm refunding it now.")
    r = await sam.call("POST", f"/api/v1/handovers/{handover['id']}/suggestion")
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "Sorry about the double charge, I'm refunding it now."}
    assert "a person please" in str(openai.chat_requests[-1]["messages"])
