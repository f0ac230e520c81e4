"""The web chat channel: the page ``/chat/{bot}`` and its WebSocket ``/api/v1/bots/{bot}/ws``.

The page and socket are public (end users have no API keys) for a bot that
enables this plugin; they are protected by the bot's allowed origins and by rate
limits. Frames are JSON:

* client → server: ``{"type": "hello", "conversation_id": null | "...", "user": "..."}``,
  then ``{"type": "message", "id": "<client id>", "text": "..."}``;
* server → client: ``{"type": "ready", "conversation_id": "...", "history": [...]}``,
  ``{"type": "typing"}``, ``{"type": "reply", "text": "...", "id": "..."}``,
  ``{"type": "done", "for": "<client id>", "intent": ..., "escalated": ...}``,
  ``{"type": "error", "detail": "..."}``.

A message's client id makes a resend after a dropped connection idempotent.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from botloom import ChannelAdapter, ChannelRejected, ChannelRequest, InboundMessage, OutboundMessage, hookimpl

MAX_TEXT = 4000
MAX_FRAME = 16_384


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


class WebChatChannel(ChannelAdapter):
    """Decodes web chat frames; replies go back on the open socket."""

    name: ClassVar[str] = "webchat"
    delivery: ClassVar[str] = "response"

    def verify(self, request: ChannelRequest, config: Any) -> None:
        """The socket's origin is checked by the server against ``allowed_origins`` when it opens."""

    def decode(self, frame: bytes | str) -> Frame:
        """A validated frame; raises :class:`ChannelRejected` (400) saying what is wrong."""
        data = frame.encode() if isinstance(frame, str) else frame
        if len(data) > MAX_FRAME:
            raise ChannelRejected(413, f"frame larger than {MAX_FRAME} bytes")
        try:
            return msgspec.json.decode(data, type=Frame)  # type: ignore[arg-type]
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ChannelRejected(400, f"invalid frame: {exc}") from None

    def parse(self, request: ChannelRequest, config: Any) -> list[InboundMessage]:
        """One inbound message from a ``message`` frame (``request.body``)."""
        frame = self.decode(request.body)
        if not isinstance(frame, Message):
            raise ChannelRejected(400, "expected a message frame")
        text = frame.text.strip()
        if not text:
            raise ChannelRejected(400, "message text is blank")
        return [
            InboundMessage(
                channel=self.name,
                text=text,
                sender=request.headers.get("x-botloom-user", "web-user"),
                idempotency_key=frame.id,
            )
        ]

    async def send(self, message: OutboundMessage, config: Any) -> str | None:
        """Not used: replies go out on the open socket (``delivery = "response"``)."""
        raise NotImplementedError("web chat replies are sent on the open socket")


@hookimpl
def register_channels() -> list[ChannelAdapter]:
    """The web chat channel."""
    return [WebChatChannel()]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The chat page's settings."""
    return WebChatConfig
