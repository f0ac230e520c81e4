"""Turns across processes: a killed process, and two processes on one conversation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat, enable

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def spawn(database_url: str, data_dir: Path, conversation: str, text: str | None, **env: str) -> subprocess.Popen[str]:
    """Start ``tests.turn_process`` for the demo bot."""
    args = [sys.executable, "-m", "tests.turn_process", database_url, str(data_dir), "acme/support", conversation]
    if text is not None:
        args.append(text)
    return subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )


def outputs(process: subprocess.Popen[str], timeout: float = 60) -> list[dict[str, object]]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def wait_for_status(services: Services, demo: DemoInfo, conversation: str, status: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        messages = await services.store.messages.list_all(demo.tenant.id, conversation)
        if any(m.status == status for m in messages):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message reached {status!r}")


@pytest.fixture
def slow_log(tmp_path: Path) -> Path:
    return tmp_path / "slowpoke.log"


async def _conversation(services: Services, demo: DemoInfo) -> Chat:
    await enable(services, demo.bot, "slowpoke")
    chat = Chat(services, demo.bot, channel="test")
    await chat.say("hello")
    assert chat.conversation_id is not None
    return chat


async def test_conversation_continues_in_a_new_process(
    services: Services, demo: DemoInfo, database_url: str, data_dir: Path
) -> None:
    chat = await _conversation(services, demo)
    first = spawn(database_url, data_dir, chat.conversation_id or "", "where is my order?")
    assert "order number" in str(outputs(first)[0]["replies"])
    second = spawn(database_url, data_dir, chat.conversation_id or "", "1234")
    replies = outputs(second)[0]["replies"]
    assert "1234 has shipped" in str(replies), "the pending slot question survived in the checkpoint"


async def test_turn_killed_midway_runs_again_exactly_once(
    services: Services, demo: DemoInfo, database_url: str, data_dir: Path, slow_log: Path
) -> None:
    chat = await _conversation(services, demo)
    conversation = chat.conversation_id or ""
    doomed = spawn(database_url, data_dir, conversation, "parcel P77", SLOWPOKE_SECONDS="60")
    await wait_for_status(services, demo, conversation, "processing")
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=30)

    rescuer = spawn(database_url, data_dir, conversation, None, SLOWPOKE_SECONDS="0", SLOWPOKE_LOG=str(slow_log))
    results = outputs(rescuer)
    assert [r["replies"] for r in results] == [["Parcel 77 is in the depot."]]
    transcript = await chat.transcript()
    assert transcript[-2:] == [("inbound", "parcel P77"), ("outbound", "Parcel 77 is in the depot.")]
    assert sum(1 for d, _ in transcript if d == "outbound") == 2, "one reply to hello, one to the parcel"
    again = spawn(database_url, data_dir, conversation, None)
    assert outputs(again) == [], "nothing is left to run"


async def test_two_processes_on_one_conversation_take_turns(
    services: Services, demo: DemoInfo, database_url: str, data_dir: Path, slow_log: Path
) -> None:
    chat = await _conversation(services, demo)
    conversation = chat.conversation_id or ""
    env = {"SLOWPOKE_SECONDS": "0.4", "SLOWPOKE_LOG": str(slow_log)}
    processes = [spawn(database_url, data_dir, conversation, f"parcel P{n}", **env) for n in (1, 2)]
    results = [outputs(p) for p in processes]
    replies = sorted(str(r[0]["replies"]) for r in results)
    assert replies == ["['Parcel 1 is in the depot.']", "['Parcel 2 is in the depot.']"]
    calls = sorted((json.loads(line) for line in slow_log.read_text().splitlines()), key=lambda c: c["start"])
    assert len(calls) == 2
    assert calls[0]["end"] <= calls[1]["start"], "turns of one conversation never overlap"
    transcript = await chat.transcript()
    inbound = [t for d, t in transcript if d == "inbound"]
    assert sorted(inbound[1:]) == ["parcel P1", "parcel P2"]
    assert len(transcript) == 6, "every message answered once"
