"""Conversations checkpointed under an older state schema continue after an upgrade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from botloom import GraphDefinition, StateMigration, hookimpl
from botloom.core.settings import Settings
from botloom.graphs.state import STATE_VERSION
from botloom.graphs.turn import build_turn_graph
from botloom.runtime.runner import TurnRunner
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from tests.helpers import Chat, host_with


class StateV1(TypedDict, total=False):
    """A test copy of the turn state as version 1 had it: the user's text as a bare string."""

    schema_version: int
    messages: list[dict[str, str]]
    user_text: str
    pending_intent: str | None
    failures: int
    replies: list[str]


async def write_old_state(services: Services, demo: DemoInfo, chat: Chat, values: dict[str, Any], version: int) -> None:
    """Checkpoint ``values`` on the conversation's thread with the old schema, as an old botloom did."""

    async def respond(state: StateV1) -> dict[str, Any]:
        return values

    graph: StateGraph[Any, Any, Any, Any] = StateGraph(StateV1)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    graph.add_edge("respond", END)
    old = graph.compile(checkpointer=services.graphs.checkpointer)
    assert chat.conversation_id is not None
    await old.ainvoke({}, TurnRunner.thread_config(demo.bot, chat.conversation_id))
    await services.store.conversations.set_state_version(demo.tenant.id, chat.conversation_id, version)


async def new_chat(services: Services, demo: DemoInfo) -> Chat:
    chat = Chat(services, demo.bot)
    conversation = await services.store.conversations.create(demo.tenant.id, demo.bot.id, "test", "user-1")
    chat.conversation_id = conversation.id
    return chat


async def test_version_1_state_continues(services: Services, demo: DemoInfo) -> None:
    chat = await new_chat(services, demo)
    await write_old_state(
        services,
        demo,
        chat,
        {
            "schema_version": 1,
            "messages": [
                {"role": "user", "content": "where is my order?"},
                {"role": "assistant", "content": "Sure, I can check that. What is your order number?"},
            ],
            "user_text": "where is my order?",
            "pending_intent": "order_status",
            "failures": 0,
            "replies": ["Sure, I can check that. What is your order number?"],
        },
        version=1,
    )

    result = await chat.say("1234")
    assert "1234 has shipped" in result.replies[0].text, "the pending slot question of the old state was kept"
    assert not result.errors
    state = await chat.state()
    assert state["schema_version"] == STATE_VERSION
    assert state["user"] == {"text": "1234"} and "user_text" not in state
    assert [m["content"] for m in state["messages"]][:2] == [
        "where is my order?",
        "Sure, I can check that. What is your order number?",
    ]
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.state_version == STATE_VERSION


async def test_unmigratable_state_starts_afresh(services: Services, demo: DemoInfo) -> None:
    chat = await new_chat(services, demo)
    await write_old_state(services, demo, chat, {"schema_version": 99, "pending_intent": "order_status"}, version=1)
    result = await chat.say("hello")
    assert result.intent == "greeting", "the conversation goes on"
    assert any("state migration failed" in e for e in result.errors)
    again = await chat.say("thanks")
    assert again.intent == "thanks" and not again.errors, "no failure loop"


class TurnV3:
    """Replaces the ``turn`` graph with the same graph at state version 3 (a version 2 state needs no change)."""

    @hookimpl
    def register_graphs(self) -> list[GraphDefinition]:
        return [GraphDefinition(name="turn", description="turn, version 3", build=build_turn_graph, state_version=3)]

    @hookimpl
    def register_state_migrations(self) -> list[StateMigration]:
        return [StateMigration(graph="turn", from_version=2, migrate=dict)]


@pytest.fixture
async def v3_services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    async with open_services(settings, url=database_url, host=host_with(("turn_v3", TurnV3()))) as opened:
        yield opened


async def test_the_graph_definition_is_the_one_source_of_the_version(v3_services: Services) -> None:
    services = v3_services
    demo = await ensure_demo(services)
    assert services.runner.state_version(demo.bot) == 3 != STATE_VERSION
    chat = await new_chat(services, demo)
    assert (await chat.say("hello")).intent == "greeting"
    state = await chat.state()
    assert state["schema_version"] == 3, "each turn stamps its graph's version, not the turn graph's constant"
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.state_version == 3


async def test_a_version_2_state_is_migrated_to_the_graph_version(
    services: Services, demo: DemoInfo, v3_services: Services
) -> None:
    chat = await new_chat(services, demo)
    assert (await chat.say("where is my order?")).intent == "order_status"
    assert (await chat.state())["schema_version"] == STATE_VERSION == 2
    upgraded = Chat(v3_services, demo.bot)
    upgraded.conversation_id = chat.conversation_id
    result = await upgraded.say("1234")
    assert "1234 has shipped" in result.replies[0].text and not result.errors
    assert (await upgraded.state())["schema_version"] == 3
    conversation = await v3_services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.state_version == 3
