"""The bare stack the benchmarks measure botloom against: a LangGraph graph with the turn graph's shape.

Five trivial async nodes (retrieve → classify → act/respond → END, plus an
``escalate`` node) and LangChain message objects accumulating in the state, as a
naive LangGraph app keeps them. No botloom import.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class BareState(TypedDict, total=False):
    """What a naive LangGraph app keeps: LangChain messages accumulating, plus a few fields."""

    messages: Annotated[list[AnyMessage], add_messages]
    passages: list[str]
    intent: str | None
    tool_results: list[dict[str, Any]]


async def bare_retrieve(state: BareState) -> dict[str, Any]:
    return {"passages": []}


async def bare_classify(state: BareState) -> dict[str, Any]:
    text = str(state["messages"][-1].content)
    return {"intent": "order_status" if "order" in text else "chat"}


def bare_route(state: BareState) -> Literal["act", "respond", "escalate"]:
    return "act" if state.get("intent") == "order_status" else "respond"


async def bare_act(state: BareState) -> dict[str, Any]:
    return {"tool_results": [{"tool": "order_status", "ok": True}]}


async def bare_respond(state: BareState) -> dict[str, Any]:
    return {"messages": [AIMessage(content=f"You said: {state['messages'][-1].content}")]}


async def bare_escalate(state: BareState) -> dict[str, Any]:
    return {}


def build_bare_graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """Five trivial async nodes, the turn graph's shape, compiled with ``checkpointer``."""
    graph = StateGraph(BareState)
    graph.add_node("retrieve", bare_retrieve)
    graph.add_node("classify", bare_classify)
    graph.add_node("act", bare_act)
    graph.add_node("respond", bare_respond)
    graph.add_node("escalate", bare_escalate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "classify")
    graph.add_conditional_edges("classify", bare_route, ["act", "respond", "escalate"])
    graph.add_edge("act", "respond")
    graph.add_edge("respond", END)
    graph.add_edge("escalate", END)
    return graph.compile(checkpointer=checkpointer)


def bare_pool(database_url: str) -> AsyncConnectionPool[Any]:
    """The connection pool a bare app gives ``AsyncPostgresSaver`` (the library's documented settings).

    As large as botloom's (``BOTLOOM_DB_POOL_SIZE``, default 10), so concurrent
    turns are not serialised on one connection. Not yet open.
    """
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=10,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
