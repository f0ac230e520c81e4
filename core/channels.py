"""The channel contract: what a channel plugin implements, and what the host offers it.

A channel translates between one messaging service's wire format and botloom's
messages. Every channel, built-in or not, is a :class:`ChannelAdapter` returned by
``register_channels``; the host reads everything it needs from the class:

* its **kind** (``kind``): a ``push`` channel receives webhooks, stores the
  messages and queues their turns, and sends the replies later with
  :meth:`~ChannelAdapter.send` (Twilio, e-mail); a ``response`` channel has the
  host run the turn during the request and renders the replies in the HTTP answer
  (REST chat); a ``socket`` channel talks WebSocket frames and gets the replies on
  the open socket (web chat);
* the **routes** it serves (:meth:`~ChannelAdapter.routes`, :class:`ChannelRoute`);
* its optional **capabilities**, declared in a :class:`Capabilities` value: the
  host calls an optional method only when the channel declares it;
* its **config**: the plugin's ``plugin_config_schema`` Struct. The host looks up
  the bot's config once per request, validates it once, and hands the Struct to
  every method (``None`` when the plugin takes no config).

A delivery report is a :class:`DeliveryReport`; a failed send raises
:class:`SendError`, which says whether trying again can help.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

import msgspec

from botloom.core.domain import Bot
from botloom.core.messages import InboundMessage, OutboundMessage
from botloom.core.statuses import DeliveryStatus  # what a provider reports about a part it was given

ChannelKind = Literal["push", "response", "socket"]
"""``push``: webhooks in, :meth:`ChannelAdapter.send` out (through the job queue, with retries);
``response``: the host runs the turn during the request and the channel renders the replies in
the answer; ``socket``: WebSocket frames both ways, the replies on the open socket."""
RouteMethod = Literal["GET", "POST", "WEBSOCKET"]
RouteAuth = Literal["public", "api_key"]

ConfigT = TypeVar("ConfigT")
"""A channel's config type: its plugin's ``plugin_config_schema`` Struct (``None`` without one)."""

BOT = "{bot}"
SUBPATH = "{subpath}"
_SEGMENT = r"[a-z0-9][a-z0-9_.-]*"
_ROUTE = re.compile(
    rf"^(?P<prefix>/api/v1/bots/|/chat/|/channels/{_SEGMENT}/)\{{bot\}}(?P<tail>(/{_SEGMENT})*(/\{{subpath\}})?)$"
)


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's report on a message it was given (a status callback, a bounce)."""

    status: DeliveryStatus
    provider_id: str | None = None
    """The provider's id of the message (what :meth:`ChannelAdapter.send` returned)."""
    ref: str | None = None
    """The ``delivery_ref`` botloom gave the part (``message-id:part``), when the report carries it."""
    error: str | None = None

    def part(self) -> tuple[str, int] | None:
        """The message id and part number ``ref`` names, if it is well formed."""
        match = re.fullmatch(r"([0-9a-fA-F-]{36}):(\d{1,4})", self.ref or "")
        return (match[1], int(match[2])) if match else None


