"""A bot's e-mail settings: its address, the inbound secret, the SMTP server it sends through, the mailbox it reads."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from botloom import Secret, endpoint

Address = Annotated[str, msgspec.Meta(pattern=r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:]+$", max_length=254)]
Host = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.\-\[\]:]+$", max_length=253)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

MIN_SECRET_LENGTH = 16
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
"""Largest message any deployment reads (most mail servers refuse larger ones)."""


class EmailConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a bot reads and answers e-mail.

    Inbound mail arrives either by webhook (a mail provider or relay posts the raw
    message to ``/channels/email/{bot}/inbound`` with ``inbound_secret``) or by
    polling an IMAP mailbox (``imap_host`` set); replies go out through SMTP.
    """

    address: Address
    """The bot's address: the ``From`` of its replies. Mail from this address is never answered."""
    display_name: Name | None = None
    """The name shown with the address (``Acme Support <support@acme.example>``)."""
    inbound_secret: Secret | None = None
    """The secret a provider posting raw mail to the inbound webhook must send (``Authorization: Bearer ...``,
    ``X-Botloom-Secret``, or ``?secret=`` in the URL); without one, the webhook refuses everything."""
    smtp_host: Annotated[Host, endpoint("host", port_field="smtp_port")]
    """A public address, or one the operator allows (``BOTLOOM_ALLOWED_ENDPOINTS``); so is ``imap_host``."""
    smtp_port: Port = 587
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    """``starttls`` (port 587), ``tls`` (implicit TLS, port 465), or ``none`` (a relay on a trusted network)."""
    smtp_username: Name | None = None
    smtp_password: Secret | None = None
    imap_host: Annotated[Host, endpoint("host", port_field="imap_port")] | None = None
    """Poll this IMAP server's ``imap_mailbox`` about once a minute for new mail; unset: webhook only."""
    imap_port: Port = 993
    imap_security: Literal["tls", "none"] = "tls"
    """``tls`` (implicit TLS, port 993) or ``none`` (plain IMAP on a trusted network)."""
    imap_username: Name | None = None
    imap_password: Secret | None = None
    imap_mailbox: Name = "INBOX"
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_MESSAGE_BYTES)] = 10 * 1024 * 1024
    """Larger inbound mail is refused (webhook, 413) or read only up to this size (IMAP, marked truncated)."""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    """How long one SMTP or IMAP conversation may take."""

    def __post_init__(self) -> None:
        if self.inbound_secret is not None and len(self.inbound_secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"inbound_secret must be at least {MIN_SECRET_LENGTH} characters (a random string)")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password go together")
        if self.imap_host is not None and (self.imap_username is None or self.imap_password is None):
            raise ValueError("imap_host needs imap_username and imap_password")
