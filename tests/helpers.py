"""Small helpers shared by the tests: throw-away plugins and talking to a bot."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import httpx
import msgspec

from botloom.core.domain import Bot
from botloom.core.host import PluginHost
from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings
from botloom.runtime.runner import TurnResult
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from botloom.server.logs import configure_logging
from botloom.testing.channel_contract import configure_twilio, fast_app, transcript
from tests.twilio_peer import TwilioPeer, twilio_config

LOCAL_ENDPOINTS = "127.0.0.1,localhost"
"""``BOTLOOM_ALLOWED_ENDPOINTS`` of the test deployments: the Twilio peer, SMTP and IMAP servers run on loopback."""


def api_client(app: Any) -> httpx.AsyncClient:
    """An HTTP client calling ``app`` in the test's own event loop (no lifespan: pass services to the app).

    Litestar's ``AsyncTestClient`` runs the app on another event loop in a thread,
    where the test's connection pools cannot be used.
    """
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@contextlib.asynccontextmanager
async def twilio_client(
    settings: Settings, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app (no workers) whose demo bot takes Twilio webhooks in ``rest`` mode, replying to ``peer``.

    Its requests carry the demo bot's API key.
    """
    async with api_client(fast_app(settings, services)) as client:
        response = await configure_twilio(client, demo, twilio_config(peer))
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {demo.api_key}"
        yield client


async def outbound(services: Services, demo: DemoInfo) -> list[tuple[str, str]]:
    """``(text, status)`` of the demo bot's outbound messages."""
    return [(text, status) for direction, text, status in await transcript(services, demo) if direction == "outbound"]


@contextlib.contextmanager
def captured_logs(settings: Settings, log_format: str) -> Iterator[io.StringIO]:
    """What botloom's configured logging writes (``log_format``, level INFO), in a string; the root logger after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(msgspec.structs.replace(settings, log_format=log_format, log_level="INFO"))
    output = io.StringIO()
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(output)
    try:
        yield output
    finally:
        for configured in list(root.handlers):
            root.removeHandler(configured)
        for previous in saved[0]:
            root.addHandler(previous)
        root.setLevel(saved[1])


def host_with(*plugins: tuple[str, object]) -> PluginHost:
    """A host with the installed plugins plus the given ``(name, plugin)`` pairs."""
    host = PluginHost.discover()
    for name, plugin in plugins:
        assert host.register(plugin, name), host.problems
    return host


async def enable(services: Services, bot: Bot, *plugins: str, config: dict[str, Any] | None = None) -> None:
    """Enable plugins for a bot with an empty (or the given) config."""
    for plugin in plugins:
        await services.store.plugin_settings.put(
            bot.tenant_id, bot.id, plugin, enabled=True, config=config or {}, secrets={}
        )


async def disable(services: Services, bot: Bot, *plugins: str) -> None:
    """Disable plugins for a bot."""
    for plugin in plugins:
        await services.store.plugin_settings.put(bot.tenant_id, bot.id, plugin, enabled=False, config={}, secrets={})


class Chat:
    """One end user's conversation with a bot through the turn runner."""

    def __init__(self, services: Services, bot: Bot, user: str = "user-1", channel: str = "test") -> None:
        self.services = services
        self.bot = bot
        self.user = user
        self.channel = channel
        self.conversation_id: str | None = None
        self.results: list[TurnResult] = []

    async def say(self, text: str, *, key: str | None = None) -> TurnResult:
        """Send ``text``; returns the turn's result."""
        message = InboundMessage(channel=self.channel, text=text, sender=self.user, idempotency_key=key)
        if self.conversation_id is None:
            conversation = await self.services.store.conversations.create(
                self.bot.tenant_id, self.bot.id, self.channel, self.user
            )
            self.conversation_id = conversation.id
        result = await self.services.inbound.answer(self.bot, message, conversation_id=self.conversation_id)
        self.results.append(result)
        return result

    async def texts(self, text: str) -> list[str]:
        """Send ``text``; returns the reply texts."""
        return [r.text for r in (await self.say(text)).replies]

    async def transcript(self) -> list[tuple[str, str]]:
        """``(direction, text)`` of every stored message of the conversation."""
        assert self.conversation_id is not None
        messages = await self.services.store.messages.list_all(self.bot.tenant_id, self.conversation_id)
        return [(m.direction, m.text) for m in messages]

    async def state(self) -> dict[str, Any]:
        """The conversation's latest checkpointed graph state."""
        from botloom.runtime.runner import thread_id

        assert self.conversation_id is not None
        graph = self.services.graphs.get(self.bot.graph)
        config = {"configurable": {"thread_id": thread_id(self.bot.tenant_id, self.bot.id, self.conversation_id)}}
        snapshot = await graph.aget_state(config)
        return dict(snapshot.values)


async def gather_all(coros: Iterable[Any]) -> Sequence[Any]:
    """``asyncio.gather`` that fails on the first exception."""
    return await asyncio.gather(*coros)


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds naming ``what``; the seconds it took."""
    began = time.monotonic()
    while not await condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - began
