"""Reading one inbound e-mail: its thread, its new text, its attachments, and whether a robot sent it.

Threading: every message of one e-mail thread belongs to one conversation. A
thread is named by its root, the first Message-ID in ``References`` (or
``In-Reply-To``, or the message's own Message-ID when it starts a thread).
Replies the bot sends carry the thread's name inside their own Message-ID, so
a client that keeps only ``In-Reply-To`` still lands in the right conversation.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from botloom import Attachment, InboundMessage

MAX_TEXT = 20_000
"""Characters of a message's new text that reach the turn."""
MAX_ATTACHMENTS = 50
MAX_MULTIPARTS = 100
"""MIME multipart sections a message may have (real mail has a handful; thousands nest too deep to read)."""
MAX_REFERENCES = 50
"""Message-IDs of ``References`` kept (the root and the latest ones)."""

_MESSAGE_ID = re.compile(r"<([^<>\s]{1,500})>")
_OURS = re.compile(r"^botloom\.([0-9a-f]{32})\.")
_ROBOT_SENDERS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+\-.].*)?$", re.IGNORECASE)
_ROBOT_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_MOBILE_FOOTER = re.compile(r"\n*^(Sent from my \w+.*|Get Outlook for \w+.*|Von meinem \w+ gesendet\.?)\s*\Z", re.M)
_SUBJECT_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|ref|fw|fwd|wg|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


class MailError(ValueError):
    """The bytes are not an e-mail botloom can read (no sender, not RFC 822)."""


@dataclass(frozen=True)
class Thread:
    """Where a message belongs: the thread's key, and the headers a reply must carry."""

    key: str
    """The conversation key: ``mail:`` and a hash of the thread's root Message-ID."""
    message_id: str
    """The message's own Message-ID, without angle brackets."""
    references: tuple[str, ...]
    """The thread's Message-IDs up to and including this message's, oldest first."""


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs in a header value (``References``, ``In-Reply-To``), without angle brackets."""
    return _MESSAGE_ID.findall(value or "")


def thread_key(root: str) -> str:
    """The conversation key of the thread whose first message is ``root``."""
    return hashlib.sha256(root.encode()).hexdigest()[:32]


def thread_of(message_id: str, references: list[str], in_reply_to: list[str]) -> Thread:
    """The thread of a message with these headers (see the module docstring)."""
    chain = references or in_reply_to
    key = None
    for candidate in [*chain[:1], *in_reply_to, *chain[1:]]:
        ours = _OURS.match(candidate)
        if ours:
            key = ours.group(1)
            break
    if key is None:
        key = thread_key(chain[0] if chain else message_id)
    kept = [*chain, *(i for i in in_reply_to if i not in chain)]
    if len(kept) > MAX_REFERENCES - 1:
        kept = [kept[0], *kept[-(MAX_REFERENCES - 2) :]]
    return Thread(key=f"mail:{key}", message_id=message_id, references=(*kept, message_id))


def reply_message_id(thread: str, message_id: str, domain: str) -> str:
    """The Message-ID of a reply the bot sends in ``thread``: it names the thread (see the module docstring)."""
    key = thread.removeprefix("mail:")
    return f"botloom.{key}.{message_id}@{domain}"


def read_mail(raw: bytes) -> EmailMessage:
    """Parse raw RFC 822 bytes; :class:`MailError` when they hold no message."""
    if not raw.strip():
        raise MailError("the body is empty: post the raw RFC 822 message")
    if b"\x00" in raw[:4096]:
        raise MailError("the body is binary, not an RFC 822 message")
    if raw.lower().count(b"multipart/") > MAX_MULTIPARTS:
        raise MailError(f"the message has more than {MAX_MULTIPARTS} multipart sections")
    message = BytesParser(policy=policy.default).parsebytes(raw)
    if not message.keys():
        raise MailError("no mail headers found: post the raw RFC 822 message")
    if not isinstance(message, EmailMessage):  # pragma: no cover - policy.default builds EmailMessage
        raise MailError("not an e-mail message")
    return message


def header(message: Message, name: str, limit: int = 2000) -> str:
    """A header's decoded value on one line (``""`` when missing or unreadable)."""
    try:
        value = message.get(name)
    except Exception:  # noqa: BLE001 - a malformed header is treated as missing
        return ""
    if value is None:
        return ""
    return " ".join(str(value).split())[:limit]


def sender_of(message: Message) -> tuple[str, str]:
    """``(address, display name)`` of the message's author: ``Reply-To`` first, then ``From``."""
    for name in ("reply-to", "from"):
        name_, address = email.utils.parseaddr(header(message, name))
        if "@" in address and not any(c.isspace() for c in address):
            return address.lower(), name_
    raise MailError("the message has no sender address (From)")


def robot_reason(message: Message, sender: str, own_address: str) -> str | None:
    """Why a robot sent this message (an auto-reply, a bounce, a list), or ``None`` for a person."""
    auto = header(message, "auto-submitted").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    if header(message, "return-path").strip() == "<>":
        return "empty return path (a bounce)"
    if message.get_content_type() == "multipart/report":
        return "a delivery or read report"
    local = sender.partition("@")[0]
    if _ROBOT_SENDERS.match(local):
        return f"sent by {sender}"
    if sender == own_address.lower():
        return "sent by the bot's own address"
    if header(message, "precedence").lower() in _ROBOT_PRECEDENCE:
        return f"Precedence: {header(message, 'precedence').lower()}"
    for name in ("x-autoreply", "x-autorespond"):  # not X-Auto-Response-Suppress: Outlook sets it on any mail
        if header(message, name):
            return f"{name} header"
    if header(message, "list-id") or header(message, "list-unsubscribe"):
        return "a mailing list message"
    return None


