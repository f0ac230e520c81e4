"""Replay (``POST /api/v1/conversations/{id}/replay``, ``botloom replay``): a stored conversation against current logic.

Deterministic replays reuse the recorded outputs; live ones call the model (the scripted
OpenAI server) and the tools again. Each shows, per turn, where the answers differ.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from tests.cli_batch import run_botloom_commands
from tests.conftest import ADMIN_TOKEN
from tests.helpers import Chat, api_client, disable
from tests.servers import ScriptedOpenAI

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(settings, services=services)) as test_client:
        test_client.headers.update(ADMIN)
        yield test_client


async def talk(services: Services, demo: DemoInfo, *texts: str) -> str:
    chat = Chat(services, demo.bot)
    for text in texts:
        await chat.say(text)
    assert chat.conversation_id is not None
    return chat.conversation_id


async def replay(client: httpx.AsyncClient, conversation_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1/conversations/{conversation_id}/replay", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


CONVERSATION = ("hi", "where is my order", "1234", "what does express shipping cost?", "I want to talk to a human")


@pytest.mark.parametrize("mode", ["deterministic", "live"])
async def test_an_unchanged_bot_replays_the_same(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, mode: str
) -> None:
    conversation = await talk(services, demo, *CONVERSATION)
    report = await replay(client, conversation, mode=mode)
    assert report["differences"] == 0, report
    assert report["mode"] == mode
    assert [t["input"] for t in report["turns"]] == list(CONVERSATION)
    assert [t["original"]["intent"] for t in report["turns"]] == [
        "greeting",
        "order_status",
        "order_status",
        "knowledge",
        "human_handoff",
    ]
    assert report["turns"][2]["original"]["path"] == ["retrieve", "classify", "act", "respond"]
    assert report["turns"][4]["replayed"]["path"][-1] == "escalate"
    assert all(t["same"] and t["recorded"] for t in report["turns"])
    messages = (await client.get(f"/api/v1/conversations/{conversation}")).json()["messages"]
    assert len(messages) == 10, "a replay stores nothing in the conversation"


@pytest.mark.parametrize("mode", ["deterministic", "live"])
async def test_a_changed_setting_shows_where_answers_differ(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, mode: str
) -> None:
    conversation = await talk(services, demo, "hi", "qwertyuiop asdfgh")
    changed = await client.patch(
        f"/api/v1/bots/{demo.bot.id}",
        json={"settings": {"fallback_reply": "No idea, sorry.", "max_failures_before_escalation": 1}},
    )
    assert changed.status_code == 200, changed.text
    report = await replay(client, conversation, mode=mode)
    first, second = report["turns"]
    assert first["same"]
    assert not second["same"]
    assert second["differs"] == ["replies", "path"]
    assert second["original"]["path"] == ["retrieve", "classify", "respond"]
    assert second["replayed"]["path"] == ["retrieve", "classify", "escalate"], "one failure is now enough"
    assert report["differences"] == 1


async def test_a_disabled_plugin_shows_where_answers_differ(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    conversation = await talk(services, demo, "hi", "where is my order 1234?")
    await disable(services, demo.bot, "demo_shop")
    report = await replay(client, conversation)
    first, second = report["turns"]
    assert first["same"] and not second["same"]
    assert "intent" in second["differs"]
    assert second["original"]["intent"] == "order_status"
    assert "act" not in second["replayed"]["path"]


async def test_replay_against_another_bot_of_the_tenant(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    conversation = await talk(services, demo, "hi", "where is my order 1234?")
    created = await client.post(f"/api/v1/tenants/{demo.tenant.id}/bots", json={"slug": "next", "name": "Next"})
    assert created.status_code == 201, created.text
    other = created.json()
    for plugin in ("smalltalk", "knowledge"):
        put = await client.put(f"/api/v1/bots/{other['id']}/plugins/{plugin}", json={"enabled": True, "config": {}})
        assert put.status_code == 200, put.text
    report = await replay(client, conversation, bot="acme/next")
    assert report["bot_id"] == other["id"]
    assert [t["same"] for t in report["turns"]] == [True, False], "the new version has no shop plugin"
    assert (await replay(client, conversation))["differences"] == 0, "the conversation's own bot is unchanged"

    foreign = await client.post("/api/v1/tenants", json={"slug": "globex", "name": "Globex"})
    globex_key = foreign.json()["api_key"]["key"]
    globex_bot = await client.post("/api/v1/tenants/globex/bots", json={"slug": "helper", "name": "Helper"})
    assert globex_bot.status_code == 201
    url = f"/api/v1/conversations/{conversation}/replay"
    assert (await client.post(url, json={"bot": "globex/helper"})).status_code == 404, "another tenant's bot"
    assert (await client.post(url, json={}, headers={"Authorization": f"Bearer {globex_key}"})).status_code == 404
    own = await client.post(url, json={}, headers={"Authorization": f"Bearer {demo.api_key}"})
    assert own.status_code == 200


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"mode": "replay"}, "mode"),
        ({"mode": 1}, "mode"),
        ({"bot": ""}, "bot"),
        ({"bot": "x" * 201}, "bot"),
        ({"bot": "acme/nobody"}, "no bot"),
        ({"turns": 3}, "turns"),
    ],
)
async def test_malformed_replay_requests(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, body: dict[str, Any], says: str
) -> None:
    conversation = await talk(services, demo, "hi")
    response = await client.post(f"/api/v1/conversations/{conversation}/replay", json=body)
    assert response.status_code in (400, 404), response.text
    assert says in response.text
    missing = await client.post("/api/v1/conversations/00000000-0000-4000-8000-000000000000/replay", json={})
    assert missing.status_code == 404
    url = f"/api/v1/conversations/{conversation}/replay"
    anonymous = await client.post(url, json={}, headers={"Authorization": ""})
    assert anonymous.status_code == 401


# ----------------------------------------------------------------------------- with a language model


def classification(intent: str, *, slots: dict[str, str] | None = None) -> dict[str, object]:
    return {"intent": intent, "confidence": 0.9, "slots": slots or {}, "wants_human": False}


async def test_replay_with_a_model(llm_settings: Settings, database_url: str, openai: ScriptedOpenAI) -> None:
    async with open_services(llm_settings, url=database_url) as services:
        demo = await ensure_demo(services)
        openai.script(
            classification("order_status", slots={"order_number": "1234"}),
            "Order 1234 is on its way with DHL.",
            classification("thanks"),
            "You're welcome!",
        )
        conversation = await talk(services, demo, "where's order 1234?", "thanks!")
        assert openai.pending == 0
        asked = len(openai.chat_requests)
        async with api_client(create_app(llm_settings, services=services)) as client:
            client.headers.update(ADMIN)
            same = await replay(client, conversation)
            assert same["differences"] == 0, same
            assert len(openai.chat_requests) == asked, "a deterministic replay asks the model nothing"
            assert same["turns"][0]["replayed"]["replies"] == ["Order 1234 is on its way with DHL."]

            openai.script(
                classification("order_status", slots={"order_number": "1234"}),
                "Order 1234 is on its way with DHL.",
                classification("thanks"),
                "Glad I could help!",
            )
            live = await replay(client, conversation, mode="live")
            assert len(openai.chat_requests) == asked + 4, "a live replay asks the model again"
            assert [t["same"] for t in live["turns"]] == [True, False]
            assert live["turns"][1]["differs"] == ["replies"]
            assert live["turns"][1]["replayed"]["replies"] == ["Glad I could help!"]

            # botloom's own logic changed: with the shop plugin gone, the recorded intent has no tool.
            await disable(services, demo.bot, "demo_shop")
            changed = await replay(client, conversation)
            assert len(openai.chat_requests) == asked + 4
            assert changed["turns"][0]["differs"] == ["path"]
            assert changed["turns"][0]["replayed"]["path"] == ["retrieve", "classify", "respond"]


# ----------------------------------------------------------------------------- the command line


def run_replay(database_url: str, data_dir: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """``botloom replay`` with each list of arguments, one after the other in one interpreter (tests/cli_batch.py)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BOTLOOM_", "OPENAI_"))},
        "BOTLOOM_DATABASE_URL": database_url,
        "BOTLOOM_DATA_DIR": str(data_dir),
        "BOTLOOM_SECRET_KEY": "test-secret-key",
    }
    return run_botloom_commands([["replay", *args] for args in commands], env=env, timeout=120)


@pytest.mark.slow
async def test_the_replay_command(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, database_url: str, data_dir: Path
) -> None:
    conversation = await talk(services, demo, "hi", "where is my order 1234?")
    same, live = await asyncio.to_thread(
        run_replay,
        database_url,
        data_dir,
        ["acme/support", conversation],
        ["acme/support", conversation, "--live", "--json"],
    )
    assert same.returncode == 0, same.stderr
    assert "2 turns replayed (deterministic): 0 differ" in same.stdout
    assert live.returncode == 0, live.stderr
    assert json.loads(live.stdout)["mode"] == "live"

    await disable(services, demo.bot, "demo_shop")
    different, as_json, unknown = await asyncio.to_thread(
        run_replay,
        database_url,
        data_dir,
        ["acme/support", conversation],
        ["acme/support", conversation, "--json"],
        ["acme/support", "00000000-0000-4000-8000-000000000000"],
    )
    assert different.returncode == 1, different.stderr
    assert "turn 1: 'where is my order 1234?'" in different.stdout
    assert "intent: 'order_status'" in different.stdout
    assert "1 differ" in different.stdout
    assert json.loads(as_json.stdout)["differences"] == 1

    assert unknown.returncode == 1
    assert "has no conversation" in unknown.stderr
