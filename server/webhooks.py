"""Channel webhooks: ``POST /channels/{channel}/{bot}`` and ``POST /channels/{channel}/{bot}/{subpath}``.

One pair of routes serves every push channel (Twilio, e-mail, a third party's),
whatever its wire format: the channel verifies the request and parses it; the
messages are stored and their turns queued before the provider gets its answer;
a status callback updates the stored reply it reports on. REST and web chat
(``delivery = "response"``) have their own routes and are not served here.

Every bad request gets a 4xx saying why, and nothing is stored: an unknown bot
or channel (404), a channel the bot has not enabled (403), a missing or forged
signature (403), a body that is too large (413), not the channel's format or
not in its encoding (400, 415).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from litestar import Request, Response, post
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath

from botloom.core.definitions import ChannelAdapter, ChannelRejected, ChannelRequest
from botloom.core.domain import Bot
from botloom.core.settings import Settings
from botloom.runtime.delivery import delivery_report, response_window
from botloom.runtime.services import Services
from botloom.server.deps import ServicesDep
from botloom.server.paths import bot_ref

logger = logging.getLogger(__name__)
T = TypeVar("T")

FORM = "application/x-www-form-urlencoded"
ERRORS: list[type[HTTPException]] = [NotFoundException, PermissionDeniedException]
WEBHOOK_MAX_BODY = 32 * 1024 * 1024
"""The most any channel may accept in one webhook; each channel's own ``max_request_bytes`` is checked first."""
ROUTE_MAX_AGE = 1.0
"""Seconds a process may answer webhooks with a bot and channel config it read before: a change of
either reaches every webhook within this long (a request refused with an older config is checked
again with the stored one, so a rotated token is never refused)."""


async def webhook_route(
    services: Services, ref: str, name: str, *, max_age: float = 0.0
) -> tuple[Bot, ChannelAdapter, dict[str, Any]]:
    """The bot, the push channel ``name`` and the bot's config of it, in one query (or from the last second's).

    404 for no such bot or channel, 403 when the bot has not enabled the channel.
    """
    adapter = services.host.registry.channels.get(name)
    owner = services.host.registry.owner("channel", name)
    if adapter is None or owner is None or adapter.delivery != "push":
        raise NotFoundException(f"no channel {name!r} takes webhooks")
    found = await services.deliveries.routes.find(bot_ref(ref), owner, max_age=max_age)
    if found is None:
        raise NotFoundException(f"no bot {bot_ref(ref)!r}")
    bot, setting = found
    if setting is None or not setting.enabled:
        raise PermissionDeniedException(f"the {name} channel is not enabled for this bot")
    return bot, adapter, dict(setting.config)


async def channel_request(
    request: Request[Any, Any, Any], settings: Settings, channel: str, bot: str, subpath: str
) -> ChannelRequest:
    """The request as channels see it, at the URL the provider called (``BOTLOOM_PUBLIC_URL`` when set).

    The path is rebuilt with the bot named as the provider named it
    (``acme/support``), not as the router saw it; a form body is parsed (400 when
    it is not valid in its charset, 415 for a charset Python does not know).
    """
    body = await request.body()
    headers = {name.lower(): value for name, value in request.headers.items()}
    media_type, options = request.content_type
    form: dict[str, str] = {}
    if media_type == FORM:
        charset = options.get("charset", "utf-8")
        try:
            form = dict(parse_qsl(body.decode(charset), keep_blank_values=True, encoding=charset, errors="strict"))
        except LookupError:
            raise HTTPException(status_code=415, detail=f"unsupported charset {charset!r}") from None
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(status_code=400, detail=f"the form body is not valid {charset}") from None
    path = f"/channels/{channel}/{bot_ref(bot)}" + (f"/{subpath}" if subpath else "")
    query = request.scope.get("query_string", b"").decode("latin-1")
    if settings.public_url:
        base = settings.public_url.rstrip("/")
    else:
        base = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"
    url = base + path + (f"?{query}" if query else "")
    return ChannelRequest(method=request.method, url=url, headers=headers, body=body, form=form, subpath=subpath)


