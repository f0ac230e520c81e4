"""Live updates: Litestar's channels plugin carries each tenant's events to the desk's WebSockets.

Events are published by :class:`botloom.runtime.events.Events` in whichever process
emits them (a server, a worker): with ``BOTLOOM_REDIS_URL`` as a Redis ``PUBLISH`` on
the tenant's channel, which :class:`~litestar.channels.backends.redis.RedisChannelsPubSubBackend`
listens to; without Redis as a PostgreSQL ``NOTIFY``, which
:class:`~litestar.channels.backends.psycopg.PsycoPgChannelsBackend` listens to. Either
way every server process's sockets see every event of their tenant.

``WS /api/v1/desk/ws``: browsers cannot set ``Authorization`` on a WebSocket, so
the client's **first frame** authenticates: ``{"token": "<agent token or tenant API
key>"}`` (the operator adds ``"tenant": "<slug or id>"``), within 10 seconds. The
server answers ``{"type": "ready", "tenant_id", "agent_id"}`` and then
``{"type": "event", "event": <envelope>}`` for each of the tenant's events (the
envelope of docs/webhooks.md); ``{"type": "ping"}`` is answered ``{"type": "pong"}``.
A refused token gets ``{"type": "error", "detail"}`` and close code 4401. The token
never travels in the URL, so it is not written to access logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.base import ChannelsBackend
from litestar.config.app import AppConfig
from litestar.exceptions import WebSocketDisconnect

from botloom.core.channels import ChannelConversation, ChannelHost, ConversationUpdate, TurnAnswer
from botloom.core.domain import is_slug
from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings
from botloom.core.storage.repositories import as_uuid
from botloom.runtime.events import live_channel
from botloom.runtime.services import Services

logger = logging.getLogger(__name__)

AUTH_WAIT = 10.0
"""Seconds a new desk socket has to send its token."""
MAX_FRAME = 4096
"""Bytes of a client frame at most (a token, a ping)."""
REFUSED = 4401


class DeskChannels(ChannelsPlugin):
    """Litestar's channels plugin on Redis (when configured) or PostgreSQL, for each tenant's live events.

    The PostgreSQL backend needs the database's URL, known only once the app's
    services are open (an embedded database starts then): it is read from the
    services just before the backend starts.
    """

    def __init__(self, settings: Settings) -> None:
        backend = _redis_backend(settings.redis_url) if settings.redis_url else _postgres_backend()
        self.on_redis = bool(settings.redis_url)
        self.redis = getattr(backend, "_redis", None)
        super().__init__(backend=backend, arbitrary_channels_allowed=True, subscriber_max_backlog=1000)

    async def __aexit__(self, *exc_info: Any) -> None:
        """Stop the plugin, then close the Redis client it was given."""
        await super().__aexit__(*exc_info)
        if self.redis is not None:
            await self.redis.aclose()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Register the plugin (a lifespan manager), just after one giving the PostgreSQL backend its URL."""
        app_config.lifespan.append(self._locate_database)
        return super().on_app_init(app_config)

    @contextlib.asynccontextmanager
    async def _locate_database(self, app: Any) -> AsyncIterator[None]:
        if not self.on_redis:  # the app's services are open: its lifespan managers run in order
            services: Services = app.state.services
            self._backend._pg_dsn = services.db.url  # type: ignore[attr-defined]
        yield


def _redis_backend(url: str) -> ChannelsBackend:
    """Litestar's Redis pub/sub backend, subscribing again on a new connection when its connection is lost."""
    from litestar.channels.backends.redis import RedisChannelsPubSubBackend
    from redis.asyncio import Redis

    class ResilientRedis(RedisChannelsPubSubBackend):
        """Litestar's backend, subscribing one change at a time and again after a lost connection.

        redis-py's ``PubSub`` opens its connection on the first command: two concurrent
        first subscribes (two desks reconnecting after a restart) would each open one,
        leaving one subscription on a connection nobody reads.
        """

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._changing = asyncio.Lock()

        async def subscribe(self, channels: Iterable[str]) -> None:
            async with self._changing:
                await super().subscribe(channels)

        async def unsubscribe(self, channels: Iterable[str]) -> None:
            async with self._changing:
                await super().unsubscribe(channels)

        async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
            while True:
                try:
                    async for item in super().stream_events():
                        yield item
                except Exception:  # the pub/sub connection died (a Redis restart): subscribe again
                    logger.warning("live events: the Redis subscription failed; subscribing again", exc_info=True)
                    await self._subscribe_again()

        async def _subscribe_again(self) -> None:
            old = self._pub_sub
            channels = [c.decode() if isinstance(c, bytes) else str(c) for c in old.channels]
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]
            self._RedisChannelsPubSubBackend__pub_sub = None  # the base class makes a new one on first use
            wait = 0.5
            while True:
                await asyncio.sleep(wait)
                try:
                    if channels:
                        await self.subscribe(channels)
                    return
                except Exception:
                    logger.warning("live events: Redis unreachable; trying again in %.0f s", wait, exc_info=True)
                    wait = min(wait * 2, 10.0)

    return ResilientRedis(redis=Redis.from_url(url))


