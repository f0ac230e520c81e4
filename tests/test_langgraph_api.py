"""The LangGraph Server API under ``/langgraph``, through the real ``langgraph-sdk`` client against ``botloom serve``.

One server for the module (no demo): the operator creates two tenants, each with a
bot that enabled the ``langgraph`` channel (and the intents the tests talk to). Every
call of the brief is made with the SDK: assistants (search, get, graph with ``xray``,
schemas), threads (create, get, search, state, state at a checkpoint, update state,
history with ``before`` and ``limit``), runs (create, wait, stream in each mode, join,
cancel, list) and ``/info``. Tenant B never sees tenant A's assistants or threads;
hostile input (malformed, unknown ids, oversized, no key) is refused with a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError, PermissionDeniedError, UnprocessableEntityError

from tests.conftest import scratch_database
from tests.helpers import eventually
from tests.serve_process import Server

pytestmark = pytest.mark.slow
ADMIN = "admin"
LOCK_WAIT = 30.0
"""Seconds a run has to show it waits for the conversation's lock (its status, or another process listing it)."""


@dataclass(frozen=True)
class Tenant:
    """A tenant of the test server, with its API key and its bot."""

    slug: str
    key: str
    bot_id: str


@dataclass(frozen=True)
class Deployment:
    """The running server and its two tenants."""

    server: Server
    a: Tenant
    b: Tenant
    c: Tenant
    """A tenant whose bot did not enable the langgraph channel."""

    @property
    def base(self) -> str:
        """Where the LangGraph API is."""
        return self.server.url + "/langgraph"


