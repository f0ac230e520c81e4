"""The web chat channel: the page ``/chat/{bot}`` and its WebSocket ``/api/v1/bots/{bot}/ws``.

A socket channel. The page and socket are public (end users have no API keys) for
a bot that enables this plugin; they are protected by the bot's allowed origins
and by rate limits. Frames are JSON:

* client → server: ``{"type": "hello", "conversation_id": null | "...", "user": "..."}``,
  then ``{"type": "message", "id": "<client id>", "text": "..."}``;
* server → client: ``{"type": "ready", "conversation_id": "...", "history": [...]}``,
  ``{"type": "typing"}``, ``{"type": "reply", "text": "...", "id": "..."}``,
  ``{"type": "done", "id": "<client id>", "intent": ..., "escalated": ...}``,
  ``{"type": "error", "detail": "..."}``; and live, outside the user's turns (a person took over):
  ``{"type": "agent_joined", "name": "..."}``, ``{"type": "reply", "from": "agent", "name": "...",
  "text": "...", "id": "..."}``, ``{"type": "bot_back", "text": null | "..."}`` (only once the bot has really
  taken the conversation back: a hand-back whose resume is being retried shows nothing until it is done), then
  ``{"type": "reply", "text": "...", "id": "..."}`` for each answer to what the user wrote meanwhile.

A message's client id makes a resend after a dropped connection idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from html import escape
from importlib import resources
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from botloom import (
    ChannelAdapter,
    ChannelHost,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    ChannelRoute,
    ChannelSocket,
    ConversationUpdate,
    InboundMessage,
    hookimpl,
)

logger = logging.getLogger(__name__)

FOLLOW_RETRY_FIRST = 0.2
"""Seconds before following a conversation's live updates again after its subscription failed (doubling)."""
FOLLOW_RETRY_MAX = 5.0
MAX_TEXT = 4000
ANONYMOUS = "web-user"
"""The sender of a user the page does not name: every anonymous user's, so it names no contact (only ids do)."""
MAX_FRAME = 16_384
PAGE = resources.files("botloom.channels") / "webchat.html"


class WebChatConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a bot's chat page looks and who may embed it."""

    title: Annotated[str, msgspec.Meta(max_length=80)] = "Chat"
    welcome: Annotated[str, msgspec.Meta(max_length=500)] | None = "Hi! How can I help you?"
    color: Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$")] = "#4f46e5"
    allowed_origins: tuple[Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s]+$")], ...] = ()
    """Sites that may embed the page or open the socket, besides this server itself."""
    messages_per_minute: Annotated[int, msgspec.Meta(ge=1, le=600)] = 30


class Hello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    """The first frame: which conversation to continue."""

    conversation_id: str | None = None
    user: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True, tag="message"):
    """A user's message."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


Frame = Hello | Message
FrameType = Literal["hello", "message"]


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a browser ``Origin`` may use a bot's web chat: same host, or listed by the bot."""
    if origin is None:
        return True  # not a browser (or a same-origin request that sent none)
    if host and origin.split("://", 1)[-1] == host:
        return True
    return origin in allowed


def _allowed_origins(request: ChannelRequest, config: WebChatConfig) -> list[str]:
    bot_origins = list(request.bot.settings.allowed_origins) if request.bot is not None else []
    return [*config.allowed_origins, *bot_origins]