def _postgres_backend() -> ChannelsBackend:
    """Litestar's PostgreSQL backend, listening again on a new connection when its connection is lost."""
    from litestar.channels.backends.psycopg import PsycoPgChannelsBackend

    class ResilientPostgres(PsycoPgChannelsBackend):
        async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
            while True:
                try:
                    async for item in super().stream_events():
                        yield item
                except Exception:  # the listener's connection died (a database restart): listen again
                    logger.warning("live events: the PostgreSQL listener failed; listening again", exc_info=True)
                    await self._listen_again()

        async def _listen_again(self) -> None:
            channels = set(self._subscribed_channels)
            with contextlib.suppress(Exception):
                await self.on_shutdown()
            wait = 0.5
            while True:
                await asyncio.sleep(wait)
                try:
                    await self.on_startup()
                    await self.subscribe(channels)
                    return
                except Exception:
                    logger.warning("live events: PostgreSQL unreachable; trying again in %.0f s", wait, exc_info=True)
                    with contextlib.suppress(Exception):
                        await self.on_shutdown()
                    wait = min(wait * 2, 10.0)

    return ResilientPostgres(pg_dsn="")


async def socket_tenant(services: Services, frame: Any) -> tuple[str, str | None] | None:
    """``(tenant id, agent id)`` the first frame's token stands for; ``None`` when it stands for nothing."""
    if not isinstance(frame, dict):
        return None
    token, tenant_ref = frame.get("token"), frame.get("tenant")
    if not isinstance(token, str) or not token or len(token) > 500:
        return None
    admin = services.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        if not isinstance(tenant_ref, str):
            return None
        tenant = None
        if as_uuid(tenant_ref) is not None:
            tenant = await services.store.tenants.get(tenant_ref)
        elif is_slug(tenant_ref):
            tenant = await services.store.tenants.get_by_slug(tenant_ref)
        return (tenant.id, None) if tenant else None
    agents = getattr(services.store, "agents", None)
    if agents is not None:
        agent = await agents.authenticate(token)
        if agent is not None:
            return agent.tenant_id, agent.id
    key = await services.store.api_keys.authenticate(token)
    return (key.tenant_id, None) if key is not None else None


@websocket("/api/v1/desk/ws", opt={"desk": True})
async def desk_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """The desk's live events: authenticate with the first frame, then receive the tenant's events."""
    services: Services = socket.app.state.services
    channels = socket.app.plugins.get(DeskChannels)  # exactly this type (not an inferred dependency: deprecated)
    await socket.accept()
    try:
        frame = msgspec.json.decode(await asyncio.wait_for(_frame(socket), AUTH_WAIT))
        who = await socket_tenant(services, frame)
    except (TimeoutError, msgspec.DecodeError, ValueError):
        who = None
    except WebSocketDisconnect:
        return
    if who is None:
        with contextlib.suppress(Exception):
            await socket.send_json({"type": "error", "detail": 'send {"token": ...} with a valid token first'})
            await socket.close(code=REFUSED, reason="unauthorized")
        return
    tenant_id, agent_id = who
    async with channels.start_subscription([live_channel(tenant_id)]) as subscriber:
        await socket.send_json({"type": "ready", "tenant_id": tenant_id, "agent_id": agent_id})

        async def forward() -> None:
            async for message in subscriber.iter_events():
                text = message.decode() if isinstance(message, bytes) else str(message)
                await socket.send_text('{"type":"event","event":' + text + "}")

        forwarding = asyncio.create_task(forward())
        try:
            while True:
                raw = await _frame(socket)
                try:
                    kind = msgspec.json.decode(raw).get("type")
                except (msgspec.DecodeError, AttributeError):
                    kind = None
                if kind == "ping":
                    await socket.send_json({"type": "pong"})
        except (WebSocketDisconnect, ValueError):  # gone, or a frame too large: the socket ends
            pass
        finally:
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forwarding