def make_tenant(http: httpx.Client, slug: str, *plugins: str) -> Tenant:
    """A tenant with a bot that enabled small talk, human handoff and ``plugins``."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = http.post("/api/v1/tenants", json={"slug": slug, "name": slug.title()}, headers=admin)
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]["key"]
    auth = {"Authorization": f"Bearer {key}"}
    bot = http.post(f"/api/v1/tenants/{slug}/bots", json={"slug": "helper", "name": "Helper"}, headers=auth)
    assert bot.status_code == 201, bot.text
    bot_id = bot.json()["id"]
    for plugin in ("smalltalk", "handoff", *plugins):
        enabled = http.put(
            f"/api/v1/bots/{bot_id}/plugins/{plugin}", json={"enabled": True, "config": {}}, headers=auth
        )
        assert enabled.status_code == 200, enabled.text
    return Tenant(slug=slug, key=key, bot_id=bot_id)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, template_database_url: str
) -> Iterator[Deployment]:
    """One ``botloom serve`` for the module: tenants ``alpha``, ``beta`` (langgraph enabled) and ``gamma``."""
    data_dir = tmp_path_factory.mktemp("langgraph-api")
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with scratch_database(pg_server_url, "t", template) as url:
        running = Server(url, data_dir, demo=False)
        try:
            running.start()
            with httpx.Client(base_url=running.url, timeout=30) as http:
                yield Deployment(
                    server=running,
                    a=make_tenant(http, "alpha", "langgraph", "rest"),
                    b=make_tenant(http, "beta", "langgraph"),
                    c=make_tenant(http, "gamma"),
                )
        finally:
            running.stop()


@pytest.fixture
async def client_a(deployment: Deployment) -> AsyncIterator[LangGraphClient]:
    """The SDK client of tenant alpha (``Authorization: Bearer``, as DESIGN.md's contract says)."""
    client = get_client(url=deployment.base, headers={"Authorization": f"Bearer {deployment.a.key}"}, api_key=None)
    yield client
    await client.aclose()


@pytest.fixture
async def client_b(deployment: Deployment) -> AsyncIterator[LangGraphClient]:
    """The SDK client of tenant beta, with the ``X-Api-Key`` header the SDK sends for ``api_key``."""
    client = get_client(url=deployment.base, api_key=deployment.b.key)
    yield client
    await client.aclose()


async def status_of(call: Awaitable[Any]) -> int:
    """The HTTP status an SDK call failed with (the SDK raises typed errors, or httpx's for wait and join)."""
    try:
        await call
    except httpx.HTTPStatusError as exc:
        return exc.response.status_code
    raise AssertionError("the call succeeded")


def said(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The messages of a state's values as (type, content) pairs."""
    return [(m["type"], m["content"]) for m in values["messages"]]


# -- info and assistants ------------------------------------------------------------------


async def test_info_answers_without_a_key(deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=deployment.base) as http:
        info = await http.get("/info")
    assert info.status_code == 200
    assert info.json()["flags"]["assistants"] is True


async def test_assistants_are_the_tenants_bots(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    found = await client_a.assistants.search()
    assert [a["assistant_id"] for a in found] == [bot]
    assert found[0]["graph_id"] == "turn" and found[0]["name"] == "Helper"
    assert await client_a.assistants.count() == 1
    assert await client_a.assistants.search(graph_id="another") == []
    system = await client_a.assistants.search(metadata={"created_by": "system"})  # how Studio finds a graph's
    assert [a["assistant_id"] for a in system] == [bot]
    assert (await client_a.assistants.get(bot))["assistant_id"] == bot
    assert (await client_a.assistants.get("helper"))["assistant_id"] == bot, "the tenant's bot slug names it too"
    versions = await client_a.assistants.get_versions(bot)
    assert [v["assistant_id"] for v in versions] == [bot]


async def test_assistant_graph_and_schemas(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    for xray in (False, True):
        graph = await client_a.assistants.get_graph(bot, xray=xray)
        nodes = {n["id"] for n in graph["nodes"]}
        assert {"__start__", "retrieve", "classify", "act", "respond", "escalate", "__end__"} <= nodes
        conditional = {(e["source"], e["target"]) for e in graph["edges"] if e.get("conditional")}
        assert ("classify", "escalate") in conditional and ("classify", "respond") in conditional
    schemas = await client_a.assistants.get_schemas(bot)
    assert schemas["graph_id"] == "turn"
    assert "messages" in schemas["input_schema"]["properties"]
    state = schemas["state_schema"]
    assert {"messages", "intent", "trace", "replies"} <= set(state["$defs"]["TurnState"]["properties"])
    assert await client_a.assistants.get_subgraphs(bot) == {}


async def test_a_thread_through_wait_state_and_history(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread = await client_a.threads.create()  # the tenant has one bot: the thread is its conversation
    thread_id = thread["thread_id"]
    assert thread["status"] == "idle" and thread["metadata"]["assistant_id"] == bot
    assert thread["metadata"]["channel"] == "langgraph"
    assert (await client_a.threads.get(thread_id))["values"] == {}

    first = await client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "hello"}]})
    assert said(first) == [("human", "hello"), ("ai", "Hello! How can I help you today?")]
    assert first["intent"] == "greeting" and first["replies"] == ["Hello! How can I help you today?"]
    assert all(m["id"] for m in first["messages"])
    second = await client_a.runs.wait(thread_id, bot, input={"messages": [{"type": "human", "content": "thanks"}]})
    assert second["messages"][:2] == first["messages"], "a thread keeps its messages, with the same ids"
    assert said(second)[2] == ("human", "thanks") and second["intent"] == "thanks"

    state = await client_a.threads.get_state(thread_id)
    assert state["values"] == second and state["next"] == [] and state["interrupts"] == []
    assert state["checkpoint"]["thread_id"] == thread_id and state["checkpoint"]["checkpoint_id"]
    assert [step["node"] for step in state["values"]["trace"]] == ["retrieve", "classify", "respond"]

    history = await client_a.threads.get_history(thread_id, limit=10)
    assert [h["values"]["intent"] for h in history] == ["thanks", "greeting"], "newest first, one state per turn"
    assert history[0]["checkpoint"] == state["checkpoint"]
    assert history[0]["parent_checkpoint"]["checkpoint_id"] == history[1]["checkpoint"]["checkpoint_id"]
    newest = await client_a.threads.get_history(thread_id, limit=1)
    assert [h["checkpoint"] for h in newest] == [state["checkpoint"]]
    older = await client_a.threads.get_history(thread_id, limit=5, before=newest[0]["checkpoint"])
    assert [h["values"]["intent"] for h in older] == ["greeting"], "before pages back"
    older_by_id = await client_a.threads.get_history(thread_id, before=newest[0]["checkpoint"]["checkpoint_id"])
    assert older_by_id == older

    at = history[1]["checkpoint"]["checkpoint_id"]
    by_id = await client_a.threads.get_state(thread_id, checkpoint_id=at)
    by_checkpoint = await client_a.threads.get_state(thread_id, checkpoint=history[1]["checkpoint"])
    assert by_id == by_checkpoint == history[1]
    assert said(by_id["values"]) == said(first)

    runs = await client_a.runs.list(thread_id)
    assert [r["status"] for r in runs] == ["success", "success"]
    assert len({r["run_id"] for r in runs}) == 2
    assert (await client_a.runs.get(thread_id, runs[0]["run_id"]))["status"] == "success"

    listed = await client_a.threads.search(metadata={"assistant_id": bot}, limit=100)
    mine = next(t for t in listed if t["thread_id"] == thread_id)
    assert mine["values"]["messages"] == second["messages"]
    assert await client_a.threads.count(metadata={"assistant_id": bot}) == len(listed)


async def test_a_background_run_joined_and_listed(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create(metadata={"assistant_id": bot}))["thread_id"]
    created: list[Any] = []
    run = await client_a.runs.create(
        thread_id,
        bot,
        input={"messages": [{"role": "user", "content": "hi"}]},
        metadata={"purpose": "test"},
        on_run_created=created.append,
    )
    assert run["status"] in ("pending", "running", "success") and run["metadata"] == {"purpose": "test"}
    assert created == [{"run_id": run["run_id"], "thread_id": thread_id}], "Content-Location names the run"
    joined = await client_a.runs.join(thread_id, run["run_id"])
    assert said(joined)[-1] == ("ai", "Hello! How can I help you today?")
    assert (await client_a.runs.get(thread_id, run["run_id"]))["status"] == "success"
    parts = [p async for p in client_a.runs.join_stream(thread_id, run["run_id"], stream_mode="values")]
    assert [p.event for p in parts] == ["metadata"] + ["values"] * 4, "as it was streamed: after each step"
    assert parts[-1].data == joined
    listed = await client_a.runs.list(thread_id, status="success")
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    cancelled = await client_a.runs.cancel(thread_id, run["run_id"])
    assert cancelled["status"] == "success", "a finished run is left as it is"
    with pytest.raises(UnprocessableEntityError):
        await client_a.runs.cancel(thread_id, run["run_id"], action="rollback")


async def test_a_stateless_run_starts_its_own_thread(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    created: list[Any] = []
    values = await client_a.runs.wait(
        None, bot, input={"messages": [{"role": "user", "content": "hello"}]}, on_run_created=created.append
    )
    assert said(values)[-1][0] == "ai"
    (made,) = created
    state = await client_a.threads.get_state(made["thread_id"])
    assert state["values"] == values


def events_of(parts: list[Any]) -> list[str]:
    """The event names of a stream."""
    return [p.event for p in parts]


async def stream(client: LangGraphClient, bot: str, text: str, modes: list[str]) -> tuple[list[Any], str]:
    """A turn streamed in ``modes`` on a new thread: its parts and the thread."""
    thread_id = (await client.threads.create(metadata={"assistant_id": bot}))["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, bot, input={"messages": [{"role": "user", "content": text}]}, stream_mode=modes
        )
    ]
    assert parts[0].event == "metadata" and parts[0].data["run_id"]
    return parts, thread_id


async def test_stream_values(client_a: LangGraphClient, deployment: Deployment) -> None:
    parts, thread_id = await stream(client_a, deployment.a.bot_id, "hello", ["values"])
    assert events_of(parts) == ["metadata"] + ["values"] * 4, "the input, after retrieve, after classify, the end"
    assert said(parts[1].data) == [("human", "hello")], "the state as the turn starts: the user's message"
    assert parts[3].data["intent"] == "greeting" and said(parts[3].data) == [("human", "hello")], "after classify"
    state = await client_a.threads.get_state(thread_id)
    assert parts[-1].data == state["values"]
    assert parts[1].data["messages"][0]["id"] == state["values"]["messages"][0]["id"]


async def test_stream_updates(client_a: LangGraphClient, deployment: Deployment) -> None:
    parts, _ = await stream(client_a, deployment.a.bot_id, "hello", ["updates"])
    updates = [p.data for p in parts if p.event == "updates"]
    assert [next(iter(u)) for u in updates] == ["retrieve", "classify", "respond"]
    assert updates[0]["retrieve"]["trace"][0]["node"] == "retrieve"
    assert updates[1]["classify"]["intent"] == "greeting", "each node's update holds what it wrote"
    assert "intent" not in updates[-1]["respond"] and "replies" not in updates[1]["classify"]
    assert updates[-1]["respond"]["replies"] == ["Hello! How can I help you today?"]
    assert said(updates[-1]["respond"]) == [("ai", "Hello! How can I help you today?")], "its new messages"


async def test_stream_messages_tuple(client_a: LangGraphClient, deployment: Deployment) -> None:
    parts, thread_id = await stream(client_a, deployment.a.bot_id, "hello", ["messages-tuple"])
    (message,) = [p.data for p in parts if p.event == "messages"]
    chunk, metadata = message
    assert chunk["type"] == "AIMessageChunk" and chunk["content"] == "Hello! How can I help you today?"
    assert metadata["langgraph_node"] == "respond" and metadata["thread_id"] == thread_id
    state = await client_a.threads.get_state(thread_id)
    assert chunk["id"] == state["values"]["messages"][-1]["id"]


async def test_stream_messages(client_a: LangGraphClient, deployment: Deployment) -> None:
    parts, _ = await stream(client_a, deployment.a.bot_id, "thanks", ["messages"])
    assert events_of(parts) == ["metadata", "messages/metadata", "messages/complete"]
    (complete,) = parts[2].data
    assert complete["type"] == "ai" and complete["content"].startswith("You're welcome")
    assert list(parts[1].data) == [complete["id"]]


async def test_stream_debug_carries_checkpoints(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    parts, thread_id = await stream(client_a, bot, "hello", ["debug"])
    debug = [p.data for p in parts if p.event == "debug"]
    assert [d["type"] for d in debug] == ["task", "task_result"] * 3 + ["checkpoint"], "a new thread: no state before"
    assert [d["payload"]["name"] for d in debug if d["type"] == "task"] == ["retrieve", "classify", "respond"]
    checkpoint = debug[-1]["payload"]
    state = await client_a.threads.get_state(thread_id)
    assert checkpoint["checkpoint"] == state["checkpoint"]
    assert checkpoint["config"]["configurable"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert checkpoint["values"] == state["values"] and checkpoint["parent_checkpoint"] is None

    again = [
        p.data
        async for p in client_a.runs.stream(
            thread_id, bot, input={"messages": [{"role": "user", "content": "hi"}]}, stream_mode="debug"
        )
        if p.event == "debug"
    ]
    assert again[0]["type"] == "checkpoint", "a thread with a state: the checkpoint the turn starts from"
    assert again[0]["payload"]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert again[-1]["payload"]["parent_checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]


async def test_stream_events_checkpoints_and_tasks(client_a: LangGraphClient, deployment: Deployment) -> None:
    parts, _ = await stream(client_a, deployment.a.bot_id, "hello", ["events", "checkpoints", "tasks", "custom"])
    events = [p.data for p in parts if p.event == "events"]
    assert (events[0]["event"], events[0]["name"]) == ("on_chain_start", "LangGraph")
    assert (events[-1]["event"], events[-1]["name"]) == ("on_chain_end", "LangGraph")
    assert [e["name"] for e in events if e["event"] == "on_chain_end"][:3] == ["retrieve", "classify", "respond"]
    assert len([p for p in parts if p.event == "checkpoints"]) == 1
    tasks = [p.data for p in parts if p.event == "tasks"]
    assert [t["name"] for t in tasks] == ["retrieve", "retrieve", "classify", "classify", "respond", "respond"]
    assert not [p for p in parts if p.event == "custom"], "botloom's nodes write no custom events"


async def test_an_escalated_turn_is_an_interrupt(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create(metadata={"assistant_id": bot}))["thread_id"]
    values = await client_a.runs.wait(
        thread_id, bot, input={"messages": [{"role": "user", "content": "I want to talk to a person"}]}
    )
    (interrupt,) = values["__interrupt__"]
    assert interrupt["value"]["conversation_id"] == thread_id and interrupt["id"]
    thread = await client_a.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    assert list(thread["interrupts"]) == [interrupt["id"]]
    state = await client_a.threads.get_state(thread_id)
    assert state["next"] == ["escalate"] and state["interrupts"] == [interrupt]
    (run,) = await client_a.runs.list(thread_id)
    assert run["status"] == "interrupted"
    found = await client_a.threads.search(status="interrupted", metadata={"assistant_id": bot}, limit=100)
    assert thread_id in {t["thread_id"] for t in found}

    parts = [
        p
        async for p in client_a.runs.stream(
            thread_id, bot, input={"messages": [{"role": "user", "content": "hello?"}]}, stream_mode="updates"
        )
    ]
    assert events_of(parts) == ["metadata"], "a person has the conversation: no node runs"
    waiting = (await client_a.runs.list(thread_id))[0]
    assert waiting["status"] == "interrupted"

    streamed, _ = await stream(client_a, bot, "talk to a person", ["updates"])
    updates = [p.data for p in streamed if p.event == "updates"]
    assert [next(iter(u)) for u in updates] == ["retrieve", "classify", "__interrupt__"], "escalate paused"
    assert updates[-1]["__interrupt__"][0]["value"]["reason"]


async def test_update_state_and_copy_a_checkpoint(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create(metadata={"assistant_id": bot}))["thread_id"]
    await client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "hello"}]})
    first = await client_a.threads.get_state(thread_id)
    await client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "thanks"}]})

    changed = await client_a.threads.update_state(thread_id, {"slots": {"size": "M"}}, as_node="respond")
    state = await client_a.threads.get_state(thread_id)
    assert state["checkpoint"]["checkpoint_id"] == changed["checkpoint"]["checkpoint_id"]
    assert state["values"]["slots"] == {"size": "M"} and state["metadata"]["source"] == "update"

    await client_a.threads.update_state(
        thread_id, {"messages": [{"type": "ai", "content": "(a note from the operator)"}]}, as_node="respond"
    )
    appended = await client_a.threads.get_state(thread_id)
    assert said(appended["values"])[-1] == ("ai", "(a note from the operator)"), "messages are appended"

    copied = await client_a.threads.update_state(thread_id, None, as_node="__copy__", checkpoint=first["checkpoint"])
    fork = await client_a.threads.get_state(thread_id)
    assert fork["checkpoint"]["checkpoint_id"] == copied["checkpoint"]["checkpoint_id"]
    assert fork["checkpoint"]["checkpoint_id"] != first["checkpoint"]["checkpoint_id"]
    assert said(fork["values"]) == said(first["values"]), "re-run from here: the older state is the newest again"
    old = first["checkpoint"]["checkpoint_id"]
    run = client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "hi"}]}, checkpoint_id=old)
    assert await status_of(run) == 422, "a run starts from the newest checkpoint only"
    after = await client_a.runs.wait(
        thread_id,
        bot,
        input={"messages": [{"role": "user", "content": "thanks"}]},
        checkpoint=copied["checkpoint"],  # what Studio sends after "fork": the checkpoint it made
    )
    assert said(after)[:-1] == [*said(first["values"]), ("human", "thanks")]


