"""Burst policies: three messages of one conversation within 100 ms, through two server processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import enable
from tests.serve_process import Server

pytestmark = [pytest.mark.slow, pytest.mark.serial]
ROOT = Path(__file__).resolve().parent.parent


def slowpoke_site(tmp_path: Path) -> Path:
    """A directory that makes the test plugin ``slowpoke`` an installed entry point for child processes."""
    site = tmp_path / "site"
    info = site / "slowpoke_test-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowpoke-test\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[botloom]\nslowpoke = tests.turn_process:SLOWPOKE\n")
    return site


@pytest.fixture
def servers(database_url: str, data_dir: Path, tmp_path: Path, demo: DemoInfo) -> Iterator[list[Server]]:
    env = {
        "PYTHONPATH": os.pathsep.join([str(slowpoke_site(tmp_path)), str(ROOT)]),
        "BOTLOOM_SECRET_KEY": "test-secret-key",
        "SLOWPOKE_SECONDS": "0.6",
        "SLOWPOKE_LOG": str(tmp_path / "slowpoke.log"),
    }
    running = [Server(database_url, data_dir, demo=False, **env) for _ in range(2)]
    try:
        for server in running:
            server.spawn()
        for server in running:
            server.wait_ready()
        yield running
    finally:
        for server in running:
            server.stop()


async def burst(servers: list[Server], demo: DemoInfo, texts: list[str]) -> list[dict[str, object]]:
    """Start a conversation, then post ``texts`` 50 ms apart, alternating between the servers."""
    headers = {"Authorization": f"Bearer {demo.api_key}"}
    async with httpx.AsyncClient(timeout=60) as client:
        first = await client.post(
            f"{servers[0].url}/api/v1/bots/acme/support/messages", json={"text": "hello"}, headers=headers
        )
        conversation = first.json()["conversation_id"]

        async def post(index: int, text: str) -> dict[str, object]:
            await asyncio.sleep(0.05 * index)
            server = servers[index % len(servers)]
            response = await client.post(
                f"{server.url}/api/v1/bots/acme/support/messages",
                json={"text": text, "conversation_id": conversation},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        return list(await asyncio.gather(*(post(i, t) for i, t in enumerate(texts))))


async def set_policy(services: Services, demo: DemoInfo, policy: str, **extra: object) -> None:
    settings = msgspec.structs.replace(demo.bot.settings, burst_policy=policy, **extra)
    await services.store.bots.update(demo.tenant.id, demo.bot.id, settings=settings)
    await enable(services, demo.bot, "slowpoke")


async def statuses(services: Services, demo: DemoInfo, conversation: str) -> list[tuple[str, str, str]]:
    messages = await services.store.messages.list_all(demo.tenant.id, conversation)
    return [(m.direction, m.status, m.text) for m in messages[2:]]  # after the opening hello and its reply


async def test_enqueue_answers_each_message_in_order(services: Services, demo: DemoInfo, servers: list[Server]) -> None:
    await set_policy(services, demo, "enqueue")
    answers = await burst(servers, demo, ["parcel P1", "parcel P2", "parcel P3"])
    assert [a["replies"][0]["text"] for a in answers] == [  # type: ignore[index]
        "Parcel 1 is in the depot.",
        "Parcel 2 is in the depot.",
        "Parcel 3 is in the depot.",
    ], "each message got its own answer"
    rows = await statuses(services, demo, str(answers[0]["conversation_id"]))
    assert sorted(s for d, s, _ in rows if d == "inbound") == ["answered"] * 3
    arrival = [t.removeprefix("parcel P") for d, _, t in rows if d == "inbound"]
    answered = [t.removeprefix("Parcel ").split()[0] for d, _, t in rows if d == "outbound"]
    assert answered == arrival, "turns ran in the order the messages were stored"


async def test_merge_makes_one_turn(services: Services, demo: DemoInfo, servers: list[Server]) -> None:
    await set_policy(services, demo, "merge", burst_window_ms=400)
    answers = await burst(servers, demo, ["hi", "I have a question", "about my order 1234"])
    replies = {tuple(r["text"] for r in a["replies"]) for a in answers}  # type: ignore[attr-defined]
    assert len(replies) == 1, "every message of the burst gets the one turn's answer"
    (texts,) = replies
    assert len(texts) == 1 and "1234" in texts[0]
    rows = await statuses(services, demo, str(answers[0]["conversation_id"]))
    assert sorted(s for d, s, _ in rows if d == "inbound") == ["answered", "merged", "merged"]
    assert sum(1 for d, _, _ in rows if d == "outbound") == 1


async def test_interrupt_cancels_the_running_turn(
    services: Services, demo: DemoInfo, servers: list[Server], tmp_path: Path
) -> None:
    await set_policy(services, demo, "interrupt")
    answers = await burst(servers, demo, ["parcel P1", "parcel P2", "parcel P3"])
    rows = await statuses(services, demo, str(answers[0]["conversation_id"]))
    assert sorted(s for d, s, _ in rows if d == "inbound") == ["answered", "merged", "merged"]
    assert sum(1 for d, _, _ in rows if d == "outbound") == 1, "one turn answered all three"
    finished = (tmp_path / "slowpoke.log").read_text().splitlines()
    assert len(finished) == 1, "the interrupted turn's tool call never finished"


async def test_reject_answers_busy(services: Services, demo: DemoInfo, servers: list[Server]) -> None:
    await set_policy(services, demo, "reject")
    answers = await burst(servers, demo, ["parcel P1", "parcel P2", "parcel P3"])
    texts = [a["replies"][0]["text"] for a in answers]  # type: ignore[index]
    assert texts[0] == "Parcel 1 is in the depot."
    assert texts[1:] == [demo.bot.settings.busy_reply] * 2
    rows = await statuses(services, demo, str(answers[0]["conversation_id"]))
    assert [s for d, s, _ in rows if d == "inbound"] == ["answered", "rejected", "rejected"]