# -- the end user's side: a socket channel's host with live updates ---------------------------

JOINED = frozenset({"handover.claimed"})
CLOSED = frozenset({"handover.returned_to_bot", "handover.resolved", "handover.timed_out_to_bot"})
"""A handover closed: the bot is back, unless the event says its resume failed (``"resumed": false``)."""
BOT_BACK_LATE = "handover.resumed"
"""The bot took the conversation back after failed resumes (retried, or given back)."""


def bot_back(event: dict[str, Any]) -> bool:
    """Whether the event says the bot really has the conversation back (a close whose resume failed does not)."""
    kind, data = event.get("kind"), event.get("data")
    if kind == BOT_BACK_LATE:
        return True
    return kind in CLOSED and not (isinstance(data, dict) and data.get("resumed") is False)


def end_user_updates(event: dict[str, Any]) -> list[ConversationUpdate]:
    """What an event shows the conversation's end user, in order (never notes, never who else is queued).

    "The bot is back" only once the bot has taken the conversation back: a handover closed while
    its resume fails shows nothing until the resume is done (``handover.resumed``); then the bot's
    answers to what the user wrote meanwhile follow.
    """
    kind, data = event.get("kind"), event.get("data") or {}
    if not isinstance(data, dict):
        return []
    name = data.get("agent_name") if isinstance(data.get("agent_name"), str) else None
    if kind in JOINED:
        return [ConversationUpdate(kind="agent_joined", name=name)]
    if kind == "handover.message" and isinstance(data.get("text"), str):
        message_id = data.get("message_id") if isinstance(data.get("message_id"), str) else None
        return [ConversationUpdate(kind="agent_message", text=data["text"], name=name, id=message_id)]
    if not bot_back(event):
        return []
    told = kind in {"handover.timed_out_to_bot", BOT_BACK_LATE} and isinstance(data.get("text"), str)
    updates = [ConversationUpdate(kind="bot_back", text=data["text"] if told else None)]
    for answer in data.get("answers") or []:
        if isinstance(answer, dict) and isinstance(answer.get("text"), str):
            message_id = answer.get("message_id") if isinstance(answer.get("message_id"), str) else None
            updates.append(ConversationUpdate(kind="bot_message", text=answer["text"], id=message_id))
    return updates


def end_user_update(event: dict[str, Any]) -> ConversationUpdate | None:
    """The first of :func:`end_user_updates`, if any."""
    updates = end_user_updates(event)
    return updates[0] if updates else None


CATCH_UP_EVERY = 10.0
"""Seconds between reads of the stored events while a person is involved, in case a live notice was lost."""
WITH_PERSON = frozenset({"handover.waiting", "handover.assigned", "handover.claimed", "handover.message"})


def involves_person(event: dict[str, Any]) -> bool:
    """Whether the conversation is not the bot's after the event (a person has it, or its resume is pending)."""
    kind = event.get("kind")
    held = kind in {"conversation.user_message", "handover.resume_failed"}  # only while the bot does not have it
    return kind in WITH_PERSON or held or (kind in CLOSED and not bot_back(event))


