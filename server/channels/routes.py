"""Mounting the routes channels declare: the server names no channel, each channel says what it serves.

For every registered channel, each :class:`~botloom.core.channels.ChannelRoute`
of :meth:`~botloom.core.channels.ChannelAdapter.routes` becomes a Litestar
handler: ``POST`` on a push channel is a webhook (:mod:`botloom.server.channels.push`),
``POST`` on a response channel, ``WEBSOCKET`` on a socket channel and ``GET``
pages are served by :mod:`botloom.server.channels.live`. ``auth="api_key"`` routes need
a tenant's API key (or the operator's token), checked before the body is read.

``create_app`` mounts them when it builds the app: from the services' plugins,
or from the plugins it discovers itself (:func:`plugin_host`), which the app's
services then use too.

A route that does not fit its channel (a ``WEBSOCKET`` route of a push channel),
or whose method and path another channel took first, is logged and skipped: the
other channels' routes still work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.enums import MediaType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from botloom.core.channels import ChannelAdapter, ChannelRoute
from botloom.core.host import PluginHost
from botloom.core.settings import Settings
from botloom.server.api.common import route_validation_error
from botloom.server.auth import Principal
from botloom.server.channels.live import handle_page, handle_response, handle_socket
from botloom.server.channels.push import WEBHOOK_MAX_BODY, WEBHOOK_OPT, handle_webhook
from botloom.server.deps import ServicesDep

logger = logging.getLogger(__name__)


class UnsupportedMediaType(ClientException):
    """A form body in a charset Python does not know (documented for webhooks; raised by ``channel_request``)."""

    status_code = 415


LIMITED: list[type[HTTPException]] = [TooManyRequestsException, ServiceUnavailableException]
"""What a rate-limited route may answer besides its own errors: 429 over the limit, 503 during an outage."""
FITS = {"push": {"POST", "GET"}, "response": {"POST", "GET"}, "socket": {"WEBSOCKET", "GET"}}
"""The methods a channel of each kind may declare routes with."""


def litestar_path(route: ChannelRoute) -> str:
    """The route's path in Litestar's syntax (``{bot:str}``, ``{subpath:str}``)."""
    return route.path.replace("{bot}", "{bot:str}").replace("{subpath}", "{subpath:str}")


def channel_handlers(host: PluginHost, *, guard: Callable[..., Any]) -> list[BaseRouteHandler]:
    """A handler for each route of each registered channel; ``guard`` authenticates ``api_key`` routes."""
    handlers: list[BaseRouteHandler] = []
    taken: dict[tuple[str, str], str] = {}
    for name, adapter in host.registry.channels.items():
        try:
            routes = tuple(adapter.routes())
        except Exception:  # a plugin's bug must not stop the server
            logger.exception("the %s channel's routes() failed; it serves no routes", name)
            continue
        if adapter.kind != "push" and not routes:
            logger.warning("the %s channel (%s) declares no routes: nothing can reach it", name, adapter.kind)
        for route in routes:
            key = (route.method, litestar_path(route).replace("{bot:str}", "{}"))
            if not isinstance(route, ChannelRoute) or route.method not in FITS[adapter.kind]:
                logger.error("the %s channel (%s) cannot serve %r; skipped", name, adapter.kind, route)
                continue
            if key in taken:
                logger.error("%s %s of the %s channel is taken by %s; skipped", *key, name, taken[key])
                continue
            taken[key] = name
            handlers.append(_handler(adapter, route, len(handlers), guard))
    return handlers


def _handler(
    adapter: ChannelAdapter[Any],
    route: ChannelRoute,
    index: int,
    guard: Callable[..., Any],
) -> BaseRouteHandler:
    """One Litestar handler serving ``route`` of ``adapter``."""
    name, tail = adapter.name, route.tail
    has_subpath = tail.endswith("{subpath}")
    fixed = "" if has_subpath else tail
    options: dict[str, Any] = {
        "name": f"channel-{name}-{index}",
        "summary": route.summary or None,
        "description": route.description or None,
        "tags": list(route.tags),
    }
    api_key = route.auth == "api_key"
    if api_key:
        options |= {"guards": [guard], "security": [{"bearer": []}]}
    if route.method == "WEBSOCKET":

        async def socket_handler(socket: WebSocket[Any, Any, Any], bot: FromPath[str], services: ServicesDep) -> None:
            subpath = socket.path_params.get("subpath", fixed)
            caller: Principal | None = socket.state.principal if api_key else None
            await handle_socket(socket, services, channel=name, route=route, bot=bot, subpath=subpath, principal=caller)

        del options["tags"], options["summary"], options["description"]
        return websocket(litestar_path(route), **options)(socket_handler)
    if route.method == "GET":

        async def page_handler(
            request: Request[Any, Any, Any], bot: FromPath[str], services: ServicesDep
        ) -> Response[bytes]:
            subpath = request.path_params.get("subpath", fixed)
            caller: Principal | None = request.state.principal if api_key else None
            return await handle_page(
                request, services, channel=name, route=route, bot=bot, subpath=subpath, principal=caller
            )

        page_errors: list[type[HTTPException]] = [NotFoundException, PermissionDeniedException, *LIMITED]
        # a page is HTML (the channel's answer sets its type; this is what the API schema says); errors are JSON
        page = {200: ResponseSpec(str, generate_examples=False, description="The page", media_type=MediaType.HTML)}
        return get(litestar_path(route), raises=page_errors, responses=page, **options)(page_handler)
    if adapter.kind == "push":

        async def webhook_handler(
            request: Request[Any, Any, Any], bot: FromPath[str], services: ServicesDep
        ) -> Response[bytes]:
            subpath = request.path_params.get("subpath", fixed)
            return await handle_webhook(request, services, channel=name, route=route, bot=bot, subpath=subpath)

        # what a provider may get: the channel's acknowledgement (200), a refused signature (403), no such bot
        # (404), a body too large (413) or in an unknown charset (415), 503 during an outage (it retries)
        errors: list[type[HTTPException]] = [
            NotFoundException,
            PermissionDeniedException,
            RequestEntityTooLarge,
            UnsupportedMediaType,
            ServiceUnavailableException,
        ]
        return post(
            litestar_path(route),
            raises=errors,
            request_max_body_size=WEBHOOK_MAX_BODY,
            status_code=200,
            opt={WEBHOOK_OPT: (name, route, fixed)} if not api_key else {},
            **options,
        )(webhook_handler)
    return _response_route(adapter, route, fixed, options)


def _response_route(
    adapter: ChannelAdapter[Any], route: ChannelRoute, fixed: str, options: dict[str, Any]
) -> BaseRouteHandler:
    """The ``POST`` handler of a response channel's route, its body and answer types shown in the API schema."""
    name, api_key = adapter.name, route.auth == "api_key"
    # Litestar documents the 400 of a checked body itself (one schema: a second 400 type made every 400 body
    # match two alternatives of a oneOf); the route is rate limited like the API, and a body has a size limit.
    errors: list[type[HTTPException]] = [NotFoundException, PermissionDeniedException, *LIMITED, RequestEntityTooLarge]
    if route.body is None:
        errors.insert(0, ValidationException)  # the channel's own 400 for a body it cannot read
    if api_key:
        errors.insert(0, NotAuthorizedException)

    async def response_handler(
        request: Request[Any, Any, Any], bot: FromPath[str], services: ServicesDep
    ) -> Response[bytes]:
        subpath = request.path_params.get("subpath", fixed)
        caller: Principal | None = request.state.principal if api_key else None
        return await handle_response(
            request, services, channel=name, route=route, bot=bot, subpath=subpath, principal=caller
        )

    async def typed_handler(
        request: Request[Any, Any, Any], data: Any, bot: FromPath[str], services: ServicesDep
    ) -> Response[bytes]:
        return await response_handler(request, bot, services)

    handler = typed_handler if route.body is not None else response_handler
    # what the API schema shows: the declared body (checked by Litestar before the channel parses it) and answer
    annotations: dict[str, Any] = {**handler.__annotations__, "return": Response[bytes]}
    if route.body is not None:
        annotations["data"] = JSONBody.__getitem__(route.body)  # type: ignore[type-arg]
    if route.answer is not None:
        annotations["return"] = Response.__class_getitem__(route.answer)  # type: ignore[attr-defined]
    handler.__annotations__ = annotations
    return post(
        litestar_path(route),
        raises=errors,
        request_max_body_size=adapter.max_request_bytes,
        status_code=200,
        # a body Litestar refuses is a 400 naming each field in words, as the API's are
        exception_handlers={ValidationException: route_validation_error},
        **options,
    )(handler)