class SendError(Exception):
    """A channel could not send a message; ``retryable`` says whether trying again can help.

    Raise it from :meth:`ChannelAdapter.send`: a retryable error (a timeout, a
    provider's 5xx or 429) is tried again with back-off; one that is not (a
    refused number, an opted-out user, a wrong password) makes the reply a dead
    letter at once. Any other exception counts as retryable.
    """

    def __init__(self, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


class ChannelRejected(Exception):
    """A channel refuses an inbound request (bad signature, malformed body); nothing is stored.

    ``status`` is the HTTP status the host answers with (a 4xx).
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ChannelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An inbound HTTP request (or a socket's opening request) as a channel sees it."""

    method: str
    url: str
    """The public URL the provider called (what Twilio signs), as the host reconstructs it."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    form: Mapping[str, str] = {}
    """The parsed ``application/x-www-form-urlencoded`` body, when it was one."""
    subpath: str = ""
    """What follows the bot in the route (``inbound``, ``status``), without slashes."""
    bot: Bot | None = None
    """The bot the request is for (the host found it before calling the channel)."""
    bot_ref: str = ""
    """The bot as the URL names it: its id or ``tenant-slug/bot-slug``."""


class ChannelResponse(msgspec.Struct, frozen=True, kw_only=True):
    """What the host answers a request with."""

    status: int = 200
    body: bytes = b""
    media_type: str = "text/plain"
    headers: Mapping[str, str] = {}


class ChannelRoute(msgspec.Struct, frozen=True, kw_only=True):
    """One route a channel serves; the host mounts it and calls the channel's methods for it.

    ``path`` names the bot with ``{bot}`` (its id, or ``tenant-slug/bot-slug`` as two
    segments), right after one of ``/api/v1/bots/``, ``/chat/`` or
    ``/channels/{channel name}/``; lower-case segments may follow, and a last
    ``{subpath}`` segment matches any one segment. What the host does depends on
    ``method`` and the channel's kind:

    * ``POST`` on a push channel: verify, parse, store, queue, :meth:`ChannelAdapter.acknowledge`;
    * ``POST`` on a response channel: verify, parse, run the turn, :meth:`ChannelAdapter.render`;
    * ``WEBSOCKET`` on a socket channel: verify the opening request, then :meth:`ChannelAdapter.converse`;
    * ``GET`` on any channel: :meth:`ChannelAdapter.page` (a page, such as the web chat's).
    """

    path: str
    method: RouteMethod = "POST"
    auth: RouteAuth = "public"
    """``api_key``: the caller needs a tenant's API key (or the operator's token) that sees the bot;
    ``public``: anyone may call, and the channel's ``verify`` decides (a signature, a secret, an origin)."""
    summary: str = ""
    description: str = ""
    tags: tuple[str, ...] = ("channels",)
    body: Any = None
    """The JSON body's type (a msgspec Struct), for the API schema: the host checks the body against
    it (400 naming the bad field) before the channel parses it. ``None``: any body, unchecked."""
    answer: Any = None
    """The JSON answer's type, for the API schema (``None``: not described)."""

    def __post_init__(self) -> None:
        if _ROUTE.fullmatch(self.path) is None:
            raise ValueError(
                f"channel route {self.path!r}: name the bot with {BOT} right after /api/v1/bots/, /chat/ or "
                f"/channels/NAME/, then lower-case segments and an optional last {SUBPATH}"
            )

    @property
    def tail(self) -> str:
        """What follows ``{bot}`` in the path, without its first slash (``inbound``, ``{subpath}``, ``""``)."""
        match = _ROUTE.fullmatch(self.path)
        return match["tail"].lstrip("/") if match else ""


def webhook_routes(name: str) -> tuple[ChannelRoute, ...]:
    """A push channel's usual routes: ``POST /channels/{name}/{bot}`` and ``.../{bot}/{subpath}``."""
    summary = f"A {name} webhook"
    return (
        ChannelRoute(path=f"/channels/{name}/{BOT}", summary=summary),
        ChannelRoute(path=f"/channels/{name}/{BOT}/{SUBPATH}", summary=f"{summary} with a sub-path"),
    )


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """The optional methods a channel implements; the host calls only those declared here."""

    text_limit: bool = False
    """:meth:`ChannelAdapter.text_limit` gives the longest text per recipient (SMS 1600, WhatsApp 4096)."""
    answers_in_response: bool = False
    """A push channel whose :meth:`ChannelAdapter.response_window` lets the host wait for the turn and
    put the replies in the webhook's answer (Twilio's TwiML)."""
    delivery_reports: bool = False
    """:meth:`ChannelAdapter.delivery_report` finds a provider's status report in a webhook."""
    polls: bool = False
    """:meth:`ChannelAdapter.polls` and :meth:`ChannelAdapter.poll` fetch messages (an IMAP mailbox)."""
    finds_sent: bool = False
    """:meth:`ChannelAdapter.find_sent` asks the provider whether a part whose send was interrupted went out,
    so that a retry does not send it twice (Twilio's message list)."""


class TurnReply(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the bot's answer to a response or socket channel."""

    id: str
    text: str


class TurnAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """How the host answered one inbound message, for a response or socket channel to render."""

    conversation_id: str
    message_id: str | None
    """The stored inbound message's id."""
    replies: tuple[TurnReply, ...] = ()
    intent: str | None = None
    confidence: float = 0.0
    escalated: bool = False
    duplicate: bool = False
    """The message's idempotency key was seen before: the replies are those of its first delivery."""
    status: str = "answered"
    """``answered``, ``refused``, ``rejected`` (busy), ``for_agent`` (with a person), ``failed``."""


class HistoryMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a conversation's history, as a socket channel shows it on reconnecting."""

    role: Literal["user", "bot"]
    text: str
    id: str
    """The client's id of a user message (its idempotency key), else the stored message's id."""


class ChannelConversation(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation a socket channel opened: its id and its history, oldest first."""

    id: str
    history: tuple[HistoryMessage, ...] = ()


class ConversationUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened in a conversation outside a turn, for a socket channel to show its user live."""

    kind: Literal["agent_joined", "agent_message", "bot_back", "bot_message"]
    """A person joined (an agent claimed the handover), a person's message, the bot is back, or the bot's answer
    to what the user wrote while the bot was taking the conversation back (``bot_message``)."""
    text: str | None = None
    """The message (``agent_message``, ``bot_message``), or what the user is told when the bot is back, if anything."""
    name: str | None = None
    """The agent's display name."""
    id: str | None = None
    """The stored message's id (``agent_message``, ``bot_message``)."""


class SocketClosed(Exception):
    """The client closed the socket."""


class ChannelSocket(abc.ABC):
    """An open WebSocket, as a socket channel sees it (the host accepted it after ``verify``)."""

    request: ChannelRequest
    """The opening request (headers, URL, the bot)."""

    @abc.abstractmethod
    async def receive(self) -> str:
        """The next text frame; raises :class:`SocketClosed` when the client went away."""

    @abc.abstractmethod
    async def send(self, text: str) -> None:
        """Send one text frame."""

    @abc.abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket."""


class ChannelHost(abc.ABC):
    """What the host offers a response or socket channel while it serves one request or socket."""

    bot: Bot

    @abc.abstractmethod
    async def open_conversation(self, conversation_id: str | None, user: str) -> ChannelConversation:
        """Continue the bot's conversation ``conversation_id`` on this channel, or start a new one.

        A new one starts for ``None``, or an id that is not one of the bot's conversations on this channel.
        """

    @abc.abstractmethod
    async def answer(self, message: InboundMessage) -> TurnAnswer:
        """Store the message and run its turn now; a duplicate gets the replies of its first delivery.

        With ``conversations = "id"``, ``message.conversation_key`` is the conversation's id
        (``None`` starts a new one). Raises :class:`ChannelRejected` (404) for a conversation
        the bot does not have.
        """

    async def follow(  # noqa: B027 - optional: a host without live updates keeps this default
        self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]
    ) -> None:
        """Call ``deliver`` with each :class:`ConversationUpdate` of the conversation until cancelled.

        Updates happen outside the channel's own turns: an agent joined the
        conversation, an agent's message, the bot is back. A host without live
        updates returns at once (this default).
        """


AcceptMessage = Callable[[InboundMessage], Awaitable[object]]
"""How a polling channel hands a fetched message to the host (see :meth:`ChannelAdapter.poll`)."""
ReportDelivery = Callable[[DeliveryReport], Awaitable[bool]]
"""How a polling channel hands the host a report on a message it sent (a bounce found in a mailbox);
the host answers whether it named a stored message."""


class ChannelAdapter(abc.ABC, Generic[ConfigT]):
    """Translates between one messaging channel's wire format and botloom's messages.

    A channel plugin returns instances from ``register_channels``. The adapter holds
    no per-bot state: each call gets the bot's config of the plugin, validated once
    per request, as the plugin's config Struct (``ConfigT``).
    """

    name: ClassVar[str]
    """The channel's name, unique across plugins."""
    kind: ClassVar[ChannelKind] = "push"
    """How replies leave (see :data:`ChannelKind`)."""
    capabilities: ClassVar[Capabilities] = Capabilities()
    """The optional methods this channel implements."""
    conversations: ClassVar[Literal["key", "id"]] = "key"
    """``key``: ``InboundMessage.conversation_key`` is the channel's own key of the conversation (an
    e-mail thread; the sender when ``None``), and the host finds or starts it; ``id``: it is the id
    of a botloom conversation the client was told earlier, and ``None`` starts a new one (REST chat)."""
    max_text_length: ClassVar[int | None] = None
    """Longest text one outbound message may carry; longer replies are split by the host."""
    max_request_bytes: ClassVar[int] = 1_048_576
    """Largest request body the host reads for this channel; a larger one is refused with 413."""
    anonymous_sender: ClassVar[str | None] = None
    """The sender of messages whose end user is not named (REST chat without a ``user``): every such user
    shares it, so it names no contact, and the contact routes find their conversations only by id."""

    def routes(self) -> tuple[ChannelRoute, ...]:
        """The routes this channel serves; a push channel's default is :func:`webhook_routes`."""
        return webhook_routes(self.name) if self.kind == "push" else ()

    # -- every channel -------------------------------------------------------------

    def contact_address(self, address: str) -> str:
        """An end user's address as this channel stores it (the contact routes look it up so).

        For an address that can be written several ways: an e-mail address in lower case,
        a phone number without its spaces and dashes. The default keeps it as it is.
        """
        return address

    async def aclose(self) -> None:
        """Close what the channel keeps open across calls (an HTTP client's connections) at the host's shutdown.

        Called once per process by the host, in the event loop that sent; a channel used
        again afterwards opens anew. The default has nothing to close.
        """

    @abc.abstractmethod
    def verify(self, request: ChannelRequest, config: ConfigT) -> None:
        """Check the request's signature, secret or origin; raise :class:`ChannelRejected` (403) if forged."""

    @abc.abstractmethod
    def parse(self, request: ChannelRequest, config: ConfigT) -> list[InboundMessage]:
        """Turn a verified request into messages; raise :class:`ChannelRejected` (400) if malformed.

        An empty list means the request carries no message (a status callback, an auto-reply).
        """

    def page(self, request: ChannelRequest, config: ConfigT) -> ChannelResponse:
        """Answer a ``GET`` route of this channel (a page); only called for routes it declares."""
        raise ChannelRejected(404, f"the {self.name} channel serves no page")

    # -- push channels ---------------------------------------------------------------

    def acknowledge(
        self, request: ChannelRequest, replies: list[OutboundMessage] | None, config: ConfigT
    ) -> ChannelResponse:
        """The answer to a webhook; ``replies`` is set when they go in this answer (``answers_in_response``)."""
        return ChannelResponse(status=200)

    async def send(self, message: OutboundMessage, config: ConfigT) -> str | None:
        """Deliver one message (push channels); return the provider's id for it.

        Raise :class:`SendError` saying whether a retry can help; any other exception is retried.
        """
        detail = f"the {self.name} channel does not send messages (it is a {self.kind} channel)"
        raise SendError(detail, retryable=False)

    # -- response and socket channels ----------------------------------------------

    def render(self, request: ChannelRequest, answers: list[TurnAnswer], config: ConfigT) -> ChannelResponse:
        """A response channel's HTTP answer, with the answers to the messages ``parse`` found."""
        raise NotImplementedError(f"the {self.name} channel renders no answers")

    async def converse(self, socket: ChannelSocket, host: ChannelHost, config: ConfigT) -> None:
        """A socket channel's conversation on an open socket, until the client goes away.

        Read frames with ``await socket.receive()`` (it raises :class:`SocketClosed` at the end),
        open or continue a conversation with ``await host.open_conversation(...)``, and answer each
        message with ``await host.answer(message)``, sending the replies as frames.
        """
        raise NotImplementedError(f"the {self.name} channel serves no socket")

    # -- optional capabilities (declare them in ``capabilities``) ---------------------

    def text_limit(self, message: OutboundMessage, config: ConfigT) -> int | None:
        """The longest text one message to ``message.recipient`` may carry (``capabilities.text_limit``)."""
        return self.max_text_length

    def response_window(self, request: ChannelRequest, config: ConfigT) -> float:
        """Seconds the host may wait for the turn and answer in this webhook's response (0: answer at once)."""
        return 0.0

    def delivery_report(self, request: ChannelRequest, config: ConfigT) -> DeliveryReport | None:
        """The provider's status report ``request`` carries, or ``None`` (``capabilities.delivery_reports``)."""
        return None

    def polls(self, config: ConfigT) -> bool:
        """Whether the host should call :meth:`poll` for a bot with this config (``capabilities.polls``)."""
        return False

    async def poll(
        self, config: ConfigT, cursor: Mapping[str, Any], accept: AcceptMessage, report: ReportDelivery
    ) -> dict[str, Any]:
        """Fetch the messages that arrived since ``cursor``; return the new cursor (``capabilities.polls``).

        The host calls this about once a minute, never twice at once for one bot.
        Hand each message to ``await accept(message)``: when it returns, the message
        is stored and its turn queued, so only then mark it fetched at the provider.
        A fetched report on a message the bot sent (a bounce) goes to ``await
        report(DeliveryReport(...))``. The cursor is the channel's own
        JSON-serialisable bookmark, ``{}`` at first; it is stored after each poll, so
        a restarted host resumes from it. Raise to report a failed poll (it is
        logged and tried again next time).
        """
        raise NotImplementedError(f"the {self.name} channel does not poll")

    async def find_sent(self, message: OutboundMessage, since: datetime, config: ConfigT) -> str | None:
        """The provider's id of ``message`` if the provider took it at or after ``since`` (``capabilities.finds_sent``).

        The host calls this before sending a part again whose earlier attempt, begun at
        ``since``, ended without an outcome (the worker died mid-send, the send timed
        out, the database went away before the provider's id was recorded): an id
        means the part went out and is recorded as sent with it, ``None`` that it is
        sent again. ``message`` is the part as :meth:`send` got it (the same
        ``idempotency_key``, text and recipient). Raise to have the part retried later.
        """
        return None


__all__ = [
    "AcceptMessage",
    "Capabilities",
    "ChannelAdapter",
    "ChannelConversation",
    "ChannelHost",
    "ChannelKind",
    "ChannelRejected",
    "ChannelRequest",
    "ChannelResponse",
    "ChannelRoute",
    "ChannelSocket",
    "DeliveryReport",
    "DeliveryStatus",
    "HistoryMessage",
    "ReportDelivery",
    "SendError",
    "SocketClosed",
    "TurnAnswer",
    "TurnReply",
    "webhook_routes",
]