async def test_update_state_refuses_what_does_not_fit(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create(metadata={"assistant_id": bot}))["thread_id"]
    await client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "hello"}]})
    before = await client_a.threads.get_state(thread_id)
    for values, as_node in (
        ({"slots": {"size": "M"}}, "no_such_node"),
        ({"no_such_field": 1}, "respond"),
        ({"confidence": "very"}, "respond"),
        ({"slots": {"size": "M"}}, "classify"),  # its conditional edge needs the turn's context
        ({"messages": [{"type": "ai", "content": ["not", "text"]}]}, "respond"),
    ):
        with pytest.raises(UnprocessableEntityError):
            await client_a.threads.update_state(thread_id, values, as_node=as_node)
    with pytest.raises(NotFoundError):
        await client_a.threads.update_state(thread_id, None, as_node="__copy__", checkpoint_id=str(uuid.uuid4()))
    assert await client_a.threads.get_state(thread_id) == before, "nothing was written"


async def test_another_channels_conversation_is_read_only(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    async with httpx.AsyncClient(base_url=deployment.server.url) as http:
        chat = await http.post(
            f"/api/v1/bots/{bot}/messages",
            json={"text": "hello"},
            headers={"Authorization": f"Bearer {deployment.a.key}"},
        )
    assert chat.status_code == 200, chat.text
    thread_id = chat.json()["conversation_id"]
    thread = await client_a.threads.get(thread_id)
    assert thread["metadata"]["channel"] == "rest"
    assert said(thread["values"])[0] == ("human", "hello")
    assert (await client_a.threads.get_history(thread_id))[0]["values"] == thread["values"]
    run = client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "hi"}]})
    assert await status_of(run) == 409
    assert await status_of(client_a.threads.update_state(thread_id, {"slots": {}}, as_node="respond")) == 409
    assert (await client_a.threads.get_state(thread_id))["values"] == thread["values"]


