"""The Telegram channel: Bot API webhooks in, ``sendMessage`` out.

Written with botloom's public API only (``from botloom import ...``), as any
third-party channel is.

* Inbound: Telegram ``POST``s each Update as JSON to
  ``/channels/telegram/{tenant}/{bot}`` (see the README for ``setWebhook``), with
  the ``X-Telegram-Bot-Api-Secret-Token`` header set to the secret the bot was
  registered with. The header is compared in constant time with the bot's
  ``webhook_secret``: missing, 401; wrong, 403. A text message becomes an
  :class:`~botloom.InboundMessage` from the chat (``chat.id``); any other update
  (a photo, an edited message, a member joining) is acknowledged and ignored, so
  Telegram does not retry it. A body that is not an Update is 400; one larger
  than :attr:`TelegramChannel.max_request_bytes`, 413.
* Outbound: each reply is one ``sendMessage`` call to
  ``https://api.telegram.org/bot<token>/sendMessage`` with the chat id, the text
  and the id of the message it answers. Where botloom connects is not a tenant's
  choice: the API base is fixed, and only the operator may point it elsewhere
  (a local Bot API server, a test's stand-in) with the ``BOTLOOM_TELEGRAM_API_BASE``
  environment variable or :class:`TelegramPlugin`'s ``api_base`` argument.
"""

from __future__ import annotations

import hmac
import os
import re
from typing import Annotated, Any, ClassVar

import msgspec
from botloom import (
    ChannelAdapter,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    EndpointRefused,
    InboundMessage,
    OutboundMessage,
    Secret,
    SendError,
    aiohttp_session,
    hookimpl,
)

API_BASE = "https://api.telegram.org"
"""Telegram's Bot API."""
API_BASE_VARIABLE = "BOTLOOM_TELEGRAM_API_BASE"
"""The operator's override of :data:`API_BASE` (a local Bot API server, a test's stand-in)."""
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header's name
TEXT_LIMIT = 4096
"""Longest text of one Telegram message."""
SEND_TIMEOUT = 20.0
"""Seconds one ``sendMessage`` call may take."""

TOKEN_PATTERN = r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$"  # noqa: S105 - a pattern, not a token
"""A bot token as BotFather issues it (``123456789:AA...``): nothing that could change the URL's path."""
SECRET_PATTERN = r"^[A-Za-z0-9_-]+$"  # noqa: S105 - a pattern, not a secret
"""The characters Telegram allows in a webhook's secret token."""
_CHAT_ID = re.compile(r"-?[0-9]{1,20}")


class TelegramConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bot's Telegram settings (both are secrets: stored encrypted, never shown again)."""

    bot_token: Annotated[Secret, msgspec.Meta(pattern=TOKEN_PATTERN)]
    """The token BotFather gave the Telegram bot."""
    webhook_secret: Annotated[Secret, msgspec.Meta(min_length=16, max_length=256, pattern=SECRET_PATTERN)]
    """The ``secret_token`` given to ``setWebhook``: Telegram sends it with every update."""


# -- the Update, as much of it as the channel reads (Telegram adds fields: they are ignored) --------


class User(msgspec.Struct, frozen=True):
    """The sender of a message."""

    id: int
    is_bot: bool = False


class Chat(msgspec.Struct, frozen=True):
    """The chat a message belongs to; replies go there."""

    id: int
    type: str = "private"


class Message(msgspec.Struct, frozen=True):
    """A message; only ``text`` ones are answered."""

    message_id: int
    chat: Chat
    sender: User | None = msgspec.field(default=None, name="from")
    text: str | None = None


class Update(msgspec.Struct, frozen=True):
    """One incoming update; ``message`` is absent for every other kind (edits, callbacks, joins...)."""

    update_id: int
    message: Message | None = None


class SentMessage(msgspec.Struct, frozen=True):
    """The part of ``sendMessage``'s result the channel keeps."""

    message_id: int


class ApiAnswer(msgspec.Struct, frozen=True):
    """Every Bot API answer: ``ok``, and ``result`` or ``error_code``."""

    ok: bool
    result: SentMessage | None = None
    error_code: int | None = None


