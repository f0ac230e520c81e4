"""The REST channel: ``POST /api/v1/bots/{bot}/messages`` answers a turn's replies in its response.

A bot must enable this plugin for its REST chat route to accept messages.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from botloom import ChannelAdapter, ChannelRejected, ChannelRequest, InboundMessage, OutboundMessage, hookimpl

MAX_TEXT = 4000


class RestMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of a REST chat request."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    conversation_id: str | None = None
    """Continue this conversation; ``null`` starts a new one."""
    user: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    """The end user's id in the caller's system."""
    message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """The caller's id for this message: a retried request with the same id is answered, not run twice."""


class RestChannel(ChannelAdapter):
    """Translates REST chat bodies into inbound messages; replies go back in the response."""

    name: ClassVar[str] = "rest"
    delivery: ClassVar[str] = "response"

    def verify(self, request: ChannelRequest, config: Any) -> None:
        """REST chat is authenticated by the API key on the route, before the channel sees it."""

    def decode(self, body: bytes) -> RestMessage:
        """The validated body; raises :class:`ChannelRejected` (400) naming what is wrong."""
        try:
            return msgspec.json.decode(body, type=RestMessage)
        except msgspec.ValidationError as exc:
            raise ChannelRejected(400, f"invalid message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ChannelRejected(400, f"malformed JSON: {exc}") from None

    def parse(self, request: ChannelRequest, config: Any) -> list[InboundMessage]:
        """One inbound message from the JSON body."""
        return [self.message(self.decode(request.body))]

    def message(self, body: RestMessage) -> InboundMessage:
        """The inbound message of a validated body; raises :class:`ChannelRejected` for blank text."""
        text = body.text.strip()
        if not text:
            raise ChannelRejected(400, "invalid message: text is blank")
        return InboundMessage(
            channel=self.name,
            text=text,
            sender=body.user or "rest-user",
            conversation_key=body.conversation_id,
            idempotency_key=body.message_id,
        )

    async def send(self, message: OutboundMessage, config: Any) -> str | None:
        """Not used: REST replies are in the response (``delivery = "response"``)."""
        raise NotImplementedError("REST chat replies are returned in the response")


@hookimpl
def register_channels() -> list[ChannelAdapter]:
    """The REST channel."""
    return [RestChannel()]
