"""LangGraph runs stream live: each node's events arrive while the turn is still running.

A real ``botloom serve`` whose bot asks a scripted OpenAI server; the model's answer to
the ``respond`` node is held until the test has seen, through the ``langgraph-sdk``
client, the updates of the nodes before it. Nothing here measures time: the held call
is released by the test (or, on a server that tells events only after the turn, by its
own bound, and the test then fails on what it saw).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from botloom.testing.openai import ScriptedOpenAI, classification
from tests.conftest import scratch_database
from tests.serve_process import Server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": "Bearer admin"}
HOLD = 30.0
"""How long the held model call waits for the test at most (it is released as soon as the test has looked)."""


class Held:
    """A model answer held until :meth:`release` (or :data:`HOLD` seconds, on a server that does not stream)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.asked = threading.Event()
        self.released = threading.Event()
        self.answered = threading.Event()

    def __call__(self, body: dict[str, Any]) -> str:
        self.asked.set()
        self.released.wait(HOLD)
        self.answered.set()
        return self.text

    def release(self) -> None:
        """Let the held answer go."""
        self.released.set()


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, template_database_url: str, model: ScriptedOpenAI
) -> Iterator[tuple[Server, str, str]]:
    """``botloom serve`` with a model, and a tenant whose bot enabled the ``langgraph`` channel: server, key, bot."""
    data_dir: Path = tmp_path_factory.mktemp("langgraph-live")
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with scratch_database(pg_server_url, "t", template) as url:
        running = Server(url, data_dir, demo=False, OPENAI_API_KEY="test-key", OPENAI_BASE_URL=model.base_url)
        try:
            running.start()
            with httpx.Client(base_url=running.url, timeout=30) as http:
                created = http.post("/api/v1/tenants", json={"slug": "live", "name": "Live"}, headers=ADMIN)
                assert created.status_code == 201, created.text
                key = created.json()["api_key"]["key"]
                auth = {"Authorization": f"Bearer {key}"}
                bot = http.post("/api/v1/tenants/live/bots", json={"slug": "helper", "name": "Helper"}, headers=auth)
                assert bot.status_code == 201, bot.text
                plugin = f"/api/v1/bots/{bot.json()['id']}/plugins/langgraph"
                enabled = http.put(plugin, json={"enabled": True, "config": {}}, headers=auth)
                assert enabled.status_code == 200, enabled.text
                yield running, key, bot.json()["id"]
        finally:
            running.stop()


async def test_node_updates_arrive_while_the_turn_runs(served: tuple[Server, str, str], model: ScriptedOpenAI) -> None:
    server, key, bot = served
    held = Held("Express shipping costs 9.90 euros.")
    model.script(classification(None, confidence=0.2), held)
    client = get_client(url=server.url + "/langgraph", api_key=key)
    seen: list[tuple[str, Any]] = []
    answered_when: dict[str, bool] = {}
    try:
        thread = (await client.threads.create(metadata={"assistant_id": bot}))["thread_id"]
        async for part in client.runs.stream(
            thread,
            bot,
            input={"messages": [{"role": "user", "content": "how much is express shipping?"}]},
            stream_mode=["updates", "messages-tuple", "values"],
        ):
            seen.append((part.event, part.data))
            if part.event == "updates" and isinstance(part.data, dict) and "classify" in part.data:
                answered_when["classify"] = held.answered.is_set()
                held.release()
            if part.event == "messages":
                answered_when["reply"] = held.answered.is_set()
        state = await client.threads.get_state(thread)
    finally:
        held.release()
        await client.aclose()

    updates = [next(iter(data)) for event, data in seen if event == "updates"]
    assert updates == ["retrieve", "classify", "respond"], seen
    assert answered_when["classify"] is False, "classify's update came while the model was still answering respond"
    assert held.asked.is_set()
    assert answered_when["reply"] is True
    (chunk, meta) = next(data for event, data in seen if event == "messages")
    assert chunk["content"] == "Express shipping costs 9.90 euros." and meta["langgraph_node"] == "respond"
    values = [data for event, data in seen if event == "values"]
    assert values[-1] == state["values"], "the last values are the stored state"
    after_classify = values[-2]
    assert [s["node"] for s in after_classify["trace"]] == ["retrieve", "classify"], "the state after classify"
    assert after_classify["messages"][-1]["type"] == "human"
    respond = next(data["respond"] for event, data in seen if event == "updates" and "respond" in data)
    assert [m["content"] for m in respond["messages"]] == ["Express shipping costs 9.90 euros."]
    assert respond["messages"][0]["id"] == state["values"]["messages"][-1]["id"], "ids as the stored state's"
    assert model.errors == []


async def test_two_streams_of_one_run_each_get_every_event_live(
    served: tuple[Server, str, str], model: ScriptedOpenAI
) -> None:
    """A background run joined by two streams: both see classify's update while the model is still held."""
    server, key, bot = served
    held = Held("It arrives on Thursday.")
    model.script(classification(None, confidence=0.2), held)
    client = get_client(url=server.url + "/langgraph", api_key=key)
    saw = [asyncio.Event(), asyncio.Event()]

    async def joined(which: int, run_id: str, thread: str) -> tuple[list[str], bool | None]:
        updates: list[str] = []
        answered_then: bool | None = None
        async for part in client.runs.join_stream(thread, run_id, stream_mode=["updates"]):
            if part.event == "updates" and isinstance(part.data, dict):
                updates.append(next(iter(part.data)))
                if "classify" in part.data:
                    answered_then = held.answered.is_set()
                    saw[which].set()
                    if all(e.is_set() for e in saw):
                        held.release()
        return updates, answered_then

    try:
        thread = (await client.threads.create(metadata={"assistant_id": bot}))["thread_id"]
        run = await client.runs.create(thread, bot, input={"messages": [{"role": "user", "content": "when?"}]})
        results = await asyncio.gather(joined(0, run["run_id"], thread), joined(1, run["run_id"], thread))
    finally:
        held.release()
        await client.aclose()
    for updates, answered_then in results:
        assert updates == ["retrieve", "classify", "respond"]
        assert answered_then is False, "each stream saw classify's update while the model was still answering"
