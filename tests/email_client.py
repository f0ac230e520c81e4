"""What the e-mail channel's tests send: raw messages as mail clients write them, posted as a relay posts them."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from typing import Any

import httpx

from tests.mailservers import RunningSmtp

BOT_ADDRESS = "support@acme.test"
INBOUND_SECRET = "relay-secret-0123456789"
USER = "anna@example.org"


def raw_mail(
    text: str,
    *,
    message_id: str,
    sender: str = USER,
    subject: str = "Question",
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A plain-text message from ``sender`` to the bot, as bytes on the wire."""
    message = EmailMessage()
    message["From"] = email.utils.formataddr(("Anna Example", sender))
    message["To"] = BOT_ADDRESS
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        message["References"] = " ".join(f"<{r}>" for r in references)
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text)
    return message.as_bytes()


async def post_mail(
    client: httpx.AsyncClient, raw: bytes, *, secret: str | None = INBOUND_SECRET, bot: str = "acme/support"
) -> httpx.Response:
    """Post a raw message to the bot's inbound webhook as a relay does."""
    headers = {"Content-Type": "message/rfc822"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return await client.post(f"/channels/email/{bot}/inbound", content=raw, headers=headers)


def email_config(smtp: RunningSmtp, **overrides: Any) -> dict[str, Any]:
    """A config sending through ``smtp`` (plain, with its login if it has one) and taking posted mail."""
    config: dict[str, Any] = {
        "address": BOT_ADDRESS,
        "display_name": "Acme Support",
        "inbound_secret": INBOUND_SECRET,
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "timeout_seconds": 10,
    }
    if smtp.username:
        config |= {"smtp_username": smtp.username, "smtp_password": smtp.password}
    return config | overrides