class WebChatChannel(ChannelAdapter[WebChatConfig]):
    """Decodes web chat frames; the replies go back on the open socket."""

    name: ClassVar[str] = "webchat"
    anonymous_sender: ClassVar[str | None] = ANONYMOUS
    kind: ClassVar[ChannelKind] = "socket"
    conversations: ClassVar[Literal["key", "id"]] = "id"

    def routes(self) -> tuple[ChannelRoute, ...]:
        """The socket ``/api/v1/bots/{bot}/ws`` and the page ``/chat/{bot}``."""
        return (
            ChannelRoute(path="/api/v1/bots/{bot}/ws", method="WEBSOCKET", summary="The web chat WebSocket"),
            ChannelRoute(
                path="/chat/{bot}",
                method="GET",
                summary="The web chat page of a bot",
                description=(
                    "A small, accessible chat page that talks to the bot over its WebSocket; embeddable in an iframe."
                ),
                tags=("chat",),
            ),
        )

    def verify(self, request: ChannelRequest, config: WebChatConfig) -> None:
        """A browser may open the socket from this server or from the bot's allowed origins (else 403)."""
        origin, host = request.headers.get("origin"), request.headers.get("host")
        if not origin_allowed(origin, host, _allowed_origins(request, config)):
            raise ChannelRejected(403, "origin not allowed")

    def decode(self, frame: bytes | str) -> Frame:
        """A validated frame; raises :class:`ChannelRejected` (400) saying what is wrong."""
        data = frame.encode() if isinstance(frame, str) else frame
        if len(data) > MAX_FRAME:
            raise ChannelRejected(413, f"frame larger than {MAX_FRAME} bytes")
        try:
            return msgspec.json.decode(data, type=Frame)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ChannelRejected(400, f"invalid frame: {exc}") from None

    def parse(self, request: ChannelRequest, config: WebChatConfig) -> list[InboundMessage]:
        """One inbound message from a ``message`` frame (``request.body``); the sender in ``x-botloom-user``."""
        frame = self.decode(request.body)
        if not isinstance(frame, Message):
            raise ChannelRejected(400, "expected a message frame")
        return [self.message(frame, request.headers.get("x-botloom-user", ANONYMOUS), None)]

    def message(self, frame: Message, user: str, conversation_id: str | None) -> InboundMessage:
        """The inbound message of a ``message`` frame; :class:`ChannelRejected` for blank text."""
        text = frame.text.strip()
        if not text:
            raise ChannelRejected(400, "message text is blank")
        return InboundMessage(
            channel=self.name, text=text, sender=user, conversation_key=conversation_id, idempotency_key=frame.id
        )

    async def converse(self, socket: ChannelSocket, host: ChannelHost, config: WebChatConfig) -> None:
        """Answer frames until the client goes away (see the module docstring)."""
        await _Session(self, socket, host, config.messages_per_minute).run()

    def page(self, request: ChannelRequest, config: WebChatConfig) -> ChannelResponse:
        """The chat page, configured for the bot, with a content security policy that names who may embed it."""
        ref = request.bot_ref
        settings = {
            "bot": ref,
            "socket": f"/api/v1/bots/{ref}/ws",
            "title": config.title,
            "welcome": config.welcome,
            "color": config.color,
        }
        page = PAGE.read_text(encoding="utf-8")
        page = page.replace("{{TITLE}}", escape(config.title))
        page = page.replace("{{COLOR}}", escape(config.color))
        page = page.replace("{{CONFIG}}", json.dumps(settings).replace("<", "\\u003c"))
        allowed = " ".join(["'self'", *_allowed_origins(request, config)])
        headers = {
            "Content-Security-Policy": (
                "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                f"connect-src 'self' ws: wss:; frame-ancestors {allowed}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        return ChannelResponse(status=200, body=page.encode(), media_type="text/html; charset=utf-8", headers=headers)


class _Session:
    """One open chat socket: a conversation, its rate limit, and the frames."""

    def __init__(self, channel: WebChatChannel, socket: ChannelSocket, host: ChannelHost, per_minute: int) -> None:
        self.channel = channel
        self.socket = socket
        self.host = host
        self.per_minute = per_minute
        self.sent: deque[float] = deque()
        self.conversation_id: str | None = None
        self.user = ANONYMOUS
        self.sending = asyncio.Lock()  # the user's turns and live updates send on the same socket
        self.following: asyncio.Task[None] | None = None

    async def send(self, **frame: Any) -> None:
        async with self.sending:
            await self.socket.send(json.dumps(frame))

    def follow(self, conversation_id: str) -> None:
        """Show the conversation's live updates (a person joined, their messages, the bot back) from now on."""
        self.stop_following()
        self.following = asyncio.create_task(self._follow(conversation_id))

    async def _follow(self, conversation_id: str) -> None:
        """Follow the conversation until the socket closes; a failed subscription is tried again, backing off."""
        wait = FOLLOW_RETRY_FIRST
        while True:
            try:
                await self.host.follow(conversation_id, self.update)
            except Exception:  # the chat goes on meanwhile; live updates resume once the subscription does
                logger.warning(
                    "live updates of conversation %s failed; following again in %.1f s",
                    conversation_id,
                    wait,
                    exc_info=True,
                )
            else:
                return  # a host without live updates, or its subscription ended
            await asyncio.sleep(wait)
            wait = min(wait * 2, FOLLOW_RETRY_MAX)

    def stop_following(self) -> None:
        if self.following is not None:
            self.following.cancel()
            self.following = None

    async def update(self, update: ConversationUpdate) -> None:
        if update.kind == "agent_message":
            await self.send(type="reply", id=update.id, text=update.text, name=update.name, **{"from": "agent"})
        elif update.kind == "agent_joined":
            await self.send(type="agent_joined", name=update.name)
        elif update.kind == "bot_message":  # the bot's answer to a message written while it was taking over
            await self.send(type="reply", id=update.id, text=update.text)
        elif update.kind == "bot_back":
            await self.send(type="bot_back", text=update.text)

    def limited(self) -> bool:
        now = time.monotonic()
        while self.sent and now - self.sent[0] > 60:
            self.sent.popleft()
        if len(self.sent) >= self.per_minute:
            return True
        self.sent.append(now)
        return False

    async def run(self) -> None:
        try:
            await self.frames()
        finally:
            following, self.following = self.following, None
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await following

    async def frames(self) -> None:
        while True:
            raw = await self.socket.receive()
            try:
                frame = self.channel.decode(raw)
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
                await self.message(frame)

    async def hello(self, conversation_id: str | None, user: str | None) -> None:
        self.user = (user or ANONYMOUS)[:200]
        conversation = await self.host.open_conversation(conversation_id, self.user)
        self.conversation_id = conversation.id
        history = [{"role": m.role, "text": m.text, "id": m.id} for m in conversation.history]
        await self.send(type="ready", conversation_id=conversation.id, history=history)
        self.follow(conversation.id)

    async def message(self, frame: Message) -> None:
        try:
            message = self.channel.message(frame, self.user, self.conversation_id)
        except ChannelRejected as exc:
            await self.send(type="error", detail=exc.detail)
            return
        except ValueError as exc:  # an identifier botloom cannot keep
            await self.send(type="error", detail=f"invalid message: {exc}")
            return
        await self.send(type="typing")
        try:
            answer = await self.host.answer(message)
        except ChannelRejected as exc:
            await self.send(type="error", detail=exc.detail)
            return
        for reply in answer.replies:
            await self.send(type="reply", id=reply.id, text=reply.text)
        await self.send(type="done", id=frame.id, intent=answer.intent, escalated=answer.escalated)


@hookimpl
def register_channels() -> list[ChannelAdapter[Any]]:
    """The web chat channel."""
    return [WebChatChannel()]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The chat page's settings."""
    return WebChatConfig