_WINDOWS_1252 = frozenset({"iso-8859-1", "latin-1", "latin1", "l1", "us-ascii", "ascii", "iso8859-1", "cp819"})
"""Charset labels that mail clients (Outlook) use for Windows-1252 text, as browsers read them (WHATWG)."""


def _decoded(part: Message) -> str:
    """A text part's content; an unknown charset or a broken encoding yields replacement characters, not an error."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = (part.get_content_charset() or "utf-8").lower()
    if charset in _WINDOWS_1252:
        charset = "cp1252"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def body_text(message: EmailMessage) -> str:
    """The message's text: its plain-text body, or its HTML body turned into text."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except Exception:  # noqa: BLE001 - a malformed MIME tree: no body found
        part = None
    if part is None:
        return ""
    text = _decoded(part)
    if part.get_content_type() == "text/html":
        from botloom import html_to_text  # on first use: it brings the knowledge base's parsers

        text = html_to_text(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def new_text(text: str) -> str:
    """The text a person wrote in this message: quoted earlier mail, signatures and mobile footers removed."""
    from mailparser_reply import EmailReplyParser

    if not text.strip():
        return ""
    try:
        replies = EmailReplyParser(languages=["en", "de", "fr", "es", "it", "nl", "pt", "sv"]).read(text).replies
        latest = replies[0].body if replies else text
    except Exception:  # noqa: BLE001 - a parser failure keeps the whole text rather than losing it
        latest = text
    latest = _MOBILE_FOOTER.sub("", latest.strip())
    lines = [line for line in latest.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(lines).strip()[:MAX_TEXT]


def attachments_of(message: EmailMessage) -> tuple[Attachment, ...]:
    """Metadata of the message's attachments (names, types, sizes); their content is not kept."""
    found = []
    try:
        parts = list(message.iter_attachments())
    except Exception:  # noqa: BLE001 - a malformed MIME tree: no attachments found
        parts = []
    for part in parts[:MAX_ATTACHMENTS]:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else None
        found.append(
            Attachment(
                content_type=part.get_content_type(),
                filename=(part.get_filename() or "")[:200] or None,
                size=size,
            )
        )
    return tuple(found)


def subject_of(message: Message) -> str:
    """The subject, on one line, without reply and forward prefixes (``Re:``, ``AW:``, ``Fwd:``)."""
    return _SUBJECT_PREFIX.sub("", header(message, "subject", 500)).strip()


def to_inbound(raw: bytes, *, channel: str, own_address: str, truncated: bool = False) -> InboundMessage | str:
    """The message as botloom's :class:`InboundMessage`, or why it is not answered (a robot sent it).

    Raises :class:`MailError` when ``raw`` is not a readable e-mail.
    """
    message = read_mail(raw)
    sender, name = sender_of(message)
    reason = robot_reason(message, sender, own_address)
    if reason is not None:
        return reason
    ids = message_ids(header(message, "message-id", 1000))
    message_id = ids[0] if ids else f"sha256.{hashlib.sha256(raw).hexdigest()}@botloom.invalid"
    thread = thread_of(
        message_id,
        message_ids(header(message, "references", 20_000)),
        message_ids(header(message, "in-reply-to", 2000)),
    )
    text = new_text(body_text(message))
    attachments = attachments_of(message)
    subject = subject_of(message)
    if not text and not attachments:
        text = subject
    metadata: dict[str, Any] = {
        "subject": subject,
        "message_id": thread.message_id,
        "references": list(thread.references),
        "thread": thread.key,
        "from_name": name,
        "from": sender,
        "to": own_address,
    }
    if truncated:
        metadata["truncated"] = True
    return InboundMessage(
        channel=channel,
        text=text,
        sender=sender,
        conversation_key=thread.key,
        idempotency_key=thread.message_id,
        attachments=attachments,
        metadata=metadata,
    )


def bounced_message_id(raw: bytes) -> tuple[str, str] | None:
    """For a delivery failure report (RFC 3464): the Message-ID of the mail that bounced, and why."""
    try:
        message = read_mail(raw)
    except MailError:
        return None
    if message.get_content_type() != "multipart/report":
        return None
    action, detail, original = "", "", None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            blocks = part.get_payload()
            for block in blocks if isinstance(blocks, list) else []:
                if isinstance(block, Message):
                    action = action or header(block, "action")
                    detail = detail or header(block, "diagnostic-code") or header(block, "status")
        elif kind in ("message/rfc822", "text/rfc822-headers"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            source = header(inner, "message-id") if isinstance(inner, Message) else _field(str(payload), "Message-ID")
            ids = message_ids(source)
            original = original or (ids[0] if ids else None)
    if original is None or action.lower() not in ("failed", ""):
        return None
    return original, detail or "the recipient's mail server refused the message"


def _field(text: str, name: str) -> str:
    """The value of a ``Name: value`` line in a block of header-like text."""
    match = re.search(rf"^{re.escape(name)}:\s*(.+)$", text, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip()[:500] if match else ""