async def test_a_tenant_never_sees_another_tenants_assistants_or_threads(
    client_a: LangGraphClient, client_b: LangGraphClient, deployment: Deployment
) -> None:
    a_bot, b_bot = deployment.a.bot_id, deployment.b.bot_id
    a_thread = (await client_a.threads.create(metadata={"assistant_id": a_bot}))["thread_id"]
    a_values = await client_a.runs.wait(a_thread, a_bot, input={"messages": [{"role": "user", "content": "hello"}]})
    (a_run,) = await client_a.runs.list(a_thread)
    a_checkpoint = (await client_a.threads.get_state(a_thread))["checkpoint"]["checkpoint_id"]
    b_thread = (await client_b.threads.create())["thread_id"]

    assert [a["assistant_id"] for a in await client_b.assistants.search(limit=100)] == [b_bot]
    assert await client_b.assistants.count() == 1
    b_threads = {t["thread_id"] for t in await client_b.threads.search(limit=100)}
    assert b_thread in b_threads and a_thread not in b_threads
    assert a_thread not in {t["thread_id"] for t in await client_b.threads.search(ids=[a_thread])}
    a_threads = {t["thread_id"] for t in await client_a.threads.search(limit=100)}
    assert b_thread not in a_threads

    refused: list[Callable[[], Awaitable[Any]]] = [
        lambda: client_b.assistants.get(a_bot),
        lambda: client_b.assistants.get("alpha/helper"),
        lambda: client_b.assistants.get_graph(a_bot),
        lambda: client_b.assistants.get_schemas(a_bot),
        lambda: client_b.threads.get(a_thread),
        lambda: client_b.threads.get_state(a_thread),
        lambda: client_b.threads.get_state(a_thread, checkpoint_id=a_checkpoint),
        lambda: client_b.threads.get_history(a_thread),
        lambda: client_b.threads.update_state(a_thread, {"slots": {}}, as_node="respond"),
        lambda: client_b.threads.create(metadata={"assistant_id": a_bot}),
        lambda: client_b.runs.list(a_thread),
        lambda: client_b.runs.get(a_thread, a_run["run_id"]),
        lambda: client_b.runs.join(a_thread, a_run["run_id"]),
        lambda: client_b.runs.cancel(a_thread, a_run["run_id"]),
        lambda: client_b.runs.wait(a_thread, b_bot, input={"messages": [{"role": "user", "content": "hi"}]}),
        lambda: client_b.runs.wait(None, a_bot, input={"messages": [{"role": "user", "content": "hi"}]}),
        lambda: client_b.runs.wait(b_thread, a_bot, input={"messages": [{"role": "user", "content": "hi"}]}),
    ]
    for call in refused:
        assert await status_of(call()) == 404
    with pytest.raises(NotFoundError):
        async for _ in client_b.runs.join_stream(a_thread, a_run["run_id"]):
            pass
    with pytest.raises(NotFoundError):
        await client_b.runs.get(b_thread, a_run["run_id"])
    assert (await client_a.threads.get_state(a_thread))["values"] == a_values, "tenant beta changed nothing"

    operator = get_client(url=deployment.base, api_key=ADMIN)
    try:
        everyone = {a["assistant_id"] for a in await operator.assistants.search(limit=100)}
        assert {a_bot, b_bot, deployment.c.bot_id} <= everyone, "the operator's token sees every tenant"
        assert (await operator.threads.get_state(a_thread))["values"] == a_values
        assert await status_of(operator.threads.create()) == 422, "two tenants' bots take runs: name one"
        made = await operator.threads.create(metadata={"assistant_id": b_bot})
        assert made["metadata"]["assistant_id"] == b_bot
        assert made["thread_id"] in {t["thread_id"] for t in await client_b.threads.search(limit=100)}
    finally:
        await operator.aclose()


