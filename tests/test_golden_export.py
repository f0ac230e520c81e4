"""A conversation becomes a test (``GET /api/v1/conversations/{id}/golden-test``).

The exported file is run with plain pytest in a subprocess: it passes as exported, and
fails, naming the turn, when the bot's behaviour changes (a plugin's answer, a setting).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.golden import replay_recording
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from tests.conftest import ADMIN_TOKEN
from tests.helpers import Chat, api_client
from tests.servers import ScriptedOpenAI

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

CHANGED_GREETING = '''
"""Loaded by pytest with -p: the smalltalk plugin's greeting answers differently (a plugin's new version)."""
from dataclasses import replace

import msgspec

import botloom.plugins.smalltalk as smalltalk
from botloom import hookimpl

_original = smalltalk.register_intents


@hookimpl
def register_intents():
    return [
        msgspec.structs.replace(i, answer="Howdy!") if i.name == "greeting" else i for i in _original()
    ]


smalltalk.register_intents = register_intents
'''


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(settings, services=services)) as test_client:
        test_client.headers.update(ADMIN)
        yield test_client


def run_pytest(test_file: Path, *extra: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Plain pytest on one file, in its own folder (none of this suite's conftest or settings).

    Plain indeed: the third-party plugins of the development environment (schemathesis, hypothesis,
    faker, langsmith's) are not loaded, only botloom's own (which every environment with botloom
    has); loading and assertion-rewriting them took some 15 s of each run, and the file uses none.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTLOOM_", "PYTEST_", "OPENAI_"))}
    env.pop("PYTHONPATH", None)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    plugins = ["-p", "botloom.testing.pytest_plugin", "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, *extra, test_file.name],
        cwd=test_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def export(client: httpx.AsyncClient, conversation_id: str, folder: Path, **params: str) -> Path:
    response = await client.get(f"/api/v1/conversations/{conversation_id}/golden-test", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/x-python")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="test_golden_')
    name = disposition.split('filename="')[1].rstrip('"')
    path = folder / name
    path.write_text(response.text)
    return path


async def test_an_exported_conversation_passes_and_fails_when_the_bot_changes(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, tmp_path: Path
) -> None:
    chat = Chat(services, demo.bot)
    for text in ("hi", "where is my order", "1234", "what does express shipping cost?", "qwertyuiop asdfgh"):
        await chat.say(text)
    assert chat.conversation_id is not None
    folder = tmp_path / "golden"
    folder.mkdir()
    test_file = await export(client, chat.conversation_id, folder)
    source = test_file.read_text()
    assert "import botloom.runtime.golden" not in source and "from botloom.runtime.golden import" in source
    assert "auth_token" not in source

    passed = run_pytest(test_file)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed" in passed.stdout

    (folder / "changed_greeting.py").write_text(CHANGED_GREETING)
    changed_plugin = run_pytest(test_file, "-p", "changed_greeting", pythonpath=folder)
    assert changed_plugin.returncode == 1, changed_plugin.stdout + changed_plugin.stderr
    assert "turn 0 ('hi') differs" in changed_plugin.stdout
    assert "Howdy!" in changed_plugin.stdout

    stricter = test_file.with_name("test_golden_stricter.py")
    stricter.write_text(source.replace("'max_failures_before_escalation': 2", "'max_failures_before_escalation': 1"))
    assert stricter.read_text() != source
    changed_setting = run_pytest(stricter)
    assert changed_setting.returncode == 1, changed_setting.stdout + changed_setting.stderr
    assert "turn 4 ('qwertyuiop asdfgh') differs" in changed_setting.stdout


async def test_a_fork_exports_with_its_own_last_turn(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, tmp_path: Path
) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hi")
    await chat.say("where is my order 1234?")
    await chat.say("thanks")
    assert chat.conversation_id is not None
    history = (await client.get(f"/api/v1/conversations/{chat.conversation_id}/checkpoints")).json()
    order_turn = history[1]["checkpoint_id"]
    url = f"/api/v1/conversations/{chat.conversation_id}/forks"
    forked = (await client.post(url, json={"checkpoint_id": order_turn, "text": "where is my order 1236?"})).json()
    test_file = await export(client, chat.conversation_id, tmp_path, fork=forked["fork_id"])
    assert "1236 was delivered" in test_file.read_text()
    assert "You're welcome" not in test_file.read_text(), "the turns after the forked one are not the fork's"
    result = run_pytest(test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    by_fork = await client.get(f"/api/v1/forks/{forked['fork_id']}/golden-test")
    assert by_fork.status_code == 200
    assert "1236 was delivered" in by_fork.text

    paused = (await client.post(url, json={"checkpoint_id": order_turn, "break_after": ["classify"]})).json()
    refused = await client.get(f"/api/v1/forks/{paused['fork_id']}/golden-test")
    assert refused.status_code == 400
    assert "continue it to its end first" in refused.json()["detail"]
    edited = await client.post(
        f"/api/v1/forks/{paused['fork_id']}/continue", json={"state": {"slots": {"order_number": "4321"}}}
    )
    assert edited.status_code == 200
    refused = await client.get(f"/api/v1/forks/{paused['fork_id']}/golden-test")
    assert refused.status_code == 400
    assert "state edited" in refused.json()["detail"]
    unknown = await client.get(
        f"/api/v1/conversations/{chat.conversation_id}/golden-test", params={"fork": "00000000-0000-4000-8000-0"}
    )
    assert unknown.status_code == 404


async def test_golden_export_is_tenant_scoped(client: httpx.AsyncClient, services: Services, demo: DemoInfo) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hi")
    created = await client.post("/api/v1/tenants", json={"slug": "globex", "name": "Globex"})
    other = {"Authorization": f"Bearer {created.json()['api_key']['key']}"}
    url = f"/api/v1/conversations/{chat.conversation_id}/golden-test"
    assert (await client.get(url, headers=other)).status_code == 404
    assert (await client.get(url, headers={"Authorization": f"Bearer {demo.api_key}"})).status_code == 200
    assert (await client.get(url, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.get(url, params={"fork": "x" * 300})).status_code == 400


def classification(intent: str, slots: dict[str, str] | None = None) -> dict[str, Any]:
    return {"intent": intent, "confidence": 0.9, "slots": slots or {}, "wants_human": False}


async def test_a_model_conversation_replays_without_the_model(
    llm_settings: Settings, database_url: str, openai: ScriptedOpenAI
) -> None:
    settings = llm_settings
    async with open_services(settings, url=database_url) as services:
        demo = await ensure_demo(services)
        openai.script(classification("order_status", {"order_number": "1234"}), "It ships with DHL on Thursday.")
        chat = Chat(services, demo.bot)
        assert await chat.texts("where's my order 1234") == ["It ships with DHL on Thursday."]
        async with api_client(create_app(settings, services=services)) as client:
            client.headers.update(ADMIN)
            response = await client.get(f"/api/v1/conversations/{chat.conversation_id}/golden-test")
    assert response.status_code == 200, response.text
    namespace: dict[str, Any] = {}
    exec(compile(response.text, "golden.py", "exec"), namespace)
    recording = namespace["RECORDING"]
    assert recording["model"] is True
    asked = len(openai.chat_requests)
    turns = await replay_recording(recording)
    assert len(openai.chat_requests) == asked, "the recorded model outputs are used"
    assert turns[0]["same"], turns
    assert turns[0]["replayed"]["replies"] == ["It ships with DHL on Thursday."]
    assert turns[0]["replayed"]["path"] == ["retrieve", "classify", "act", "respond"]
