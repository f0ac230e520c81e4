"""Messages as they cross botloom's boundaries: in from a channel, out to a channel.

Channels translate their wire format into :class:`InboundMessage` and send
:class:`OutboundMessage`; the graph never sees a channel's own format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (what botloom stores everywhere)."""
    return datetime.now(UTC)


class Attachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A file that came with a message; botloom keeps its metadata, not its bytes."""

    url: str | None = None
    """Where the channel serves the file (Twilio's MediaUrl0, ...)."""
    content_type: str | None = None
    filename: str | None = None
    size: int | None = None
    """Size in bytes, when the channel tells."""


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
