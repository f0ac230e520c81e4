"""The channel contract: what every botloom channel must do, written once, run against each channel.

A channel's test module subclasses :class:`ChannelContract` and provides a
``driver`` fixture returning a :class:`ChannelDriver`, which knows how to reach
the channel: build a valid request, a forged one and a malformed one, and find
the replies the end user got (in the response, or at the provider's fake API).
Every test of the contract then runs against that channel::

    from botloom.testing import ChannelContract, ChannelDriver

    class TestMyChannel(ChannelContract):
        @pytest.fixture
        def driver(self) -> ChannelDriver:
            return MyDriver()

The contract runs on the demo bot (``acme/support``, whose answer to "hello" is
:data:`GREETING`) of the ``botloom_services`` fixture (botloom.testing's pytest
plugin), with every installed plugin loaded: the driver's ``enable`` enables the
channel for that bot through the API.

The contract (DESIGN.md, "The path of one turn"):

* a valid request is answered, and the end user gets the bot's reply;
* a forged request (bad signature or key) is refused (401/403) and stores nothing;
* a malformed request is a 4xx and stores nothing; so is one for an unknown bot,
  or a bot that has not enabled the channel;
* the message is stored before the request is answered: a push channel answers
  before any worker ran the turn, and nothing is lost when the worker starts later;
* a retried request with the channel's message id runs no second turn and sends no
  second reply;
* a push channel delivers through the queue, retrying a failing provider, and the
  end user gets exactly one copy (a response channel answers in the response).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
import pytest_asyncio

from botloom.core.settings import Settings
from botloom.runtime.delivery import RetryPolicy
from botloom.runtime.queue import QueueOptions
from botloom.runtime.services import Services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo
from botloom.server.worker import workers
from botloom.testing.harness import bot_transcript

GREETING = "Hello! How can I help you today?"
FAST_QUEUE = QueueOptions(heartbeat=2, sweep_every=1, grace=1.0)
FAST_RETRIES = RetryPolicy(attempts=3, first_delay=0.2, max_delay=1.0, send_timeout=5.0)


@dataclass
class Outcome:
    """How a channel answered one request."""

    status: int
    """The HTTP status, or for a socket the close code mapped to one (4403 → 403)."""
    replies: list[str] = field(default_factory=list)
    """Replies carried in the answer itself (response channels, Twilio's TwiML)."""


@dataclass
class ContractContext:
    """What a driver works with: the services, the demo bot and an HTTP client of the app."""

    services: Services
    demo: DemoInfo
    client: httpx.AsyncClient
    app: Any
    extra: dict[str, Any] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def workers(self) -> AsyncIterator[None]:
        """Run job workers (turns, deliveries) in this process while the block runs."""
        async with workers(self.services):
            yield

    async def transcript(self) -> list[tuple[str, str, str]]:
        """``(direction, text, status)`` of every message of the demo bot, in order."""
        return await transcript(self.services, self.demo)


async def transcript(services: Services, demo: DemoInfo) -> list[tuple[str, str, str]]:
    """``(direction, text, status)`` of every message of the demo bot, oldest first (the inbox ingested first)."""
    return await bot_transcript(services, demo.tenant.id, demo.bot.id)


def fast_app(settings: Settings, services: Services) -> Any:
    """The app on ``services`` (running no workers by itself), with a queue that sweeps and retries quickly."""
    services.queue.options = FAST_QUEUE
    services.deliveries.policy = FAST_RETRIES
    return create_app(settings, services=services)


def api_client(app: Any) -> httpx.AsyncClient:
    """An HTTP client calling ``app`` in the test's own event loop (no lifespan: the app is given its services).

    Litestar's ``AsyncTestClient`` runs the app on another event loop in a thread,
    where the test's connection pools cannot be used.
    """
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def disable(services: Services, demo: DemoInfo, plugin: str) -> None:
    """Disable ``plugin`` for the demo bot."""
    bot = demo.bot
    await services.store.plugin_settings.put(bot.tenant_id, bot.id, plugin, enabled=False, config={}, secrets={})


async def configure_twilio(client: httpx.AsyncClient, demo: DemoInfo, config: dict[str, object]) -> httpx.Response:
    """Enable the Twilio channel for the demo bot with ``config``, through the API."""
    return await client.put(
        "/api/v1/bots/acme/support/plugins/twilio",
        json={"enabled": True, "config": config},
        headers={"Authorization": f"Bearer {demo.api_key}"},
    )


class ChannelDriver(abc.ABC):
    """Knows one channel's wire format and where its replies go."""

    channel: ClassVar[str]
    push: bool = False
    """Whether replies go out through the queue (``send``) rather than in the response."""

    @abc.abstractmethod
    async def enable(self, ctx: ContractContext) -> None:
        """Enable the channel for the demo bot with a working config."""

    @abc.abstractmethod
    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        """Send one message as the channel's provider (or client) would; ``forged`` breaks its credentials."""

    @abc.abstractmethod
    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        """Send a request with valid credentials whose body is not the channel's format."""

    async def delivered(self, ctx: ContractContext, count: int, timeout: float = 30.0) -> list[str]:  # noqa: ASYNC109
        """Replies the end user got through the provider (push channels): wait for ``count`` of them."""
        raise NotImplementedError

    def fail_deliveries(self, ctx: ContractContext, times: int) -> None:
        """Make the provider refuse the next ``times`` messages (push channels)."""
        raise NotImplementedError


async def wait_until(predicate: Any, timeout: float = 30.0, what: str = "the condition") -> None:  # noqa: ASYNC109
    """Poll ``await predicate()`` until it is true."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


UNSETTLED = frozenset({"received", "processing", "pending", "sending"})
"""Statuses of a message whose turn or delivery is still to come (botloom.core.statuses)."""


async def settled(services: Services, demo: DemoInfo) -> bool:
    """Whether every message of the demo bot is settled: each inbound one's turn ran, each reply was handed over.

    Once true, every reply a turn would send has reached the provider: the end user's
    copies can be counted without waiting any longer.
    """
    rows = await transcript(services, demo)
    return bool(rows) and all(status not in UNSETTLED for _, _, status in rows)


class ChannelContract:
    """The tests every channel passes; subclasses provide the ``driver`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]
    """Async tests, in a project with pytest-asyncio's strict mode too."""

    @pytest_asyncio.fixture
    async def ctx(
        self, botloom_settings: Settings, botloom_services: Services, botloom_demo: DemoInfo, driver: ChannelDriver
    ) -> AsyncIterator[ContractContext]:
        """The app on the services, with the channel enabled for the demo bot by the driver."""
        settings, services, demo = botloom_settings, botloom_services, botloom_demo
        app = fast_app(settings, services)
        async with api_client(app) as client:
            context = ContractContext(services=services, demo=demo, client=client, app=app)
            await driver.enable(context)
            yield context

    @staticmethod
    def mid() -> str:
        """A fresh message id."""
        return f"m-{uuid.uuid4().hex[:12]}"

    async def test_answers_a_valid_request(self, ctx: ContractContext, driver: ChannelDriver) -> None:
        """Answers a valid request."""
        async with ctx.workers():
            outcome = await driver.send(ctx, "hello", message_id=self.mid())
            assert 200 <= outcome.status < 300, outcome
            replies = outcome.replies or (await driver.delivered(ctx, 1) if driver.push else [])
        assert replies == [GREETING]
        transcript = await ctx.transcript()
        assert [(d, t) for d, t, _ in transcript] == [("inbound", "hello"), ("outbound", GREETING)]
        assert transcript[-1][2] == "sent", transcript

    async def test_refuses_forged_requests_and_stores_nothing(
        self, ctx: ContractContext, driver: ChannelDriver
    ) -> None:
        """Refuses forged requests and stores nothing."""
        outcome = await driver.send(ctx, "hello", message_id=self.mid(), forged=True)
        assert outcome.status in (401, 403), outcome
        assert await ctx.transcript() == []

    async def test_refuses_malformed_requests_and_stores_nothing(
        self, ctx: ContractContext, driver: ChannelDriver
    ) -> None:
        """Refuses malformed requests and stores nothing."""
        outcome = await driver.send_malformed(ctx)
        assert 400 <= outcome.status < 500, outcome
        assert await ctx.transcript() == []

    async def test_refuses_unknown_bots_and_bots_without_the_channel(
        self, ctx: ContractContext, driver: ChannelDriver
    ) -> None:
        """Refuses unknown bots and bots without the channel."""
        unknown = await driver.send(ctx, "hello", message_id=self.mid(), bot="acme/nobody")
        assert unknown.status == 404, unknown
        await disable(ctx.services, ctx.demo, ctx.services.host.registry.owner("channel", driver.channel) or "")
        disabled = await driver.send(ctx, "hello", message_id=self.mid())
        assert disabled.status in (403, 404), disabled
        assert await ctx.transcript() == []

    async def test_stores_the_message_before_it_answers(self, ctx: ContractContext, driver: ChannelDriver) -> None:
        """Stores the message before it answers."""
        outcome = await driver.send(ctx, "hello", message_id=self.mid())
        assert 200 <= outcome.status < 300, outcome
        transcript = await ctx.transcript()
        assert transcript[0][:2] == ("inbound", "hello"), "stored by the time the request was answered"
        if not driver.push or outcome.replies:
            assert outcome.replies == [GREETING]
            return
        assert transcript == [("inbound", "hello", "received")], "no worker ran yet: the turn waits on the queue"
        async with ctx.workers():
            assert await driver.delivered(ctx, 1) == [GREETING], "the queued turn ran once a worker started"

    async def test_a_retried_request_runs_no_second_turn(self, ctx: ContractContext, driver: ChannelDriver) -> None:
        """A retried request runs no second turn."""
        message_id = self.mid()
        async with ctx.workers():
            first = await driver.send(ctx, "hello", message_id=message_id)
            if driver.push:
                await driver.delivered(ctx, 1)
            second = await driver.send(ctx, "hello", message_id=message_id)
            assert 200 <= first.status < 300, first
            assert 200 <= second.status < 300, second
            assert second.replies == first.replies, "a retried request is answered like the first"
            if driver.push:
                await wait_until(lambda: settled(ctx.services, ctx.demo), what="every turn and delivery to settle")
                assert await driver.delivered(ctx, 1) == [GREETING], "the end user got one reply, not two"
        transcript = await ctx.transcript()
        assert [(d, t) for d, t, _ in transcript] == [("inbound", "hello"), ("outbound", GREETING)]

    async def test_delivers_through_the_queue_with_retries(self, ctx: ContractContext, driver: ChannelDriver) -> None:
        """Delivers through the queue with retries."""
        if not driver.push:
            pytest.skip(f"the {driver.channel} channel answers in the response: nothing to retry")
        driver.fail_deliveries(ctx, 2)
        async with ctx.workers():
            outcome = await driver.send(ctx, "hello", message_id=self.mid())
            assert 200 <= outcome.status < 300, outcome
            assert outcome.replies == [], outcome
            assert await driver.delivered(ctx, 1) == [GREETING]
            await wait_until(lambda: settled(ctx.services, ctx.demo), what="every turn and delivery to settle")
            assert await driver.delivered(ctx, 1) == [GREETING], "exactly one copy reached the end user"
        transcript = await ctx.transcript()
        assert transcript[-1] == ("outbound", GREETING, "sent")
        state = await ctx.services.deliveries.parts.dead_letters(ctx.demo.tenant.id, ctx.demo.bot.id)
        assert state == [], "a delivery that succeeded on its third attempt is no dead letter"
