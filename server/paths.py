"""Bot references in URLs: an id, or ``tenant-slug/bot-slug`` as two path segments.

DESIGN.md lets every ``{bot}`` in a URL be either form
(``/api/v1/bots/acme/support/messages``). Litestar's router cannot tell a
two-segment parameter from a sub-resource, so before routing the app joins the
two slugs into one segment, ``acme:support`` (``:`` never occurs in a slug or an
id), and handlers receive that.

The joined form is for routing only: the app keeps the path as the user wrote it
(:data:`ORIGINAL_PATH`), the first middleware puts it back once the route is
found, and errors raised while routing (a 405) name it too. A path with just two
segments after the prefix reads both ways (``/api/v1/bots/0/messages``: the bot
``0/messages``, or the ``messages`` of a bot ``0``); the pair wins when its route
answers the method, otherwise the path routes as written, so the handler says
there is no bot ``0`` instead of a 405 about a route the user never meant.
``OPTIONS`` asks what a resource answers: the path as written wins when a route
serves it, so its ``Allow`` is that of the path the API schema names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

from litestar import Request, Response
from litestar.exceptions import MethodNotAllowedException
from litestar.types import Scope

from botloom.core.domain import SLUG_PATTERN

_SLUG = SLUG_PATTERN.strip("^$")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PREFIXES = r"/api/v1/bots/|/chat/|/channels/[a-z][a-z0-9_-]*/"
_PAIR = re.compile(rf"^(?P<prefix>{_PREFIXES})(?P<tenant>{_SLUG})/(?P<bot>{_SLUG})(?P<rest>/.*)?$")
_ID = re.compile(rf"^(?:{_PREFIXES}){_UUID}(?:/.*)?$")

SEPARATOR = ":"
ORIGINAL_PATH = "botloom.original_path"
"""Scope key of the path as the client sent it, when the app routes a joined one."""


def join_bot_segments(path: str) -> str:
    """Rewrite ``/…/bots/acme/support/x`` as ``/…/bots/acme:support/x``; ids and other paths stay."""
    if _ID.match(path) or (match := _PAIR.match(path)) is None:
        return path
    return _joined(match)


def _joined(match: re.Match[str]) -> str:
    return f"{match['prefix']}{match['tenant']}{SEPARATOR}{match['bot']}{match['rest'] or ''}"


def routing_path(path: str, method: str | None, resolve: Callable[..., Any]) -> str:
    """The path the app routes ``path`` by (see the module docstring); ``resolve`` is Litestar's route look-up."""
    if _ID.match(path) or (match := _PAIR.match(path)) is None:
        return path
    joined = _joined(match)
    if match["rest"] or method is None:
        return joined
    if method == "OPTIONS" and _routes(path, method, resolve):
        return path  # what the path as written answers: the Allow of the resource the API schema names
    try:
        resolve(path=joined, method=method)
    except MethodNotAllowedException:
        try:
            resolve(path=path, method=method)
        except Exception:  # noqa: BLE001 - neither reading answers: the pair's 405 stands
            return joined
        return path
    except Exception:  # noqa: BLE001 - Litestar answers the pair's 404 itself
        return joined
    return joined


def _routes(path: str, method: str, resolve: Callable[..., Any]) -> bool:
    """Whether a route answers ``method`` at ``path`` as it is written."""
    try:
        resolve(path=path, method=method)
    except Exception:  # noqa: BLE001 - a 404 or a 405: it does not
        return False
    return True


def bot_ref(segment: str) -> str:
    """The reference the bot repository understands: an id, or ``tenant/bot``."""
    return segment.replace(SEPARATOR, "/", 1)


def original_path(scope: Scope) -> str:
    """The path as the client wrote it."""
    original: str | None = cast("dict[str, Any]", scope).get(ORIGINAL_PATH)
    return original or scope["path"]


def restore_original_path(scope: Scope) -> None:
    """Once routed, let the request carry the path as the client wrote it (in URLs and error messages)."""
    original: str | None = cast("dict[str, Any]", scope).get(ORIGINAL_PATH)
    if original:
        scope["path"] = original
        scope["raw_path"] = original.encode()


def method_not_allowed(request: Request[Any, Any, Any], exc: MethodNotAllowedException) -> Response[dict[str, Any]]:
    """A 405 naming the method, the path as the client wrote it, and the methods the route answers."""
    headers = dict(exc.headers or {})
    allowed = [m for m in headers.get("allow", "").replace(" ", "").split(",") if m and m not in ("OPTIONS", "HEAD")]
    order = {m: i for i, m in enumerate(("GET", "POST", "PUT", "DELETE", "PATCH"))}
    allowed.sort(key=lambda m: (order.get(m, len(order)), m))
    detail = f"{request.method} is not allowed on {original_path(request.scope)}"
    if allowed:
        detail += f"; it answers {', '.join(allowed)}"
    return Response({"status_code": 405, "detail": detail}, status_code=405, headers=headers)
