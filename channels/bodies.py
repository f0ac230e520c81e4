"""What the JSON channels (REST chat, the LangGraph channel) share: decoding a body, the user's text, a reply.

Both answer in the HTTP response (response channels) and take a JSON body that names
a conversation and carries the end user's text: they refuse what is wrong in the
same words, and render a reply the same way.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from botloom import ChannelRejected

MAX_TEXT = 4000
"""Longest user text of one message."""
IDENTIFIER = r"^[^\x00-\x1f\x7f]*$"
"""Ids name things: no control characters (refused, naming the field)."""

Body = TypeVar("Body")


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the bot's answer."""

    id: str
    text: str


def decode_json(body: bytes, shape: type[Body], *, what: str, invalid: int = 400) -> Body:
    """``body`` decoded as ``shape``; :class:`ChannelRejected` naming what is wrong.

    A body that is not JSON is 400 (``malformed JSON``); JSON of the wrong shape is
    ``invalid`` (``invalid {what}: ...``).
    """
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.ValidationError as exc:
        raise ChannelRejected(invalid, f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ChannelRejected(400, f"malformed JSON: {exc}") from None


def checked_text(text: str, *, what: str, status: int = 400) -> str:
    """The user's text, stripped; :class:`ChannelRejected` (``status``) when it is blank or too long."""
    text = text.strip()
    if not text:
        raise ChannelRejected(status, f"invalid {what}: the user message is blank")
    if len(text) > MAX_TEXT:
        raise ChannelRejected(status, f"invalid {what}: the user message is longer than {MAX_TEXT} characters")
    return text


__all__ = ["IDENTIFIER", "MAX_TEXT", "Reply", "checked_text", "decode_json"]