async def test_runs_need_the_langgraph_channel(deployment: Deployment) -> None:
    client = get_client(url=deployment.base, api_key=deployment.c.key)
    try:
        bot = deployment.c.bot_id
        assert (await client.assistants.get(bot))["assistant_id"] == bot, "its bot can be inspected"
        with pytest.raises(PermissionDeniedError):
            await client.threads.create()
        run = client.runs.wait(None, bot, input={"messages": [{"role": "user", "content": "hi"}]})
        assert await status_of(run) == 403
        assert await client.threads.search() == []
    finally:
        await client.aclose()


async def test_no_key_or_a_wrong_key_is_refused(deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=deployment.base) as http:
        for method, path in (
            ("POST", "/assistants/search"),
            ("GET", f"/assistants/{deployment.a.bot_id}"),
            ("POST", "/threads"),
            ("POST", "/runs/wait"),
            ("GET", f"/threads/{uuid.uuid4()}/state"),
        ):
            for headers in ({}, {"X-Api-Key": "blk_wrong"}, {"Authorization": "Bearer blk_wrong"}):
                answer = await http.request(method, path, headers=headers, content=b"{}")
                assert answer.status_code == 401, (method, path, headers, answer.text)
        assert (await http.get("/ok")).json() == {"ok": True}


async def test_studio_sends_json_as_text_plain(deployment: Deployment) -> None:
    headers = {"X-Api-Key": deployment.a.key, "Content-Type": "text/plain;charset=UTF-8"}
    async with httpx.AsyncClient(base_url=deployment.base, headers=headers) as http:
        found = await http.post("/assistants/search", content=json.dumps({"limit": 5}))
        assert found.status_code == 200 and [a["assistant_id"] for a in found.json()] == [deployment.a.bot_id]
        body = {"assistant_id": deployment.a.bot_id, "input": {"messages": [{"role": "user", "content": "hello"}]}}
        values = await http.post("/runs/wait", content=json.dumps(body))
        assert values.status_code == 200, values.text
        assert values.json()["messages"][-1]["type"] == "ai"
        body["stream_mode"] = ["values", "updates"]
        streamed = await http.post("/runs/stream", content=json.dumps(body))
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        blocks = [b for b in streamed.text.split("\n\n") if b]
        assert blocks[0].startswith("event: metadata\ndata: {"), "server-sent events: event, then data as JSON"
        names = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
        assert names == ["metadata", "values"] + ["updates", "values"] * 3, "each step's update, then its values"
        assert all(json.loads(b.split("\n", 1)[1].removeprefix("data: ")) for b in blocks)