class TelegramChannel(ChannelAdapter[TelegramConfig]):
    """Telegram's Bot API as a botloom push channel."""

    name: ClassVar[str] = "telegram"
    max_text_length: ClassVar[int | None] = TEXT_LIMIT
    max_request_bytes: ClassVar[int] = 256 * 1024
    """An update is a few kilobytes; a larger body is refused (413) before it is read whole."""

    def __init__(self, api_base: str | None = None, *, timeout: float = SEND_TIMEOUT) -> None:
        base = (api_base or API_BASE).rstrip("/")
        if not base.startswith(("https://", "http://")):
            raise ValueError(f"the Telegram API base must be an http(s) URL, not {base!r}")
        self.api_base = base
        self.timeout = timeout

    def verify(self, request: ChannelRequest, config: TelegramConfig) -> None:
        """Check the secret token header against the bot's ``webhook_secret``, in constant time."""
        given = request.headers.get(SECRET_HEADER)
        if not given:
            raise ChannelRejected(401, "missing X-Telegram-Bot-Api-Secret-Token header")
        if config is None or not hmac.compare_digest(given.encode(), config.webhook_secret.encode()):
            raise ChannelRejected(403, "wrong X-Telegram-Bot-Api-Secret-Token")

    def parse(self, request: ChannelRequest, config: TelegramConfig) -> list[InboundMessage]:
        """The text message an Update carries; ``[]`` for every other update."""
        try:
            update = msgspec.json.decode(request.body, type=Update)
        except msgspec.DecodeError as exc:  # not JSON, or not an Update: say which field, not the body
            raise ChannelRejected(400, f"malformed Telegram update: {exc}") from None
        message = update.message
        if message is None or message.text is None or not message.text.strip():
            return []  # acknowledged (Telegram would retry an error) and ignored
        metadata: dict[str, Any] = {"chat_id": message.chat.id, "message_id": message.message_id}
        if message.sender is not None:
            metadata["from_id"] = message.sender.id
        try:
            return [
                InboundMessage(
                    channel=self.name,
                    text=message.text,
                    sender=str(message.chat.id),
                    conversation_key=str(message.chat.id),
                    idempotency_key=f"update-{update.update_id}",
                    metadata=metadata,
                )
            ]
        except ValueError as exc:  # botloom refuses the text (a control character...): say so, do not store
            raise ChannelRejected(400, f"unusable Telegram message: {exc}") from None

    def acknowledge(
        self, request: ChannelRequest, replies: list[OutboundMessage] | None, config: TelegramConfig
    ) -> ChannelResponse:
        """Telegram only needs a 2xx; replies go out through ``sendMessage``."""
        return ChannelResponse(status=200, body=b"{}", media_type="application/json")

    async def send(self, message: OutboundMessage, config: TelegramConfig) -> str | None:
        """Send one reply with ``sendMessage``; returns Telegram's message id.

        Raises :class:`~botloom.SendError`: retryable for a 429, a 5xx or a connection
        that failed; not retryable when Telegram refused the message itself (a chat
        that does not exist, a bot the user blocked, a wrong token). The error names
        Telegram's status and error code, never its description, and never the URL
        (it holds the token).
        """
        import aiohttp

        payload: dict[str, Any] = {"chat_id": _chat_id(message.recipient), "text": message.text}
        answering = (message.metadata.get("reply_to") or {}).get("message_id")
        if isinstance(answering, int) and not isinstance(answering, bool):
            payload["reply_to_message_id"] = answering
            payload["allow_sending_without_reply"] = True
        url = f"{self.api_base}/bot{config.bot_token}/sendMessage"
        try:
            async with (
                aiohttp_session(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(url, json=payload) as response,
            ):
                status = response.status
                body = await response.read()
        except EndpointRefused:
            raise  # the operator's policy forbids the address: not worth retrying
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Not knowing whether Telegram took it, try again: Telegram has no idempotency key, so a reply
            # whose answer was lost may arrive twice (rather than never).
            raise SendError(f"could not reach Telegram's Bot API ({type(exc).__name__})", retryable=True) from None
        try:
            answer: ApiAnswer | None = msgspec.json.decode(body, type=ApiAnswer)
        except msgspec.DecodeError:
            answer = None
        if status == 200:
            sent = answer.result if answer is not None and answer.ok else None
            return str(sent.message_id) if sent is not None else None  # taken, though its answer was unreadable
        code = f" (error_code {answer.error_code})" if answer is not None and answer.error_code else ""
        retryable = status == 429 or status >= 500
        raise SendError(f"Telegram's Bot API answered {status}{code} to sendMessage", retryable=retryable)


def _chat_id(recipient: str) -> int | str:
    """A chat id as Telegram takes it: a number, or a public channel's ``@username``."""
    return int(recipient) if _CHAT_ID.fullmatch(recipient) else recipient


class TelegramPlugin:
    """The plugin as an object, for an operator or a test that chooses the API base in code.

    ``host.register(TelegramPlugin(api_base="http://127.0.0.1:8081"), "telegram")``;
    installed, the plugin is the module's hooks below (entry point ``telegram``).
    """

    def __init__(self, api_base: str | None = None) -> None:
        self.channel = TelegramChannel(api_base)

    @hookimpl
    def register_channels(self) -> list[ChannelAdapter[Any]]:
        """The Telegram channel."""
        return [self.channel]

    @hookimpl
    def plugin_config_schema(self) -> type[msgspec.Struct]:
        """The bot's token and webhook secret."""
        return TelegramConfig


@hookimpl
def register_channels() -> list[ChannelAdapter[Any]]:
    """The Telegram channel, reaching Telegram (or the operator's ``BOTLOOM_TELEGRAM_API_BASE``)."""
    return [TelegramChannel(os.environ.get(API_BASE_VARIABLE) or None)]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The bot's token and webhook secret."""
    return TelegramConfig