class LiveHost(ChannelHost):
    """A socket channel's host (the runtime's), plus :meth:`follow` through the app's channels plugin.

    Live notices are the fast path, the stored events the truth: each conversation
    keeps the sequence of the last event it showed, reads what it missed from the
    store when its subscription starts (or starts again), when a notice skips a
    sequence, and every :data:`CATCH_UP_EVERY` seconds while a person is involved;
    so a lost or late notice delays an update but never loses it, and none is shown
    twice or out of order.
    """

    def __init__(self, inner: ChannelHost, channels: ChannelsPlugin, services: Services) -> None:
        self.inner = inner
        self.bot = inner.bot
        self.channels = channels
        self.services = services
        self._shown: dict[str, int] = {}
        """Per conversation: the sequence of the last event shown (or passed over) for its user."""
        self._with_person: set[str] = set()
        self._showing = asyncio.Lock()

    async def open_conversation(self, conversation_id: str | None, user: str) -> ChannelConversation:
        """As the runtime's host does; live updates will start after the conversation's latest event."""
        conversation = await self.inner.open_conversation(conversation_id, user)
        if conversation.id not in self._shown:
            last = await self.services.store.events.last_in_conversation(self.bot.tenant_id, conversation.id)
            self._shown[conversation.id] = last.sequence if last is not None else 0
            if last is not None and involves_person(last.envelope()):
                self._with_person.add(conversation.id)
        return conversation

    async def answer(self, message: InboundMessage) -> TurnAnswer:
        """As the runtime's host does (a turn that escalates starts the periodic catch-up)."""
        answer = await self.inner.answer(message)
        if answer.escalated or answer.status == "for_agent":
            self._with_person.add(answer.conversation_id)
        return answer

    async def follow(self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]) -> None:
        """Hand ``deliver`` what the conversation's user should see of its events, in order, until cancelled."""
        tenant_id = self.bot.tenant_id
        async with self.channels.start_subscription([live_channel(tenant_id)]) as subscriber:
            await self._catch_up(conversation_id, deliver)  # what happened before the subscription held
            poller = asyncio.create_task(self._poll(conversation_id, deliver))
            try:
                async for raw in subscriber.iter_events():
                    try:
                        event = msgspec.json.decode(raw)
                    except msgspec.DecodeError:
                        continue
                    if not isinstance(event, dict) or event.get("conversation_id") != conversation_id:
                        continue
                    async with self._showing:
                        sequence, shown = event.get("sequence"), self._shown.get(conversation_id, 0)
                        if isinstance(sequence, int) and sequence <= shown:
                            continue  # shown already (read from the store)
                        if sequence == shown + 1 and not event.get("data_omitted"):
                            await self._show(conversation_id, event, deliver)
                        else:  # a gap (a notice was lost), or data left out of the notice: the store has it
                            await self._read_stored(conversation_id, deliver)
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller

    async def _poll(self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_EVERY)
            if conversation_id in self._with_person:
                try:
                    await self._catch_up(conversation_id, deliver)
                except Exception:  # the database is away: the next round tries again
                    logger.warning("live updates of conversation %s: catch-up failed", conversation_id, exc_info=True)

    async def _catch_up(self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]) -> None:
        """Show the stored events after the last one shown."""
        async with self._showing:
            await self._read_stored(conversation_id, deliver)

    async def _read_stored(
        self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]
    ) -> None:
        while True:
            after = self._shown.get(conversation_id, 0)
            events = await self.services.store.events.in_conversation(self.bot.tenant_id, conversation_id, after)
            for stored in events:
                await self._show(conversation_id, stored.envelope(), deliver)
            if len(events) < 100:
                return

    async def _show(
        self, conversation_id: str, event: dict[str, Any], deliver: Callable[[ConversationUpdate], Awaitable[object]]
    ) -> None:
        sequence = event.get("sequence")
        if isinstance(sequence, int):
            self._shown[conversation_id] = max(sequence, self._shown.get(conversation_id, 0))
        if involves_person(event):
            self._with_person.add(conversation_id)  # a pending resume too: its end must not be missed
        elif bot_back(event):
            self._with_person.discard(conversation_id)
        for update in end_user_updates(event):
            await deliver(update)


def live_host(socket: WebSocket[Any, Any, Any], inner: ChannelHost) -> ChannelHost:
    """``inner`` with live updates when the app has its channels plugin (else ``inner`` itself)."""
    try:
        channels = socket.app.plugins.get(DeskChannels)
    except KeyError:
        return inner
    return LiveHost(inner, channels, socket.app.state.services)


async def _frame(socket: WebSocket[Any, Any, Any]) -> str:
    """The next client frame (text), refused beyond :data:`MAX_FRAME` bytes."""
    data = await socket.receive_data(mode="text")
    text = data if isinstance(data, str) else data.decode()
    if len(text) > MAX_FRAME:
        raise ValueError("frame too large")
    return text


__all__ = [
    "DeskChannels",
    "LiveHost",
    "bot_back",
    "desk_socket",
    "end_user_update",
    "end_user_updates",
    "live_host",
    "socket_tenant",
]
