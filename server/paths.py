"""Bot references in URLs: an id, or ``tenant-slug/bot-slug`` as two path segments.

DESIGN.md lets every ``{bot}`` in a URL be either form
(``/api/v1/bots/acme/support/messages``). Litestar's router cannot tell a
two-segment parameter from a sub-resource, so before routing the app joins the
two slugs into one segment, ``acme:support`` (``:`` never occurs in a slug or an
id), and handlers receive that.
"""

from __future__ import annotations

import re

from botloom.core.domain import SLUG_PATTERN

_SLUG = SLUG_PATTERN.strip("^$")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PREFIXES = r"/api/v1/bots/|/chat/|/channels/[a-z][a-z0-9_-]*/"
_PAIR = re.compile(rf"^(?P<prefix>{_PREFIXES})(?P<tenant>{_SLUG})/(?P<bot>{_SLUG})(?P<rest>/.*)?$")
_ID = re.compile(rf"^(?:{_PREFIXES}){_UUID}(?:/.*)?$")

SEPARATOR = ":"


def join_bot_segments(path: str) -> str:
    """Rewrite ``/…/bots/acme/support/x`` as ``/…/bots/acme:support/x``; ids and other paths stay."""
    if _ID.match(path):
        return path
    match = _PAIR.match(path)
    if match is None:
        return path
    return f"{match['prefix']}{match['tenant']}{SEPARATOR}{match['bot']}{match['rest'] or ''}"


def bot_ref(segment: str) -> str:
    """The reference the bot repository understands: an id, or ``tenant/bot``."""
    return segment.replace(SEPARATOR, "/", 1)