def register_channel_routes(app: Litestar, host: PluginHost) -> None:
    """Mount every channel's routes on ``app``; a route Litestar refuses (a clash with the API) is logged, skipped.

    Push channels' webhook routes are also answered by the app's fast path
    (:class:`~botloom.server.channels.fast.WebhookFastPath`, ``app.webhook_fast_path``) when the app has one.
    """
    from botloom.server.app import authenticated
    from botloom.server.channels.fast import WebhookFastPath

    fast = WebhookFastPath(app)
    for handler in channel_handlers(host, guard=authenticated):
        try:
            app.register(handler)
        except Exception:
            logger.exception("cannot mount the channel route %s; skipped", sorted(handler.paths))
            continue
        fast.serves = fast.serves or WEBHOOK_OPT in handler.opt
    if hasattr(app, "webhook_fast_path"):
        app.webhook_fast_path = fast


def plugin_host(settings: Settings) -> PluginHost:
    """The deployment's plugins, discovered and collected now (the app mounts their channels' routes at once).

    Works with or without a running event loop (``create_app`` is called from both).
    """
    host = PluginHost.discover(
        allow=settings.plugin_allow_list, block=settings.plugin_block_list, trace=settings.trace_plugins
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return host.collect_sync()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(host.collect_sync).result()