async def test_cors_lets_browser_clients_call(deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=deployment.base) as http:
        preflight = await http.options(
            "/threads/search",
            headers={
                "Origin": "https://smith.langchain.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key,content-type,cache-control",
            },
        )
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://smith.langchain.com")
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "x-api-key" in allowed and "cache-control" in allowed


async def test_hostile_input_is_refused(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create())["thread_id"]
    for unknown in (str(uuid.uuid4()), "not-a-uuid", "x" * 300, "../../api/v1/tenants"):
        assert await status_of(client_a.assistants.get(unknown)) == 404
        assert await status_of(client_a.threads.get_state(unknown)) == 404
        assert await status_of(client_a.runs.get(thread_id, unknown)) == 404
    for call in (client_a.assistants.get("nul\x00byte"), client_a.threads.get_state("nul\x00byte")):
        assert await status_of(call) in (400, 404), "a NUL is refused (400) or names nothing (404)"
    with pytest.raises(NotFoundError):
        await client_a.threads.get_state(thread_id, checkpoint_id=str(uuid.uuid4()))

    bad_inputs: list[Any] = [
        None,
        {},
        {"messages": []},
        {"messages": "hello"},
        {"messages": [{"role": "assistant", "content": "I am the bot"}]},
        {"messages": [{"role": "user", "content": "   "}]},
        {"messages": [{"role": "user", "content": "x" * 5000}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "http://127.0.0.1/"}]}]},
        {"messages": [{"role": "user", "content": "hi"}], "slots": {"admin": "yes"}},
    ]
    for bad in bad_inputs:
        assert await status_of(client_a.runs.wait(thread_id, bot, input=bad)) == 422, bad
    for extra in (
        {"command": {"resume": "yes"}},
        {"interrupt_before": ["respond"]},
        {"webhook": "http://127.0.0.1:9/hook"},
        {"checkpoint_id": str(uuid.uuid4())},
    ):
        run = client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "hi"}]}, **extra)
        assert await status_of(run) == 422, extra
    with pytest.raises(UnprocessableEntityError):
        async for _ in client_a.runs.stream(
            thread_id, bot, input={"messages": [{"role": "user", "content": "hi"}]}, stream_mode="tokens"
        ):
            pass
    assert await client_a.runs.list(thread_id) == [], "nothing refused was stored or run"

    headers = {"X-Api-Key": deployment.a.key, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=deployment.base, headers=headers) as http:
        for path in (
            "/assistants/search",
            "/threads",
            f"/threads/{thread_id}/runs/wait",
            f"/threads/{thread_id}/history",
        ):
            assert (await http.post(path, content=b"{not json")).status_code == 400
            assert (await http.post(path, content=b"[1, 2]")).status_code == 422
        assert (await http.post("/assistants/search", json={"limit": "ten"})).status_code == 422
        assert (await http.post("/assistants/search", json={"limit": 10**9})).status_code == 422
        assert (await http.post(f"/threads/{thread_id}/history", json={"limit": 0})).status_code == 422
        assert (await http.get(f"/threads/{thread_id}/history", params={"limit": "-1"})).status_code == 422
        assert (await http.get(f"/threads/{thread_id}/runs", params={"limit": "many"})).status_code == 422
        assert (await http.get(f"/assistants/{bot}/graph", params={"xray": "maybe"})).status_code == 422
        oversized = {"assistant_id": bot, "input": {"messages": [{"role": "user", "content": "x" * 300_000}]}}
        assert (await http.post(f"/threads/{thread_id}/runs/wait", json=oversized)).status_code == 413
        cancel = await http.post(f"/threads/{thread_id}/runs/{uuid.uuid4()}/cancel", params={"action": "rollback"})
        assert cancel.status_code == 404
    assert await client_a.runs.list(thread_id) == []


