"""Chat routes: REST chat, the web chat WebSocket, and the chat page."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from html import escape
from importlib import resources
from typing import Any

import msgspec
from litestar import Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    WebSocketDisconnect,
)
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from botloom.channels.rest import RestChannel, RestMessage
from botloom.core.definitions import ChannelAdapter, ChannelRejected, ChannelRequest
from botloom.core.domain import Bot
from botloom.runtime.runner import TurnResult
from botloom.runtime.services import Services
from botloom.server.auth import public_bot, visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep
from botloom.server.paths import bot_ref

logger = logging.getLogger(__name__)

CHAT_PAGE = resources.files("botloom.server") / "static" / "chat.html"


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the bot's answer."""

    id: str
    text: str


class ChatAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a REST chat message."""

    conversation_id: str
    message_id: str | None
    replies: list[Reply]
    intent: str | None
    confidence: float
    escalated: bool
    duplicate: bool = False
    """True when this message id was seen before: the replies are those of its first delivery."""


async def channel_for(services: Services, bot: Bot, name: str) -> tuple[ChannelAdapter, dict[str, Any]]:
    """The bot's enabled channel ``name`` and its config; 403 when the bot has not enabled it."""
    adapter = services.host.registry.channels.get(name)
    owner = services.host.registry.owner("channel", name)
    setting = await services.store.plugin_settings.get(bot.tenant_id, bot.id, owner) if owner else None
    if adapter is None or setting is None or not setting.enabled:
        raise PermissionDeniedException(f"the {name} channel is not enabled for this bot")
    return adapter, dict(setting.config)


def chat_answer(result: TurnResult) -> ChatAnswer:
    """The JSON answer for a turn's result."""
    return ChatAnswer(
        conversation_id=result.conversation_id,
        message_id=result.message_id,
        replies=[Reply(id=r.id, text=r.text) for r in result.replies],
        intent=result.intent,
        confidence=result.confidence,
        escalated=result.escalated,
        duplicate=result.duplicate,
    )


async def mark_sent(services: Services, bot: Bot, result: TurnResult) -> None:
    """Record that replies answered in a response or on a socket were delivered."""
    for reply in result.replies:
        if reply.status == "pending":
            await services.store.messages.set_status(bot.tenant_id, reply.id, "sent")


@post(
    "/bots/{bot:str}/messages",
    status_code=HTTP_200_OK,
    summary="Send a message to a bot and get its replies",
    raises=[ClientException, NotAuthorizedException, NotFoundException, PermissionDeniedException],
    tags=["chat"],
)
async def rest_chat(
    data: JSONBody[RestMessage], bot: FromPath[str], principal: PrincipalDep, services: ServicesDep
) -> ChatAnswer:
    """Run one turn: ``{"text": "...", "conversation_id": null, "user": null, "message_id": null}``.

    A new conversation starts when no ``conversation_id`` is given. A retried
    request with the same ``message_id`` is answered with the first replies and
    runs nothing. The bot must enable the ``rest`` plugin.
    """
    found = await visible_bot(services, principal, bot)
    adapter, _ = await channel_for(services, found, "rest")
    try:
        message = adapter.message(data) if isinstance(adapter, RestChannel) else RestChannel().message(data)
    except ChannelRejected as exc:
        raise ClientException(exc.detail, status_code=exc.status) from None
    conversation_id, conversation = message.conversation_key, None
    if conversation_id is None:
        version = services.runner.state_version(found)
        conversation = await services.store.conversations.create(
            found.tenant_id, found.id, "rest", message.sender, state_version=version
        )
        conversation_id = conversation.id
    try:
        result = await services.runner.answer(
            found, message, conversation_id=conversation_id, conversation=conversation
        )
    except LookupError:
        raise NotFoundException(f"no conversation {conversation_id!r} for this bot") from None
    await mark_sent(services, found, result)
    return chat_answer(result)


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a browser ``Origin`` may use a bot's web chat: same host, or listed by the bot."""
    if origin is None:
        return True  # not a browser (or a same-origin request that sent none)
    if host and origin.split("://", 1)[-1] == host:
        return True
    return origin in allowed


@websocket("/api/v1/bots/{bot:str}/ws")
async def chat_socket(socket: WebSocket[Any, Any, Any], bot: FromPath[str], services: ServicesDep) -> None:
    """The web chat WebSocket (see :mod:`botloom.channels.webchat` for the frames)."""
    try:
        found = await public_bot(services, bot)
        adapter, config = await channel_for(services, found, "webchat")
    except (NotFoundException, PermissionDeniedException) as exc:
        await socket.close(code=4404, reason=str(exc.detail)[:120])
        return
    allowed = list(config.get("allowed_origins") or []) + list(found.settings.allowed_origins)
    if not origin_allowed(socket.headers.get("origin"), socket.headers.get("host"), allowed):
        await socket.close(code=4403, reason="origin not allowed")
        return
    await socket.accept()
    session = _SocketSession(socket, services, found, adapter, int(config.get("messages_per_minute", 30)))
    try:
        await session.run()
    except WebSocketDisconnect:
        return


