"""Burst policies per channel kind: a burst of messages of one conversation while a turn runs.

* response (REST): three messages within 100 ms, through two server processes;
* push (Twilio, replies queued and sent by a worker): three signed webhooks, workers in process;
* socket (web chat): two sockets on one conversation sending at once (one socket reads its
  next frame only once the previous one is answered).

See ``docs/configuration.md#burst-policies`` for what each policy means on each kind.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server import demo as demo_module
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from botloom.testing.channel_contract import configure_twilio, transcript, wait_until
from tests.conftest import scratch_database
from tests.helpers import api_client, enable, host_with
from tests.serve_process import Server, started_together
from tests.test_channel_contract_webchat import AsgiSocket
from tests.turn_process import SLOWPOKE
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

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


@dataclass
class Deployment:
    """Two ``botloom serve`` processes with the ``slowpoke`` plugin on one database (the REST tests')."""

    database_url: str
    data_dir: Path
    servers: list[Server]
    slowpoke_log: Path
    """Where the plugin's parcel lookups append a line each when they finish."""

    def finished_lookups(self) -> list[str]:
        """The lines of the lookups finished so far (every test's)."""
        return self.slowpoke_log.read_text().splitlines() if self.slowpoke_log.exists() else []


@pytest.fixture(scope="module")
def deployment(
    pg_server_url: str, template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The REST tests' two server processes, started once for the module (each test has a tenant of its own)."""
    folder = tmp_path_factory.mktemp("bursts")
    data_dir = folder / "data"
    data_dir.mkdir()
    log = folder / "slowpoke.log"
    env = {
        "PYTHONPATH": os.pathsep.join([str(slowpoke_site(folder)), str(ROOT)]),
        "BOTLOOM_SECRET_KEY": "test-secret-key",
        "SLOWPOKE_SECONDS": "0.6",
        "SLOWPOKE_LOG": str(log),
    }
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with (
        scratch_database(pg_server_url, "t", template) as database_url,
        started_together([Server(database_url, data_dir, demo=False, **env) for _ in range(2)]) as running,
    ):
        yield Deployment(database_url, data_dir, list(running), log)


@pytest.fixture
async def services(settings: Settings, deployment: Deployment) -> AsyncIterator[Services]:
    """botloom's services in this process, on the deployment's database (the REST tests')."""
    settings = msgspec.structs.replace(settings, data_dir=str(deployment.data_dir))
    async with open_services(settings, url=deployment.database_url) as opened:
        yield opened


@pytest.fixture
async def demo(services: Services, monkeypatch: pytest.MonkeyPatch) -> DemoInfo:
    """The demo bot ``support`` (plugins, settings, knowledge), in a tenant of this test's own."""
    monkeypatch.setattr(demo_module, "DEMO_TENANT", f"burst-{uuid.uuid4().hex[:12]}")
    return await ensure_demo(services)


@pytest.fixture
def servers(deployment: Deployment) -> list[Server]:
    """The deployment's two server processes."""
    return deployment.servers


async def burst(servers: list[Server], demo: DemoInfo, texts: list[str]) -> list[dict[str, object]]:
    """Start a conversation, then post ``texts`` 50 ms apart, alternating between the servers."""
    headers = {"Authorization": f"Bearer {demo.api_key}"}
    path = f"/api/v1/bots/{demo.tenant.slug}/{demo.bot.slug}/messages"
    async with httpx.AsyncClient(timeout=60) as client:
        first = await client.post(f"{servers[0].url}{path}", json={"text": "hello"}, headers=headers)
        conversation = first.json()["conversation_id"]

        async def post(index: int, text: str) -> dict[str, object]:
            await asyncio.sleep(0.05 * index)
            server = servers[index % len(servers)]
            response = await client.post(
                f"{server.url}{path}",
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
    services: Services, demo: DemoInfo, servers: list[Server], deployment: Deployment
) -> None:
    await set_policy(services, demo, "interrupt")
    before = len(deployment.finished_lookups())  # the earlier tests' turns have all ended
    answers = await burst(servers, demo, ["parcel P1", "parcel P2", "parcel P3"])
    rows = await statuses(services, demo, str(answers[0]["conversation_id"]))
    assert sorted(s for d, s, _ in rows if d == "inbound") == ["answered", "merged", "merged"]
    assert sum(1 for d, _, _ in rows if d == "outbound") == 1, "one turn answered all three"
    finished = deployment.finished_lookups()[before:]
    assert len(finished) == 1, "the interrupted turn's tool call never finished"


async def test_reject_answers_busy(services: Services, demo: DemoInfo, servers: list[Server]) -> None:
    await set_policy(services, demo, "reject")
    answers = await burst(servers, demo, ["parcel P1", "parcel P2", "parcel P3"])
    texts = [a["replies"][0]["text"] for a in answers]  # type: ignore[index]
    assert texts[0] == "Parcel 1 is in the depot."
    assert texts[1:] == [demo.bot.settings.busy_reply] * 2
    rows = await statuses(services, demo, str(answers[0]["conversation_id"]))
    assert [s for d, s, _ in rows if d == "inbound"] == ["answered", "rejected", "rejected"]


# ----------------------------------------------------------------------------- push: Twilio through the queue

WEBHOOK = "/channels/twilio/acme/support"
PARCELS = ["parcel P1", "parcel P2", "parcel P3"]
UNFINISHED = ("received", "processing", "pending", "sending")


@pytest.fixture
async def slow_services(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """Services in this process with the ``slowpoke`` plugin, whose parcel lookups take a second."""
    monkeypatch.setenv("SLOWPOKE_SECONDS", "1.0")
    monkeypatch.delenv("SLOWPOKE_LOG", raising=False)
    async with open_services(settings, url=database_url, host=host_with(("slowpoke", SLOWPOKE))) as opened:
        yield opened


async def settled(services: Services, demo: DemoInfo, timeout: float = 60) -> list[tuple[str, str, str]]:
    """Wait until no message of the demo bot is unfinished; ``(direction, status, text)`` of every message."""
    deadline = time.monotonic() + timeout
    while True:
        rows = []
        for conversation in await services.store.conversations.list_all(demo.tenant.id, demo.bot.id):
            rows += await services.store.messages.list_all(demo.tenant.id, conversation.id)
        rows.sort(key=lambda m: (m.created_at, m.id))
        if rows and not any(m.status in UNFINISHED for m in rows):
            return [(m.direction, m.status, m.text) for m in rows]
        assert time.monotonic() < deadline, [(m.direction, m.status, m.text) for m in rows]
        await asyncio.sleep(0.05)


async def turn_running(services: Services, demo: DemoInfo) -> bool:
    """Whether a turn of the demo bot runs (one of its messages is ``processing``)."""
    return any(status == "processing" for _, _, status in await transcript(services, demo))


async def push_burst(
    settings: Settings, services: Services, peer: TwilioPeer, policy: str, replies: int, **extra: object
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Three webhooks of one sender under ``policy``, the later ones while the first turn runs (merge: 200 ms apart).

    The texts sent and the stored messages.
    """
    demo = await ensure_demo(services)
    await set_policy(services, demo, policy, **extra)
    async with api_client(create_app(settings, services=services)) as client, workers(services):
        assert (await configure_twilio(client, demo, twilio_config(peer, "rest"))).status_code == 200
        for index, text in enumerate(PARCELS):
            if index and policy == "merge":
                await asyncio.sleep(0.2)  # arriving 200 ms apart, within the burst window, is what merge is tried on
            elif index:  # the first turn is running (its lookup takes a second)
                await wait_until(lambda: turn_running(services, demo), what="the first turn to run")
            assert (await post_signed(client, WEBHOOK, inbound_form(text))).status_code == 200
        sent = await asyncio.to_thread(peer.wait_for, replies, 60)
        rows = await settled(services, demo)
    assert len(peer.sent) == replies, [m.body for m in peer.sent]
    return [m.body for m in sent], rows


@pytest.mark.usefixtures("peer")
async def test_push_enqueue_answers_each_message_in_order(
    settings: Settings, slow_services: Services, peer: TwilioPeer
) -> None:
    sent, rows = await push_burst(settings, slow_services, peer, "enqueue", 3)
    assert sent == ["Parcel 1 is in the depot.", "Parcel 2 is in the depot.", "Parcel 3 is in the depot."]
    assert [s for d, s, _ in rows if d == "inbound"] == ["answered"] * 3


async def test_push_merge_sends_one_reply(settings: Settings, slow_services: Services, peer: TwilioPeer) -> None:
    sent, rows = await push_burst(settings, slow_services, peer, "merge", 1, burst_window_ms=600)
    assert len(sent) == 1 and sent[0].startswith("Parcel ")
    assert [s for d, s, _ in rows if d == "inbound"] == ["answered", "merged", "merged"]


async def test_push_interrupt_sends_one_reply(settings: Settings, slow_services: Services, peer: TwilioPeer) -> None:
    sent, rows = await push_burst(settings, slow_services, peer, "interrupt", 1)
    assert len(sent) == 1 and sent[0].startswith("Parcel ")
    assert [s for d, s, _ in rows if d == "inbound"] == ["answered", "merged", "merged"]


async def test_push_reject_sends_busy_replies_while_a_turn_runs(
    settings: Settings, slow_services: Services, peer: TwilioPeer
) -> None:
    demo = await ensure_demo(slow_services)
    busy = demo.bot.settings.busy_reply
    sent, rows = await push_burst(settings, slow_services, peer, "reject", 3)
    assert sent == [busy, busy, "Parcel 1 is in the depot."], "the busy replies go out while the turn runs"
    assert [s for d, s, _ in rows if d == "inbound"] == ["answered", "rejected", "rejected"]


# ----------------------------------------------------------------------------- socket: web chat


async def two_sockets(settings: Settings, services: Services, policy: str) -> list[list[dict[str, Any]]]:
    """Two web chat sockets on one conversation each send a parcel message at once; the frames each got."""
    demo = await ensure_demo(services)
    await set_policy(services, demo, policy)
    app = create_app(settings, services=services)
    path, origin = "/api/v1/bots/acme/support/ws", {"origin": "http://testserver"}
    async with AsgiSocket(app, path, origin) as first, AsgiSocket(app, path, origin) as second:
        await first.send(type="hello", conversation_id=None)
        conversation = (await first.frame())["conversation_id"]
        await second.send(type="hello", conversation_id=conversation)
        assert (await second.frame())["conversation_id"] == conversation

        async def say(socket: AsgiSocket, index: int) -> list[dict[str, Any]]:
            if index:  # the first turn is running (its lookup takes a second)
                await wait_until(lambda: turn_running(services, demo), what="the first turn to run")
            await socket.send(type="message", id=f"m-{index}", text=f"parcel P{index + 1}")
            return await socket.frames_until("done", "error")

        return list(await asyncio.gather(say(first, 0), say(second, 1)))


def replies(frames: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in frames if f["type"] == "reply"]


async def test_socket_enqueue_answers_both(settings: Settings, slow_services: Services) -> None:
    first, second = await two_sockets(settings, slow_services, "enqueue")
    assert replies(first) == ["Parcel 1 is in the depot."]
    assert replies(second) == ["Parcel 2 is in the depot."]


async def test_socket_reject_answers_busy(settings: Settings, slow_services: Services) -> None:
    demo = await ensure_demo(slow_services)
    first, second = await two_sockets(settings, slow_services, "reject")
    assert replies(first) == ["Parcel 1 is in the depot."]
    assert replies(second) == [demo.bot.settings.busy_reply]