def channel_call(adapter: ChannelAdapter, method: Callable[..., T], *args: Any) -> T:
    """Call one of a channel's methods on a request: ``ChannelRejected`` is its 4xx; any other error a 400."""
    try:
        return method(*args)
    except ChannelRejected as exc:
        raise HTTPException(status_code=exc.status, detail=exc.detail) from None
    except Exception as exc:  # a channel's bug on a strange request is still the request's 4xx
        logger.exception("the %s channel failed on a request", adapter.name)
        raise HTTPException(status_code=400, detail=f"the {adapter.name} channel could not read this request") from exc


async def handle_webhook(
    request: Request[Any, Any, Any], services: Services, channel: str, bot: str, subpath: str
) -> Response[bytes]:
    """Verify, parse, store and queue; answer with what the channel says (see the module docstring)."""
    found, adapter, config = await webhook_route(services, bot, channel, max_age=ROUTE_MAX_AGE)
    limit = min(adapter.max_request_bytes, WEBHOOK_MAX_BODY)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"the {channel} channel takes bodies of at most {limit} bytes")
    incoming = await channel_request(request, request.app.state.settings, channel, bot, subpath)
    if len(incoming.body) > limit:
        raise HTTPException(status_code=413, detail=f"the {channel} channel takes bodies of at most {limit} bytes")
    try:
        channel_call(adapter, adapter.verify, incoming, config)
    except HTTPException as exc:  # refused with the config of the last second? check with the stored one
        if exc.status_code != 403:
            raise
        found, adapter, stored = await webhook_route(services, bot, channel)
        if stored == config:
            raise
        channel_call(adapter, adapter.verify, incoming, config := stored)
    messages = channel_call(adapter, adapter.parse, incoming, config)
    report = channel_call(adapter, delivery_report, adapter, incoming, config)
    wait = channel_call(adapter, response_window, adapter, incoming, config)
    deliveries = services.deliveries
    if report is not None and not await deliveries.record(found, adapter.name, report):
        logger.info("a %s status report named no message of bot %s", channel, found.id)
    stored_messages = [(await deliveries.accept(found, message, hold=wait))[0] for message in messages]
    replies = await deliveries.answer_in_response(found, adapter, config, stored_messages, wait) if wait else []
    answer = adapter.acknowledge(incoming, replies or None, config)
    return Response(content=answer.body, status_code=answer.status, media_type=answer.media_type)


@post(
    "/channels/{channel:str}/{bot:str}",
    summary="A channel provider's webhook (Twilio SMS and WhatsApp, e-mail, ...)",
    tags=["channels"],
    raises=ERRORS,
    request_max_body_size=WEBHOOK_MAX_BODY,
)
async def channel_webhook(
    request: Request[Any, Any, Any], channel: FromPath[str], bot: FromPath[str], services: ServicesDep
) -> Response[bytes]:
    """An inbound message for ``bot`` (an id or ``tenant-slug/bot-slug``) through ``channel``."""
    return await handle_webhook(request, services, channel, bot, "")


@post(
    "/channels/{channel:str}/{bot:str}/{subpath:str}",
    summary="A channel provider's webhook with a sub-path (a status callback, e-mail's inbound)",
    tags=["channels"],
    raises=ERRORS,
    request_max_body_size=WEBHOOK_MAX_BODY,
)
async def channel_webhook_path(
    request: Request[Any, Any, Any],
    channel: FromPath[str],
    bot: FromPath[str],
    subpath: FromPath[str],
    services: ServicesDep,
) -> Response[bytes]:
    """A channel's other webhooks, such as Twilio's ``status`` callbacks."""
    return await handle_webhook(request, services, channel, bot, subpath)


WEBHOOK_HANDLERS = [channel_webhook, channel_webhook_path]