class _SocketSession:
    """One open chat socket: a conversation, its rate limit, and the frames."""

    def __init__(
        self, socket: WebSocket[Any, Any, Any], services: Services, bot: Bot, adapter: ChannelAdapter, per_minute: int
    ) -> None:
        self.socket = socket
        self.services = services
        self.bot = bot
        self.adapter = adapter
        self.per_minute = per_minute
        self.sent: deque[float] = deque()
        self.conversation_id: str | None = None
        self.user = "web-user"

    async def send(self, **frame: Any) -> None:
        await self.socket.send_text(json.dumps(frame))

    def limited(self) -> bool:
        now = time.monotonic()
        while self.sent and now - self.sent[0] > 60:
            self.sent.popleft()
        if len(self.sent) >= self.per_minute:
            return True
        self.sent.append(now)
        return False

    async def run(self) -> None:
        from botloom.channels.webchat import Hello, Message

        decode = self.adapter.decode
        while True:
            raw = await self.socket.receive_text()
            try:
                frame = decode(raw)
            except ChannelRejected as exc:
                await self.send(type="error", detail=exc.detail)
                continue
            if isinstance(frame, Hello):
                await self.hello(frame.conversation_id, frame.user)
            elif isinstance(frame, Message):
                if self.conversation_id is None:
                    await self.hello(None, None)
                if self.limited():
                    await self.send(type="error", detail="too many messages: wait a moment and try again")
                    continue
                await self.message(frame.id, raw)

    async def hello(self, conversation_id: str | None, user: str | None) -> None:
        store = self.services.store
        self.user = (user or "web-user")[:200]
        conversation = None
        if conversation_id:
            conversation = await store.conversations.get(self.bot.tenant_id, conversation_id)
            if conversation is not None and (conversation.bot_id != self.bot.id or conversation.channel != "webchat"):
                conversation = None
        if conversation is None:
            version = self.services.runner.state_version(self.bot)
            conversation = await store.conversations.create(
                self.bot.tenant_id, self.bot.id, "webchat", self.user, state_version=version
            )
        self.conversation_id = conversation.id
        history = await store.messages.list_all(self.bot.tenant_id, conversation.id, limit=200)
        await self.send(
            type="ready",
            conversation_id=conversation.id,
            history=[
                {"role": "user" if m.direction == "inbound" else "bot", "text": m.text, "id": m.idempotency_key or m.id}
                for m in history
            ],
        )

    async def message(self, client_id: str, raw: str) -> None:
        request = ChannelRequest(method="WS", url="", headers={"x-botloom-user": self.user}, body=raw.encode())
        try:
            (message,) = self.adapter.parse(request, {})
        except ChannelRejected as exc:
            await self.send(type="error", detail=exc.detail)
            return
        await self.send(type="typing")
        result = await self.services.runner.answer(self.bot, message, conversation_id=self.conversation_id)
        await mark_sent(self.services, self.bot, result)
        for reply in result.replies:
            await self.send(type="reply", id=reply.id, text=reply.text)
        await self.send(type="done", id=client_id, intent=result.intent, escalated=result.escalated)


@get(
    "/chat/{bot:str}",
    media_type="text/html",
    summary="The web chat page of a bot",
    tags=["chat"],
    include_in_schema=True,
)
async def chat_page(bot: FromPath[str], services: ServicesDep) -> Response[str]:
    """A small, accessible chat page that talks to the bot over its WebSocket; embeddable in an iframe."""
    found = await public_bot(services, bot)
    _, config = await channel_for(services, found, "webchat")
    page = CHAT_PAGE.read_text(encoding="utf-8")
    settings = {
        "bot": bot_ref(bot),
        "socket": f"/api/v1/bots/{bot_ref(bot)}/ws",
        "title": config.get("title", "Chat"),
        "welcome": config.get("welcome"),
        "color": config.get("color", "#4f46e5"),
    }
    page = page.replace("{{TITLE}}", escape(str(settings["title"])))
    page = page.replace("{{COLOR}}", escape(str(settings["color"])))
    page = page.replace("{{CONFIG}}", json.dumps(settings).replace("<", "\\u003c"))
    allowed = " ".join(["'self'", *config.get("allowed_origins", []), *found.settings.allowed_origins])
    headers = {
        "Content-Security-Policy": (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
            f"connect-src 'self' ws: wss:; frame-ancestors {allowed}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


CHAT_API_HANDLERS = [rest_chat]
CHAT_PUBLIC_HANDLERS = [chat_socket, chat_page]
