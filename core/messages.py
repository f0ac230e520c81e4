"""Messages as they cross botloom's boundaries: in from a channel, out to a channel.

Channels translate their wire format into :class:`InboundMessage` and send
:class:`OutboundMessage`; the graph never sees a channel's own format.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (what botloom stores everywhere)."""
    return datetime.now(UTC)


# -- what may reach storage ------------------------------------------------------------------
#
# PostgreSQL text and JSON cannot hold NUL (U+0000), and UTF-8 cannot hold a lone surrogate.
# Every message is checked once, here, where each channel hands it over: free text (the
# message, names) loses its control characters, identifiers that hold one are refused.

_TEXT_JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""C0 control characters but tab, line feed and carriage return: removed from free text."""
_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""Lone surrogates (a str can hold them, UTF-8 cannot): replaced by U+FFFD in free text."""
_NOT_IN_IDENTIFIERS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class InvalidMessage(ValueError):
    """A message a channel produced holds an identifier no storage can keep (a control character).

    ``field`` names it (``sender``, ``idempotency_key``, ``attachments[0].url``...);
    the server answers 400 with this message, and a channel may name its own wire
    field instead (Twilio's ``From`` is the message's ``sender``).
    """

    def __init__(self, field: str, value: str) -> None:
        found = _NOT_IN_IDENTIFIERS.search(value)
        code = f"U+{ord(found.group()):04X}" if found else "a control character"
        super().__init__(f"{field} must not contain control characters (found {code})")
        self.field = field


def clean_text(text: str) -> str:
    """``text`` without C0 control characters (tab, line feed and carriage return stay), lone surrogates as U+FFFD."""
    if _TEXT_JUNK.search(text):
        text = _TEXT_JUNK.sub("", text)
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def check_identifier(field: str, value: str | None) -> None:
    """Raise :class:`InvalidMessage` when ``value`` holds a control character or a lone surrogate."""
    if value is not None and _NOT_IN_IDENTIFIERS.search(value):
        raise InvalidMessage(field, value)


def _clean_json(value: Any) -> Any:
    """A JSON-like value with every string in it (keys too) cleaned as free text."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_clean_json(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clean_json(v) for v in value)
    return value


class Attachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A file that came with a message; botloom keeps its metadata, not its bytes."""

    url: str | None = None
    """Where the channel serves the file (Twilio's MediaUrl0, ...)."""
    content_type: str | None = None
    filename: str | None = None
    size: int | None = None
    """Size in bytes, when the channel tells."""

    def __post_init__(self) -> None:
        """Refuse a URL or type with a control character; clean the file name."""
        check_identifier("attachment url", self.url)
        check_identifier("attachment content_type", self.content_type)
        if self.filename is not None:
            msgspec.structs.force_setattr(self, "filename", clean_text(self.filename))


class InboundMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message an end user sent, parsed by a channel."""

    channel: str
    """Name of the channel that received it (``twilio``, ``email``, ``webchat``, ``rest``)."""
    text: str
    """The message text, already stripped of the channel's wrapping (quoted mail history, ...)."""
    sender: str
    """The end user's address on that channel: a phone number, an e-mail address, a web user id."""
    conversation_key: str | None = None
    """What ties messages of one conversation together on the channel (an e-mail thread root,
    a web conversation id); ``None`` lets the host use the sender's address."""
    idempotency_key: str | None = None
    """The channel's own id for the message (Twilio's MessageSid, the e-mail's Message-ID, a
    client-chosen id); a second message with the same key is answered, never run twice."""
    attachments: tuple[Attachment, ...] = ()
    metadata: dict[str, Any] = {}
    """Channel-specific extras worth keeping (subject, profile name, recipient address)."""
    received_at: datetime = msgspec.field(default_factory=utcnow)

    def __post_init__(self) -> None:
        """Check the message once, as it crosses into botloom (see :func:`clean_text`, :func:`check_identifier`).

        Raises :class:`InvalidMessage` naming the identifier that holds a control
        character; removes them from the text and the metadata (names, subjects).
        """
        for field in ("channel", "sender", "conversation_key", "idempotency_key"):
            check_identifier(field, getattr(self, field))
        text = clean_text(self.text)
        if text is not self.text:
            msgspec.structs.force_setattr(self, "text", text)
        if self.metadata:
            msgspec.structs.force_setattr(self, "metadata", _clean_json(self.metadata))


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message the bot sends back to an end user through a channel."""

    channel: str
    text: str
    recipient: str
    """The end user's address on the channel (the inbound message's ``sender``)."""
    conversation_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    metadata: dict[str, Any] = {}
    """Channel-specific extras (subject and threading headers for e-mail, the sender number)."""
    idempotency_key: str | None = None
    """A key the channel may pass to its provider so a retried send is not delivered twice."""


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """What a moderation hook returns to stop a message instead of letting it through."""

    reason: str
    """Why, for logs and the debugger (never shown to the end user)."""
    reply: str | None = None
    """What the end user is told instead; ``None`` uses the bot's fallback reply."""
