"""Workers in their own processes: one killed in the middle of a turn, and ``botloom worker`` itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from botloom.testing.channel_contract import settled, transcript, wait_until
from tests.helpers import LOCAL_ENDPOINTS, enable, twilio_client
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
WEBHOOK = "/channels/twilio/acme/support"


@pytest.fixture
async def client(
    settings: Settings, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> AsyncIterator[httpx.AsyncClient]:
    """The app (no workers of its own) with the demo bot on Twilio in ``rest`` mode."""
    async with twilio_client(settings, services, demo, peer) as test_client:
        yield test_client


def start(args: list[str], **env: str) -> subprocess.Popen[str]:
    """Start a worker process and wait for its first line, which says it runs."""
    process = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    assert "ready" in line or "running" in line, line + process.stderr.read()[-3000:]
    return process


@contextlib.asynccontextmanager
async def running(args: list[str], **env: str) -> AsyncIterator[subprocess.Popen[str]]:
    """A worker process while the block runs; stopped with SIGTERM after it, which it must survive cleanly."""
    process = await asyncio.to_thread(start, args, **env)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, err[-3000:]


async def test_a_worker_killed_mid_turn_loses_nothing_and_the_user_gets_one_answer(
    client: httpx.AsyncClient,
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    database_url: str,
    data_dir: Path,
) -> None:
    await enable(services, demo.bot, "slowpoke")
    assert (await post_signed(client, WEBHOOK, inbound_form("parcel P77"))).status_code == 200
    worker = [sys.executable, "-m", "tests.queue_worker", database_url, str(data_dir)]
    doomed = await asyncio.to_thread(start, worker, SLOWPOKE_SECONDS="60")

    async def processing() -> bool:
        return any(status == "processing" for _, _, status in await transcript(services, demo))

    await wait_until(processing, 60, "the doomed worker to start the turn")
    doomed.send_signal(signal.SIGKILL)
    await asyncio.to_thread(doomed.communicate, timeout=30)
    assert peer.sent == []

    async with running(worker, SLOWPOKE_SECONDS="0"):
        sent = await asyncio.to_thread(peer.wait_for, 1, 90)

        async def finished() -> bool:  # no job left that could send a second copy
            return await settled(services, demo) and await services.queue.pending("turns") == 0

        await wait_until(finished, 60, "the turn's jobs and the reply's delivery to finish")
    assert [m.body for m in sent] == [m.body for m in peer.sent] == ["Parcel 77 is in the depot."]
    assert await transcript(services, demo) == [
        ("inbound", "parcel P77", "answered"),
        ("outbound", "Parcel 77 is in the depot.", "sent"),
    ]


async def test_botloom_worker_runs_the_queue_in_its_own_process(
    client: httpx.AsyncClient,
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    database_url: str,
    data_dir: Path,
) -> None:
    began = time.monotonic()
    assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
    env = {
        "BOTLOOM_DATABASE_URL": database_url,
        "BOTLOOM_DATA_DIR": str(data_dir),
        "BOTLOOM_SECRET_KEY": "test-secret-key",
        "BOTLOOM_LOG_LEVEL": "WARNING",
        "BOTLOOM_ALLOWED_ENDPOINTS": LOCAL_ENDPOINTS,  # the Twilio peer on loopback
    }
    async with running([sys.executable, "-m", "botloom", "worker", "--turns", "2"], **env):
        sent = await asyncio.to_thread(peer.wait_for, 1, 60)
    assert [m.body for m in sent] == ["Hello! How can I help you today?"]
    assert time.monotonic() - began < 60
