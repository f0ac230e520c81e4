"""Push channels' webhooks: ``POST /channels/{channel}/{bot}`` and ``POST /channels/{channel}/{bot}/{subpath}``.

Each push channel declares its routes (by default these two); the server mounts
them (:mod:`botloom.server.channels.routes`) and hands each request to the one
inbound path (:meth:`botloom.runtime.inbound.Inbound.webhook`): the channel
verifies and parses it; the messages are stored and their turns queued before
the provider gets its answer; a status callback updates the stored reply it
reports on. A channel that is not installed, or takes no webhooks, is a 404.

Every bad request gets a 4xx saying why, and nothing is stored: an unknown bot
or channel (404), a channel the bot has not enabled (403), a missing or forged
signature (403), a body that is too large (413), not the channel's format or
not in its encoding (400, 415).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, post
from litestar._multipart import parse_content_header
from litestar.connection import WebSocket
from litestar.datastructures import URL
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath
from litestar.types import Scope

from botloom.core.channels import ChannelRejected, ChannelRequest, ChannelRoute
from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.paths import bot_ref

logger = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
ERRORS: list[type[HTTPException]] = [NotFoundException, PermissionDeniedException]
WEBHOOK_MAX_BODY = 32 * 1024 * 1024
"""The most any channel may accept in one webhook; each channel's own ``max_request_bytes`` is checked first."""
WEBHOOK_OPT = "botloom_webhook"
"""The ``opt`` key of a push channel's webhook handler: (channel, its route, the sub-path of a route without
``{subpath}``), for the fast path (:mod:`botloom.server.channels.fast`)."""
ROUTE_MAX_AGE = 1.0
"""Seconds a process may answer webhooks with a bot and channel config it read before: a change of
either reaches every webhook within this long (a request refused with an older config is checked
again with the stored one, so a rotated token is never refused)."""


def rejected(exc: ChannelRejected) -> HTTPException:
    """A channel's (or the inbound path's) refusal as the HTTP error it answers."""
    return HTTPException(status_code=exc.status, detail=exc.detail)


async def channel_request(
    request: Request[Any, Any, Any], settings: Settings, route: ChannelRoute, ref: str, subpath: str, **extra: Any
) -> ChannelRequest:
    """The request as channels see it, at the URL the provider called (``BOTLOOM_PUBLIC_URL`` when set).

    The path is rebuilt with the bot named as the provider named it
    (``acme/support``), not as the router saw it; a form body is parsed (400 when
    it is not valid in its charset, 415 for a charset Python does not know).
    """
    body = await request.body()
    # ASGI gives header names in lower case (the last of repeated ones wins, as before)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.scope["headers"]}
    return ChannelRequest(
        method=request.method,
        url=public_url(request, settings, route, ref, subpath),
        headers=headers,
        body=body,
        form=form_of(body, headers.get("content-type", "")),
        subpath=subpath,
        bot_ref=ref,
        **extra,
    )


def form_of(body: bytes, content_type: str) -> dict[str, str]:
    """A form body's fields (the last of repeated ones wins); nothing for another media type.

    400 when the body is not valid in its charset, 415 for a charset Python does not know.
    """
    media_type, options = parse_content_header(content_type)
    if media_type != FORM:
        return {}
    charset = options.get("charset", "utf-8")
    try:
        return dict(parse_qsl(body.decode(charset), keep_blank_values=True, encoding=charset, errors="strict"))
    except LookupError:
        raise HTTPException(status_code=415, detail=f"unsupported charset {charset!r}") from None
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(status_code=400, detail=f"the form body is not valid {charset}") from None


def public_url(
    request: Request[Any, Any, Any] | WebSocket[Any, Any, Any],
    settings: Settings,
    route: ChannelRoute,
    ref: str,
    subpath: str,
) -> str:
    """The URL the caller called: the route's path with the bot as named, under ``BOTLOOM_PUBLIC_URL`` if set."""
    return url_of(request.scope, settings, route, ref, subpath)


def url_of(scope: Scope, settings: Settings, route: ChannelRoute, ref: str, subpath: str) -> str:
    """:func:`public_url` of a request's ASGI scope."""
    path = route.path.replace("{bot}", ref).replace("{subpath}", subpath)
    query = scope.get("query_string", b"").decode("latin-1")
    if settings.public_url:
        base = settings.public_url.rstrip("/")
    else:
        url = URL.from_scope(scope)
        base = f"{url.scheme}://{url.netloc}{scope.get('root_path', '')}"
    return base + path + (f"?{query}" if query else "")


async def handle_webhook(
    request: Request[Any, Any, Any], services: Services, *, channel: str, route: ChannelRoute, bot: str, subpath: str
) -> Response[bytes]:
    """Size checks, then the one inbound path; answer with what the channel says (see the module docstring)."""
    ref = bot_ref(bot)
    try:
        binding = await services.inbound.bindings.find(ref, channel, max_age=ROUTE_MAX_AGE)
    except ChannelRejected as exc:
        raise rejected(exc) from None
    limit = min(binding.adapter.max_request_bytes, WEBHOOK_MAX_BODY)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"the {channel} channel takes bodies of at most {limit} bytes")
    incoming = await channel_request(request, request.app.state.settings, route, ref, subpath, bot=binding.bot)
    if len(incoming.body) > limit:
        raise HTTPException(status_code=413, detail=f"the {channel} channel takes bodies of at most {limit} bytes")
    try:
        answer = await services.inbound.webhook(binding, incoming)
    except ChannelRejected as exc:
        raise rejected(exc) from None
    return Response(
        content=answer.body, status_code=answer.status, media_type=answer.media_type, headers=dict(answer.headers)
    )


@post(
    "/channels/{channel:str}/{bot:str}",
    summary="A webhook of a channel that is not installed",
    tags=["channels"],
    raises=ERRORS,
    include_in_schema=False,
    request_max_body_size=WEBHOOK_MAX_BODY,
)
async def no_channel(channel: FromPath[str], bot: FromPath[str]) -> None:
    """404: every installed push channel has its own routes, which the router prefers to this one."""
    raise NotFoundException(f"no channel {channel!r} takes webhooks")


@post(
    "/channels/{channel:str}/{bot:str}/{subpath:str}",
    summary="A webhook of a channel that is not installed, with a sub-path",
    tags=["channels"],
    raises=ERRORS,
    include_in_schema=False,
    request_max_body_size=WEBHOOK_MAX_BODY,
)
async def no_channel_path(channel: FromPath[str], bot: FromPath[str], subpath: FromPath[str]) -> None:
    """404, like :func:`no_channel`."""
    raise NotFoundException(f"no channel {channel!r} takes webhooks")


WEBHOOK_HANDLERS = [no_channel, no_channel_path]
