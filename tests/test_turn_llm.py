"""The turn graph with a language model: the real langchain-openai client against a scripted server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from botloom.core.domain import ModelSettings
from botloom.core.settings import Settings, load_settings
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from tests.helpers import Chat
from tests.servers import HTTPError, ScriptedOpenAI, ToolCall


def classification(
    intent: str, *, confidence: float = 0.9, slots: dict[str, str] | None = None, wants_human: bool = False
) -> dict[str, object]:
    """What the model answers to the structured-output classification call."""
    return {"intent": intent, "confidence": confidence, "slots": slots or {}, "wants_human": wants_human}


@pytest.fixture
def llm_settings(data_dir: Path, openai: ScriptedOpenAI) -> Settings:
    return load_settings(
        environ={},
        data_dir=str(data_dir),
        secret_key="k",
        openai_api_key="test-key",
        openai_base_url=openai.base_url,
        llm_model="gpt-4o-mini",
    )


@pytest.fixture
async def llm_services(llm_settings: Settings, database_url: str) -> AsyncIterator[Services]:
    async with open_services(llm_settings, url=database_url) as services:
        yield services


@pytest.fixture
async def llm_demo(llm_services: Services) -> DemoInfo:
    return await ensure_demo(llm_services)


async def test_intent_with_tool_and_answer(llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI) -> None:
    openai.script(
        classification("order_status", slots={"order_number": "1234"}),
        "Good news: order 1234 is on its way with DHL and arrives Thursday.",
    )
    result = await Chat(llm_services, llm_demo.bot).say("hey, where's my order 1234?")

    assert result.intent == "order_status"
    assert [r.text for r in result.replies] == ["Good news: order 1234 is on its way with DHL and arrives Thursday."]
    classify_request, answer_request = openai.chat_requests
    assert classify_request["response_format"]["type"] == "json_schema"
    schema = classify_request["response_format"]["json_schema"]["schema"]
    assert "order_status" in schema["properties"]["intent"]["enum"]
    tool_names = {t["function"]["name"] for t in answer_request["tools"]}
    assert tool_names == {"order_status", "search_knowledge"}, "only the enabled plugins' tools"
    system = answer_request["messages"][0]["content"]
    assert "DHL" in system, "the act step's tool result reaches the model"
    assert llm_demo.bot.settings.persona in system

    usage = await llm_services.store.usage.totals(llm_demo.tenant.id, llm_demo.bot.id)
    assert usage["calls"] == 2
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


async def test_model_calls_a_tool(llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI) -> None:
    openai.script(
        classification("none", confidence=0.2),
        ToolCall("search_knowledge", {"query": "express shipping price"}),
        "Express shipping costs 9.90 euros.",
    )
    chat = Chat(llm_services, llm_demo.bot)
    result = await chat.say("what do you charge for fast delivery")
    assert [r.text for r in result.replies] == ["Express shipping costs 9.90 euros."]
    third = openai.chat_requests[2]
    tool_message = next(m for m in third["messages"] if m["role"] == "tool")
    assert "9.90" in tool_message["content"], "the tool's result went back to the model"
    state = await chat.state()
    assert state["tool_results"][0]["tool"] == "search_knowledge" and state["tool_results"][0]["ok"]


async def test_each_model_call_is_kept_in_the_turns_state_for_the_debugger(
    llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI
) -> None:
    openai.script(
        classification("none", confidence=0.2),
        ToolCall("search_knowledge", {"query": "express shipping price"}),
        "Express shipping costs 9.90 euros.",
    )
    chat = Chat(llm_services, llm_demo.bot)
    await chat.say("what do you charge for fast delivery")
    calls = (await chat.state())["model_calls"]
    assert [c["node"] for c in calls] == ["classify", "respond", "respond"], "every call, in order"
    assert all(c["model"] == "gpt-4o-mini" and c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 for c in calls)
    assert calls[0]["prompt"][-1] == {"role": "human", "content": "what do you charge for fast delivery"}
    system = calls[1]["prompt"][0]
    assert system["role"] == "system" and llm_demo.bot.settings.persona in system["content"]
    assert any(m["role"] == "tool" and "9.90" in m["content"] for m in calls[2]["prompt"]), "the tool result sent"

    await chat.say("hello")  # the offline greeting or a scripted answer: a new turn starts with no calls of its own
    later = (await chat.state())["model_calls"]
    assert all(c not in later for c in calls), "a turn's calls are its own"


async def test_model_cannot_call_a_disabled_tool(
    llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI
) -> None:
    await llm_services.store.plugin_settings.put(
        llm_demo.tenant.id, llm_demo.bot.id, "demo_shop", enabled=False, config={}, secrets={}
    )
    openai.script(
        classification("none", confidence=0.2),
        ToolCall("order_status", {"order_number": "1234"}),
        "Sorry, I can't look up orders here.",
    )
    chat = Chat(llm_services, llm_demo.bot)
    result = await chat.say("check order 1234")
    assert [r.text for r in result.replies] == ["Sorry, I can't look up orders here."]
    state = await chat.state()
    refused = state["tool_results"][0]
    assert refused["ok"] is False and "not enabled for this bot" in refused["error"]
    assert "DHL" not in json.dumps(openai.chat_requests[2]["messages"])


async def test_model_wants_a_person(llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI) -> None:
    openai.script(classification("none", confidence=0.5, wants_human=True))
    result = await Chat(llm_services, llm_demo.bot).say("this is useless, get me a human")
    assert result.escalated and result.intent == "human_handoff"
    assert len(openai.chat_requests) == 1, "escalation needs no answer from the model"


async def test_model_outage_degrades_to_offline(
    llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI
) -> None:
    openai.script(*[HTTPError(500)] * 6)
    chat = Chat(llm_services, llm_demo.bot)
    result = await chat.say("hello")
    assert result.intent == "greeting", "classification fell back to the offline engine"
    assert [r.text for r in result.replies] == [llm_demo.bot.settings.fallback_reply]
    assert any("respond failed" in e for e in result.errors)
    assert openai.pending == 0


async def test_bot_model_settings_reach_the_model(
    llm_services: Services, llm_demo: DemoInfo, openai: ScriptedOpenAI
) -> None:
    settings = msgspec.structs.replace(
        llm_demo.bot.settings, model=ModelSettings(model="house-model", temperature=0.7, max_tokens=99)
    )
    bot = await llm_services.store.bots.update(llm_demo.tenant.id, llm_demo.bot.id, settings=settings)
    assert bot is not None
    openai.script(classification("greeting"), "Hi there!")
    result = await Chat(llm_services, bot).say("hi")
    assert [r.text for r in result.replies] == ["Hi there!"]
    classify_request, answer_request = openai.chat_requests
    assert classify_request["model"] == answer_request["model"] == "house-model"
    assert classify_request["temperature"] == 0
    assert answer_request["temperature"] == 0.7
    assert answer_request["max_completion_tokens"] == 99