async def test_the_channel_says_where_the_api_is(deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=deployment.server.url) as http:
        where = await http.get("/channels/langgraph/alpha/helper")
        assert where.status_code == 200
        assert where.headers["content-type"].startswith("text/html")
        assert "/langgraph" in where.text and 'data-assistant-id="alpha/helper"' in where.text
        assert (await http.get("/channels/langgraph/gamma/helper")).status_code == 403, "not enabled"


async def test_cancel_a_run_waiting_for_its_conversation(client_a: LangGraphClient, deployment: Deployment) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create(metadata={"assistant_id": bot}))["thread_id"]
    url = deployment.server.env["BOTLOOM_DATABASE_URL"]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as holder:
        # another turn of the conversation holds its lock (as the runner takes it): the run waits
        await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", (thread_id,))
        run = await client_a.runs.create(thread_id, bot, input={"messages": [{"role": "user", "content": "hello"}]})
        await eventually(
            lambda: is_running(client_a, thread_id, run["run_id"]),
            LOCK_WAIT,
            "the run to wait (running) for the conversation's lock",
        )
        assert (await client_a.threads.get(thread_id))["status"] == "busy"
        cancelled = await client_a.runs.cancel(thread_id, run["run_id"], wait=True)
        assert cancelled["status"] == "interrupted"
        await holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (thread_id,))
    assert (await client_a.threads.get(thread_id))["status"] == "idle"
    after = await client_a.runs.wait(thread_id, bot, input={"messages": [{"role": "user", "content": "thanks"}]})
    assert said(after)[0] == ("human", "thanks"), "the cancelled message is never answered"
    statuses = [r["status"] for r in await client_a.runs.list(thread_id)]
    assert statuses == ["success", "interrupted"]


async def test_a_run_the_burst_policy_rejects_is_an_error(client_b: LangGraphClient, deployment: Deployment) -> None:
    bot, auth = deployment.b.bot_id, {"Authorization": f"Bearer {deployment.b.key}"}
    thread_id = (await client_b.threads.create())["thread_id"]
    url = deployment.server.env["BOTLOOM_DATABASE_URL"]
    async with httpx.AsyncClient(base_url=deployment.server.url, headers=auth) as http:
        assert (await http.patch(f"/api/v1/bots/{bot}", json={"burst_policy": "reject"})).status_code == 200
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as holder:
                # a turn of the thread runs: with the reject policy, the run's message gets the busy reply
                await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", (thread_id,))
                parts = [
                    p
                    async for p in client_b.runs.stream(
                        thread_id, bot, input={"messages": [{"role": "user", "content": "hello"}]}, stream_mode="values"
                    )
                ]
        finally:
            assert (await http.patch(f"/api/v1/bots/{bot}", json={"burst_policy": "enqueue"})).status_code == 200
    assert parts[-1].event == "error" and "burst policy" in parts[-1].data["message"]
    (run,) = await client_b.runs.list(thread_id)
    assert run["status"] == "error"


