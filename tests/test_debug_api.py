"""The debugger's read API: bots, graph, conversations by filter, transcripts and turns, paged and tenant-scoped."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.test_api_resources import api_client, bearer, make_bot, make_tenant


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def say(client: httpx.AsyncClient, key: str, text: str, conversation_id: str | None = None) -> str:
    """Send one REST chat message to the demo bot; the conversation's id."""
    body = {"text": text, **({"conversation_id": conversation_id} if conversation_id else {})}
    r = await client.post("/api/v1/bots/acme/support/messages", json=body, headers=bearer(key))
    assert r.status_code == 200, r.text
    return str(r.json()["conversation_id"])


async def test_a_turn_node_by_node(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    key = bearer(demo.api_key)
    cid = await say(client, demo.api_key, "where is my order 1234?")
    await say(client, demo.api_key, "I want to talk to a person", cid)

    page = (await client.get(f"/api/v1/conversations/{cid}/turns", headers=key)).json()
    escalated, order = page["turns"]
    assert page["next_cursor"] is None
    assert order["path"] == ["retrieve", "classify", "act", "respond"]
    assert order["user_text"] == "where is my order 1234?"
    assert order["intent"] == "order_status"
    assert escalated["path"] == ["retrieve", "classify"] and escalated["next"] == ["escalate"]
    assert escalated["interrupts"] and escalated["interrupts"][0]["notice"]

    detail = (await client.get(f"/api/v1/conversations/{cid}/turns/{order['checkpoint_id']}", headers=key)).json()
    steps = {s["node"]: s for s in detail["steps"]}
    assert [s["node"] for s in detail["steps"]] == order["path"]
    assert all(s["ms"] is not None and s["ms"] >= 0 for s in detail["steps"])
    assert set(steps["retrieve"]["wrote"]) == {"passages"}
    assert set(steps["classify"]["wrote"]) >= {"intent", "confidence", "slots"}
    assert steps["classify"]["wrote"]["intent"] == "order_status"
    assert steps["classify"]["wrote"]["slots"] == {"order_number": "1234"}
    tools = steps["act"]["wrote"]["tool_results"]
    assert tools[0]["tool"] and tools[0]["arguments"] == {"order_number": "1234"} and tools[0]["ok"] is True
    assert "1234 has shipped" in steps["respond"]["wrote"]["replies"][0]
    intent_change = next(d for d in steps["classify"]["diff"] if d["key"] == "intent")
    assert intent_change["after"] == "order_status" and intent_change["change"] in ("changed", "added")
    assert {d["key"] for d in steps["act"]["diff"]} == {"tool_results", "trace"}  # nothing it did not write
    assert detail["messages"][0]["text"] == "where is my order 1234?"
    assert {"user", "turn_id"} <= set(detail["input_keys"])

    later = (await client.get(f"/api/v1/conversations/{cid}/turns/{escalated['checkpoint_id']}", headers=key)).json()
    assert later["before"]["intent"] == "order_status"  # the state at its start is the first turn's end
    assert any(d["key"] == "intent" for d in later["diff"])


async def test_turns_and_transcript_page_with_cursors(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    key = bearer(demo.api_key)
    cid = await say(client, demo.api_key, "hello 0")
    for n in range(1, 5):
        await say(client, demo.api_key, f"hello {n}", cid)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/api/v1/conversations/{cid}/turns", params=params, headers=key)).json()
        seen += [t["user_text"] for t in page["turns"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"hello {n}" for n in range(4, -1, -1)]

    texts: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/api/v1/conversations/{cid}/transcript", params=params, headers=key)).json()
        texts = [m["text"] for m in page["messages"]] + texts
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(texts) == 10
    assert [t for t in texts if t.startswith("hello ")] == [f"hello {n}" for n in range(5)]


async def test_conversations_filtered_and_paged(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    key = bearer(demo.api_key)
    plain = [await say(client, demo.api_key, f"hello number {n}") for n in range(3)]
    person = await say(client, demo.api_key, "I want to talk to a person")
    url = "/api/v1/bots/acme/support/debug/conversations"

    everything = (await client.get(url, headers=key)).json()
    listed = [(c["id"], c["updated_at"], c["messages"], c["last_text"]) for c in everything["items"]]
    assert [c["id"] for c in everything["items"]] == [person, *reversed(plain)], listed  # newest first
    assert everything["items"][0]["messages"] >= 2 and everything["items"][0]["last_text"], listed
    escalated = (await client.get(url, params={"status": "escalated"}, headers=key)).json()
    assert [c["id"] for c in escalated["items"]] == [person]
    assert (await client.get(url, params={"status": "failed"}, headers=key)).json()["items"] == []
    found = (await client.get(url, params={"q": "NUMBER 1"}, headers=key)).json()
    assert [c["id"] for c in found["items"]] == [plain[1]]
    assert (await client.get(url, params={"q": "100%_"}, headers=key)).json()["items"] == []  # wildcards literal
    assert len((await client.get(url, params={"channel": "rest"}, headers=key)).json()["items"]) == 4
    assert (await client.get(url, params={"channel": "sms"}, headers=key)).json()["items"] == []

    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(url, params=params, headers=key)).json()
        ids += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == [c["id"] for c in everything["items"]]


async def test_graph_svg_and_json_with_a_path(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    key = bearer(demo.api_key)
    r = await client.get(
        "/api/v1/bots/acme/support/graph", params={"path": "retrieve,classify,act,respond,__end__"}, headers=key
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.count('class="node on-path"') == 6  # start, four nodes, end
    assert 'data-source="classify" data-target="act"' in r.text
    drawn = (await client.get("/api/v1/bots/acme/support/graph/json?path=retrieve,classify", headers=key)).json()
    edges = {(e["source"], e["target"]): e for e in drawn["edges"]}
    assert edges[("classify", "act")]["conditional"] is True and not edges[("classify", "act")]["on_path"]
    assert edges[("retrieve", "classify")]["on_path"] and not edges[("retrieve", "classify")]["conditional"]
    assert {n["id"] for n in drawn["nodes"] if n["on_path"]} == {"__start__", "retrieve", "classify"}


async def test_tenants_see_only_their_own(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    cid = await say(client, demo.api_key, "where is my order 1234?")
    checkpoint = (await client.get(f"/api/v1/conversations/{cid}/turns")).json()["turns"][0]["checkpoint_id"]
    _, other = await make_tenant(client, "other")
    await make_bot(client, "other", "helper")
    stranger = bearer(other)
    assert [b["slug"] for b in (await client.get("/api/v1/debug/bots", headers=stranger)).json()] == ["helper"]
    everyone = (await client.get("/api/v1/debug/bots")).json()  # the operator
    assert {(b["tenant_slug"], b["slug"]) for b in everyone} >= {("acme", "support"), ("other", "helper")}
    for path in (
        f"/api/v1/conversations/{cid}/turns",
        f"/api/v1/conversations/{cid}/turns/{checkpoint}",
        f"/api/v1/conversations/{cid}/transcript",
        "/api/v1/bots/acme/support/debug/conversations",
        "/api/v1/bots/acme/support/graph",
        "/api/v1/bots/acme/support/graph/json",
    ):
        assert (await client.get(path, headers=stranger)).status_code == 404, path
        assert (await client.get(path, headers={"Authorization": ""})).status_code == 401, path
        assert (await client.get(path, headers=bearer(demo.api_key))).status_code == 200, path
    assert (await client.get(f"/api/v1/conversations/{cid}/turns/not-a-checkpoint")).status_code == 404


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "bm90IGpzb24",  # "not json"
        base64.urlsafe_b64encode(b'["only one"]').decode(),
        base64.urlsafe_b64encode(b'["not a time", "x"]').decode(),
        "x" * 401,
    ],
)
async def test_malformed_cursors_and_parameters_are_400(client: httpx.AsyncClient, demo: DemoInfo, cursor: str) -> None:
    cid = await say(client, demo.api_key, "hello")
    for path in (
        "/api/v1/bots/acme/support/debug/conversations",
        f"/api/v1/conversations/{cid}/transcript",
    ):
        r = await client.get(path, params={"cursor": cursor})
        assert r.status_code == 400, (path, r.text)
    turns = await client.get(f"/api/v1/conversations/{cid}/turns", params={"cursor": "!!!"})
    assert turns.status_code == 400
    url = "/api/v1/bots/acme/support/debug/conversations"
    assert (await client.get(url, params={"status": "nonsense"})).status_code == 400
    assert (await client.get(url, params={"limit": 0})).status_code == 400
    assert (await client.get(url, params={"limit": 101})).status_code == 400
    assert (await client.get(url, params={"q": "x" * 201})).status_code == 400
    assert (await client.get(url, params={"q": "a\x00b"})).status_code == 400
    assert (await client.get("/api/v1/bots/acme/support/graph", params={"path": "a\x00b"})).status_code == 400
    assert (await client.get("/api/v1/bots/acme/support/graph", params={"path": "n," * 1001})).status_code == 400
    assert (await client.get(f"/api/v1/conversations/{cid}/turns/{'c' * 101}")).status_code == 400
    assert (await client.get(f"/api/v1/conversations/{cid}/turns", params={"limit": 101})).status_code == 400
    assert (await client.get(f"/api/v1/conversations/{cid}/transcript", params={"limit": 0})).status_code == 400


async def test_checkpoints_page_with_before(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    cid = await say(client, demo.api_key, "hello 0")
    for n in range(1, 4):
        await say(client, demo.api_key, f"hello {n}", cid)
    url = f"/api/v1/conversations/{cid}/checkpoints"
    first = (await client.get(url, params={"limit": 2})).json()
    assert [c["values"]["user"]["text"] for c in first] == ["hello 3", "hello 2"]
    second = (await client.get(url, params={"limit": 2, "before": first[-1]["checkpoint_id"]})).json()
    assert [c["values"]["user"]["text"] for c in second] == ["hello 1", "hello 0"]
    assert (await client.get(url, params={"before": second[-1]["checkpoint_id"]})).json() == []
    assert (await client.get(url, params={"before": "a\x00b"})).status_code == 400
    assert (await client.get(url, params={"before": "x" * 101})).status_code == 400


def test_drawing_labels_conditional_edges_and_highlights_a_path() -> None:
    from typing import TypedDict
    from xml.etree import ElementTree

    from langgraph.graph import END, START, StateGraph

    from botloom.graphs.drawing import draw_svg, graph_json

    class S(TypedDict, total=False):
        n: int

    def step(state: S) -> S:
        return {"n": state.get("n", 0) + 1}

    builder: StateGraph[S, None, S, S] = StateGraph(S)
    builder.add_node("check", step)
    builder.add_node("fix", step)
    builder.add_edge(START, "check")
    builder.add_conditional_edges(
        "check", lambda s: "ok" if s.get("n", 0) > 1 else "broken", {"broken": "fix", "ok": END}
    )
    builder.add_edge("fix", "check")
    drawable = builder.compile().get_graph()

    svg = ElementTree.fromstring(draw_svg(drawable, path=["check", "fix", "check"]))
    ns = "{http://www.w3.org/2000/svg}"
    edges = {
        (g.get("data-source"), g.get("data-target")): g for g in svg.iter(f"{ns}g") if "edge" in g.get("class", "")
    }
    labels = {key: "".join("".join(t.itertext()) for t in g.iter(f"{ns}text")) for key, g in edges.items()}
    assert labels[("check", "fix")] == "broken" and labels[("check", "__end__")] == "ok"
    assert edges[("check", "fix")].find(f"{ns}path").get("stroke-dasharray")  # conditional: dashed
    assert not edges[("fix", "check")].find(f"{ns}path").get("stroke-dasharray")
    on_path = {key for key, g in edges.items() if "on-path" in g.get("class", "")}
    assert on_path == {("__start__", "check"), ("check", "fix"), ("fix", "check")}  # not yet on to the end

    drawn = graph_json(drawable, ["check"])
    assert {(e["source"], e["target"], e["label"], e["conditional"]) for e in drawn["edges"]} >= {
        ("check", "fix", "broken", True),
        ("check", "__end__", "ok", True),
    }
