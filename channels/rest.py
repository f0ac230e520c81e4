"""The REST channel: ``POST /api/v1/bots/{bot}/messages`` answers a turn's replies in its response.

A response channel: the host runs the turn during the request and this channel
renders the replies as JSON. The route needs an API key that sees the bot, and the
bot must enable this plugin.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from botloom import (
    ChannelAdapter,
    ChannelKind,
    ChannelRequest,
    ChannelResponse,
    ChannelRoute,
    InboundMessage,
    TurnAnswer,
    hookimpl,
)
from botloom.channels.bodies import IDENTIFIER, MAX_TEXT, Reply, checked_text, decode_json

ANONYMOUS = "rest-user"
"""The sender of a message without a ``user``: every anonymous user's, so it names no contact (only ids do)."""
NOT_BLANK = r"\S"
"""A message's text has a character that is not white space (blank text is refused)."""


class RestMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of a REST chat request."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT, pattern=NOT_BLANK)]
    conversation_id: Annotated[str, msgspec.Meta(max_length=200, pattern=IDENTIFIER)] | None = None
    """Continue this conversation; ``null`` starts a new one."""
    user: Annotated[str, msgspec.Meta(max_length=200, pattern=IDENTIFIER)] | None = None
    """The end user's id in the caller's system."""
    message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=IDENTIFIER)] | None = None
    """The caller's id for this message: a retried request with the same id is answered, not run twice."""


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


ROUTE = ChannelRoute(
    path="/api/v1/bots/{bot}/messages",
    method="POST",
    auth="api_key",
    summary="Send a message to a bot and get its replies",
    description=(
        'Run one turn: ``{"text": "...", "conversation_id": null, "user": null, "message_id": null}``.\n\n'
        "A new conversation starts when no ``conversation_id`` is given. A retried request with the same "
        "``message_id`` is answered with the first replies and runs nothing. The bot must enable the "
        "``rest`` plugin."
    ),
    tags=("chat",),
    body=RestMessage,
    answer=ChatAnswer,
)


class RestChannel(ChannelAdapter[None]):
    """Translates REST chat bodies into inbound messages; the replies go back in the response."""

    name: ClassVar[str] = "rest"
    kind: ClassVar[ChannelKind] = "response"
    conversations: ClassVar[Literal["key", "id"]] = "id"
    anonymous_sender: ClassVar[str | None] = ANONYMOUS

    def routes(self) -> tuple[ChannelRoute, ...]:
        """``POST /api/v1/bots/{bot}/messages``, with an API key."""
        return (ROUTE,)

    def verify(self, request: ChannelRequest, config: None) -> None:
        """REST chat is authenticated by the API key on the route, before the channel sees it."""

    def decode(self, body: bytes) -> RestMessage:
        """The validated body; raises :class:`~botloom.ChannelRejected` (400) naming what is wrong."""
        return decode_json(body, RestMessage, what="message")

    def parse(self, request: ChannelRequest, config: None) -> list[InboundMessage]:
        """One inbound message from the JSON body."""
        return [self.message(self.decode(request.body))]

    def message(self, body: RestMessage) -> InboundMessage:
        """The inbound message of a validated body; raises :class:`~botloom.ChannelRejected` for blank text."""
        return InboundMessage(
            channel=self.name,
            text=checked_text(body.text, what="message"),
            sender=body.user or ANONYMOUS,
            conversation_key=body.conversation_id,
            idempotency_key=body.message_id,
        )

    def render(self, request: ChannelRequest, answers: list[TurnAnswer], config: None) -> ChannelResponse:
        """The JSON answer (:class:`ChatAnswer`) of the request's one message."""
        (answer,) = answers
        body = ChatAnswer(
            conversation_id=answer.conversation_id,
            message_id=answer.message_id,
            replies=[Reply(id=r.id, text=r.text) for r in answer.replies],
            intent=answer.intent,
            confidence=answer.confidence,
            escalated=answer.escalated,
            duplicate=answer.duplicate,
        )
        return ChannelResponse(status=200, body=msgspec.json.encode(body), media_type="application/json")


@hookimpl
def register_channels() -> list[ChannelAdapter[Any]]:
    """The REST channel."""
    return [RestChannel()]
