r"""The e-mail channel: each e-mail thread is one conversation, answered in the thread.

Inbound mail arrives in two ways, either or both per bot:

* **webhook**: a mail provider or relay posts the raw RFC 822 message to
  ``POST {public URL}/channels/email/{bot}/inbound`` with the bot's
  ``inbound_secret`` (``Authorization: Bearer <secret>``, ``X-Botloom-Secret``
  or ``?secret=``); delivery failure reports (bounces) posted there mark the
  reply they report on as failed;
* **IMAP**: with ``imap_host`` set, the host polls the mailbox about once a
  minute and flags each message ``\\Seen`` once it is stored.

Quoted earlier mail, signatures and mobile footers are stripped before the
turn; HTML-only mail becomes text; attachments are kept as metadata. A message
seen twice (same Message-ID) runs once. Auto-replies, bounces and list mail are
stored nowhere and never answered, so two robots cannot talk forever.

Replies go out through the bot's SMTP server (STARTTLS, implicit TLS, or none)
from the delivery queue, with retries: ``In-Reply-To`` and ``References`` set,
the subject kept with ``Re:``, a plain-text and an HTML part. A retried reply
keeps its Message-ID, so a client shows it once even if a server took it twice.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import msgspec

from botloom import (
    AcceptMessage,
    Capabilities,
    ChannelAdapter,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    DeliveryReport,
    InboundMessage,
    OutboundMessage,
    ReportDelivery,
    hookimpl,
)

from .config import MAX_MESSAGE_BYTES, EmailConfig
from .imap import poll_mailbox
from .inbound import MailError, bounced_message_id, to_inbound
from .outbound import compose, send_mail

__all__ = ["EmailChannel", "EmailConfig"]

logger = logging.getLogger(__name__)

INBOUND_PATH = "inbound"


class EmailChannel(ChannelAdapter[EmailConfig]):
    """Reads posted or polled mail, answers in the thread over SMTP."""

    name: ClassVar[str] = "email"
    kind: ClassVar[ChannelKind] = "push"
    capabilities: ClassVar[Capabilities] = Capabilities(delivery_reports=True, polls=True)
    max_text_length: ClassVar[int | None] = None
    max_request_bytes: ClassVar[int] = MAX_MESSAGE_BYTES

    def contact_address(self, address: str) -> str:
        """The address in lower case, as the channel stores senders (``docs/channels.md``: e-mail addresses).

        Domains are case-insensitive; local parts are folded too, as the big providers do.
        """
        return address.strip().lower()

    @staticmethod
    def settings(config: Any) -> EmailConfig:
        """The bot's config as an :class:`EmailConfig`."""
        if isinstance(config, EmailConfig):
            return config
        return msgspec.convert(config, EmailConfig, strict=False)

    def verify(self, request: ChannelRequest, config: EmailConfig) -> None:
        """Check the inbound secret (a header or ``?secret=``); 403 when it is missing or wrong."""
        if request.subpath != INBOUND_PATH:
            raise ChannelRejected(404, "e-mail arrives at /channels/email/{bot}/inbound")
        expected = self.settings(config).inbound_secret
        if not expected:
            raise ChannelRejected(403, "the bot's email config has no inbound_secret: set one to accept posted mail")
        authorization = request.headers.get("authorization", "")
        given = [
            authorization[7:].strip() if authorization[:7].lower() == "bearer " else "",
            request.headers.get("x-botloom-secret", ""),
            *parse_qs(urlsplit(request.url).query).get("secret", []),
        ]
        if not any(g and hmac.compare_digest(g.encode(), expected.encode()) for g in given):
            raise ChannelRejected(403, "missing or wrong inbound secret")

    def parse(self, request: ChannelRequest, config: EmailConfig) -> list[InboundMessage]:
        """The posted raw message; nothing for auto-replies, bounces and list mail; 400 for what is not mail."""
        settings = self.settings(config)
        if len(request.body) > settings.max_message_bytes:
            raise ChannelRejected(
                413, f"the message is larger than the bot's max_message_bytes ({settings.max_message_bytes})"
            )
        try:
            found = to_inbound(request.body, channel=self.name, own_address=settings.address)
        except MailError as exc:
            raise ChannelRejected(400, str(exc)) from None
        if isinstance(found, str):
            logger.info("e-mail not answered: %s", found)
            return []
        return [found]

    def delivery_report(self, request: ChannelRequest, config: EmailConfig) -> DeliveryReport | None:
        """A bounce of one of the bot's replies, as a failed delivery of that reply."""
        return bounce_report(request.body)

    def acknowledge(
        self, request: ChannelRequest, replies: list[OutboundMessage] | None, config: EmailConfig
    ) -> ChannelResponse:
        """An empty 200: the message is stored and its reply goes out by SMTP."""
        return ChannelResponse(status=200, body=b"", media_type="text/plain")

    async def send(self, message: OutboundMessage, config: EmailConfig) -> str:
        """Send one reply through the bot's SMTP server; returns its Message-ID."""
        settings = self.settings(config)
        mail = compose(message, settings)
        await send_mail(mail, settings)
        return str(mail["Message-ID"]).strip("<>")

    def polls(self, config: EmailConfig) -> bool:
        """Whether the bot reads a mailbox over IMAP (``imap_host`` set)."""
        return self.settings(config).imap_host is not None

    async def poll(
        self, config: EmailConfig, cursor: Mapping[str, Any], accept: AcceptMessage, report: ReportDelivery
    ) -> dict[str, Any]:
        """Read the mailbox's new mail (see :mod:`.imap`).

        Bounces mark the replies they name as failed; auto-replies and unreadable
        mail are flagged seen and skipped.
        """
        settings = self.settings(config)

        async def handle(uid: int, raw: bytes, truncated: bool) -> None:
            bounce = bounce_report(raw)
            if bounce is not None and not await report(bounce):
                logger.info("a bounce in %s's mailbox named no reply of the bot", settings.address)
            try:
                found = to_inbound(raw, channel=self.name, own_address=settings.address, truncated=truncated)
            except (MailError, ValueError) as exc:  # not mail, or an identifier botloom cannot keep: never retried
                logger.warning("IMAP message %s of %s is not readable mail (%s); skipped", uid, settings.address, exc)
                return
            if isinstance(found, str):
                logger.info("e-mail not answered: %s", found)
                return
            await accept(found)

        return await poll_mailbox(settings, dict(cursor), handle)


def bounce_report(raw: bytes) -> DeliveryReport | None:
    """A delivery failure report (RFC 3464) as the failed delivery of the reply it names; ``None`` otherwise."""
    bounced = bounced_message_id(raw)
    if bounced is None:
        return None
    message_id, reason = bounced
    return DeliveryReport(status="failed", provider_id=message_id, error=f"bounced: {reason}")


@hookimpl
def register_channels() -> list[ChannelAdapter[Any]]:
    """The e-mail channel."""
    return [EmailChannel()]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The bot's address, inbound secret, SMTP server and optional IMAP mailbox."""
    return EmailConfig
