"""The turn graph, offline, against every checkpointer: the demo bot's scripted conversations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from botloom import Intent, OutboundMessage, Slot, Tool, hookimpl
from botloom.core.settings import Settings, load_settings
from botloom.graphs.engines import KNOWLEDGE_INTENT
from botloom.graphs.state import HISTORY_WINDOW
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from tests.helpers import Chat, disable, enable, host_with

CHECKPOINTERS = ["memory", "postgres", "redis"]


@pytest.fixture(params=CHECKPOINTERS)
def cp_settings(request: pytest.FixtureRequest, data_dir: Path) -> Settings:
    """Test settings for each checkpointer (Redis gets the session's Redis)."""
    kind = request.param
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    return load_settings(environ={}, data_dir=str(data_dir), secret_key="k", checkpointer=kind, redis_url=redis_url)


@pytest.fixture
async def cp_services(cp_settings: Settings, database_url: str) -> AsyncIterator[Services]:
    async with open_services(cp_settings, url=database_url) as services:
        yield services


@pytest.fixture
async def cp_demo(cp_services: Services) -> DemoInfo:
    return await ensure_demo(cp_services)


async def test_demo_conversation(cp_services: Services, cp_demo: DemoInfo) -> None:
    chat = Chat(cp_services, cp_demo.bot)

    greeting = await chat.say("hello")
    assert greeting.intent == "greeting"
    assert [r.text for r in greeting.replies] == ["Hello! How can I help you today?"]

    asked = await chat.say("where is my order?")
    assert asked.intent == "order_status"
    assert "order number" in asked.replies[0].text

    answered = await chat.say("it's 1234")
    assert answered.intent == "order_status"
    assert "1234 has shipped with DHL" in answered.replies[0].text

    knowledge = await chat.say("how much does express shipping cost?")
    assert knowledge.intent == KNOWLEDGE_INTENT
    assert "9.90" in knowledge.replies[0].text

    state = await chat.state()
    assert state["passages"], "the retrieve step keeps what it found"
    assert state["passages"][0]["document"] == "shipping.md"
    assert [step["node"] for step in state["trace"]] == ["retrieve", "classify", "respond"]


async def test_fallback_then_escalation_then_agent(cp_services: Services, cp_demo: DemoInfo) -> None:
    chat = Chat(cp_services, cp_demo.bot)
    fallback = cp_demo.bot.settings.fallback_reply

    unknown = await chat.say("qwxz vbnm plokij")
    assert [r.text for r in unknown.replies] == [fallback]
    assert unknown.intent is None and not unknown.escalated

    person = await chat.say("I want to talk to a person")
    assert person.escalated
    assert "connecting you with a person" in person.replies[-1].text
    conversation = await cp_services.store.conversations.get(cp_demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "escalated"

    waiting = await chat.say("hello? are you there?")
    assert waiting.status == "for_agent" and waiting.replies == []

    agent = await cp_services.runner.agent_action(cp_demo.bot, chat.conversation_id or "", text="Hi, Sam here.")
    assert [r.text for r in agent.replies] == ["Hi, Sam here."] and agent.escalated

    back = await cp_services.runner.agent_action(
        cp_demo.bot, chat.conversation_id or "", text="The bot takes over again.", handback=True
    )
    assert not back.escalated
    again = await chat.say("where is my order 1236")
    assert "1236 was delivered" in again.replies[0].text


async def test_repeated_failures_escalate_by_policy(cp_services: Services, cp_demo: DemoInfo) -> None:
    chat = Chat(cp_services, cp_demo.bot)
    first = await chat.say("qwxz vbnm plokij")
    assert not first.escalated
    second = await chat.say("zzkq ffpt wwyx")
    assert second.escalated, "two unanswered turns in a row hand the conversation to a person"
    state = await chat.state()
    assert "no answer for 2 turns" in (state.get("escalation_reason") or "")


async def test_state_stays_bounded(services: Services, demo: DemoInfo) -> None:
    chat = Chat(services, demo.bot)
    for i in range(HISTORY_WINDOW + 6):
        await chat.say("thanks" if i % 2 else "hello")
    state = await chat.state()
    assert len(state["messages"]) == HISTORY_WINDOW
    assert len(await chat.transcript()) == 2 * (HISTORY_WINDOW + 6), "the transcript keeps everything"


async def test_disabled_plugin_is_invisible(services: Services, demo: DemoInfo) -> None:
    await disable(services, demo.bot, "demo_shop")
    chat = Chat(services, demo.bot)
    result = await chat.say("where is my order 1234")
    assert result.intent != "order_status"
    assert all("DHL" not in r.text for r in result.replies)


async def test_duplicate_message_runs_once(services: Services, demo: DemoInfo) -> None:
    chat = Chat(services, demo.bot)
    first = await chat.say("hello", key="m-1")
    second = await chat.say("hello", key="m-1")
    assert second.duplicate and not first.duplicate
    assert [r.id for r in second.replies] == [r.id for r in first.replies]
    assert await chat.transcript() == [("inbound", "hello"), ("outbound", "Hello! How can I help you today?")]


# -- plugins that fail -------------------------------------------------------------


async def _boom(order_number: str) -> str:
    """Raise."""
    raise RuntimeError("the shop API is down")


async def _hang(order_number: str) -> str:
    """Never answer."""
    await asyncio.sleep(3600)
    return "never"


def _failing_plugin(tool: Tool, intent_name: str) -> object:
    class Plugin:
        @hookimpl
        def register_tools(self) -> list[Tool]:
            return [tool]

        @hookimpl
        def register_intents(self) -> list[Intent]:
            return [
                Intent(
                    name=intent_name,
                    description="check a parcel",
                    examples=("check parcel", "parcel status please"),
                    slots=(Slot(name="order_number", pattern=r"(\d{4,})", required=True),),
                    tools=(tool.name,),
                )
            ]

    return Plugin()


@pytest.mark.parametrize(
    ("tool", "error"),
    [
        (Tool.from_function(_boom, name="parcel_boom"), "raised RuntimeError: the shop API is down"),
        (Tool.from_function(_hang, name="parcel_hang", timeout=0.2), "timed out after 0.2s"),
    ],
    ids=["raises", "hangs"],
)
async def test_failing_tool_gets_the_fallback(settings: Settings, database_url: str, tool: Tool, error: str) -> None:
    host = host_with(("parcels", _failing_plugin(tool, "parcel")))
    async with open_services(settings, url=database_url, host=host) as services:
        demo = await ensure_demo(services)
        await enable(services, demo.bot, "parcels")
        chat = Chat(services, demo.bot)
        result = await chat.say("parcel status please 5555")
        assert [r.text for r in result.replies] == [demo.bot.settings.fallback_reply]
        assert any(error in e for e in result.errors)
        state = await chat.state()
        assert state["tool_results"][0]["ok"] is False
        assert error in state["tool_results"][0]["error"], "the error is visible in the checkpoint"
        assert (await chat.say("hello")).intent == "greeting", "the conversation goes on"


async def test_moderation_masks_and_refuses(settings: Settings, database_url: str) -> None:
    class Moderator:
        @hookimpl
        def moderate_message(self, message: object) -> object:
            text = getattr(message, "text", "")
            if "forbidden" in text:
                from botloom import Refusal

                return Refusal(reason="blocked word", reply="Let's keep it friendly.")
            if isinstance(message, OutboundMessage) and "DHL" in text:
                return msgspec.structs.replace(message, text=text.replace("DHL", "####"))
            return None

    host = host_with(("moderator", Moderator()))
    async with open_services(settings, url=database_url, host=host) as services:
        demo = await ensure_demo(services)
        chat = Chat(services, demo.bot)
        refused = await chat.say("this is forbidden")
        assert refused.status == "refused"
        assert [r.text for r in refused.replies] == ["Let's keep it friendly."]
        passed = await chat.say("where is my order 1236")
        assert "1236 was delivered" in passed.replies[0].text
        masked = await chat.say("where is my order 1234")
        assert "shipped with ####" in masked.replies[0].text, "replies are moderated on the way out too"


def test_graph_is_compiled_once(services: Services) -> None:
    assert services.graphs.get("turn") is services.graphs.get("turn")


async def test_unknown_graph_gets_fallback(services: Services, demo: DemoInfo) -> None:
    bot = msgspec.structs.replace(demo.bot, graph="nope")
    result = await Chat(services, bot).say("hello")
    assert result.status == "failed"
    assert any("no graph named 'nope'" in e for e in result.errors)