async def test_a_run_of_another_server_process_is_joined(
    client_a: LangGraphClient, deployment: Deployment, tmp_path: Any
) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create())["thread_id"]
    second = Server(deployment.server.env["BOTLOOM_DATABASE_URL"], tmp_path, demo=False)
    second.start()
    other = get_client(url=second.url + "/langgraph", api_key=deployment.a.key)
    try:
        async with await psycopg.AsyncConnection.connect(second.env["BOTLOOM_DATABASE_URL"], autocommit=True) as holder:
            await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", (thread_id,))
            run = await client_a.runs.create(thread_id, bot, input={"messages": [{"role": "user", "content": "hi"}]})

            async def listed() -> bool:  # the other process reads the run from its stored message
                return any(r["run_id"] == run["run_id"] for r in await other.runs.list(thread_id))

            await eventually(listed, LOCK_WAIT, "the other server process to list the run")
            assert (await other.runs.get(thread_id, run["run_id"]))["status"] == "pending", "waiting for the lock"
            assert await status_of(other.runs.cancel(thread_id, run["run_id"])) == 409, "it runs elsewhere"
            joining = asyncio.ensure_future(other.runs.join(thread_id, run["run_id"]))
            await holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (thread_id,))
            joined = await joining
        assert said(joined)[-1] == ("ai", "Hello! How can I help you today?"), "the join waited for the turn"
        assert (await other.runs.get(thread_id, run["run_id"]))["status"] == "success"
        parts = [p async for p in other.runs.join_stream(thread_id, run["run_id"])]
        assert [p.event for p in parts] == ["metadata", "values"] and parts[-1].data == joined
    finally:
        await other.aclose()
        second.stop()


async def test_a_bot_whose_graph_is_not_installed(client_a: LangGraphClient, deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.server.url, timeout=30) as http:
        delta = make_tenant(http, "delta", "langgraph")
    client = get_client(url=deployment.base, api_key=delta.key)
    try:
        thread_id = (await client.threads.create())["thread_id"]
        await client.runs.wait(thread_id, delta.bot_id, input={"messages": [{"role": "user", "content": "hello"}]})
        async with await psycopg.AsyncConnection.connect(deployment.server.env["BOTLOOM_DATABASE_URL"]) as db:
            await db.execute("UPDATE bots SET graph = 'uninstalled' WHERE id = %s", (delta.bot_id,))
            await db.commit()
        (listed,) = await client.threads.search()
        assert listed["thread_id"] == thread_id and listed["values"] == {}, "listed, without the state it cannot read"
        assert await status_of(client.assistants.get_graph(delta.bot_id)) == 404
        assert await status_of(client.threads.get_state(thread_id)) == 404
        message = {"messages": [{"role": "user", "content": "hi"}]}
        assert await status_of(client.runs.wait(thread_id, delta.bot_id, input=message)) == 404
        assert await status_of(client.runs.wait(None, delta.bot_id, input=message)) == 404
        assert [t["thread_id"] for t in await client.threads.search()] == [thread_id], "no thread was made"
    finally:
        await client.aclose()


async def test_two_runs_of_one_thread_each_tell_their_own_turn(
    client_a: LangGraphClient, deployment: Deployment
) -> None:
    bot = deployment.a.bot_id
    thread_id = (await client_a.threads.create())["thread_id"]
    url = deployment.server.env["BOTLOOM_DATABASE_URL"]
    runs = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as holder:
        # both messages wait for the conversation; the first run's turn job then answers both, in order
        await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", (thread_id,))
        for text in ("hello", "thanks"):
            runs.append(
                await client_a.runs.create(thread_id, bot, input={"messages": [{"role": "user", "content": text}]})
            )

            async def waiting(count: int = len(runs)) -> bool:
                listed = len(await client_a.runs.list(thread_id)) >= count
                return listed and await is_running(client_a, thread_id, runs[-1]["run_id"])

            await eventually(waiting, LOCK_WAIT, f"run {len(runs)} to be listed and wait (running) for the lock")
        await holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (thread_id,))
    first, second = [await client_a.runs.join(thread_id, r["run_id"]) for r in runs]
    assert said(first) == [("human", "hello"), ("ai", "Hello! How can I help you today?")]
    assert said(second)[:2] == said(first) and said(second)[2] == ("human", "thanks")
    assert first["intent"] == "greeting" and second["intent"] == "thanks"
    parts = [p.data async for p in client_a.runs.join_stream(thread_id, runs[0]["run_id"], stream_mode="updates")]
    assert parts[-1]["respond"]["replies"] == ["Hello! How can I help you today?"], "the first run's own nodes"


async def is_running(client: LangGraphClient, thread_id: str, run_id: str) -> bool:
    """Whether the run's status is ``running``."""
    status: str = (await client.runs.get(thread_id, run_id))["status"]
    return status == "running"
