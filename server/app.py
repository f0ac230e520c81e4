"""The Litestar application: ``create_app`` wires the routes to botloom's services.

``botloom serve`` builds the app with no services; it opens them in its
lifespan. Tests build it with services they opened themselves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import (
    ControllerRouterHandler,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)

from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.auth import Principal, authenticate
from botloom.server.errors import exception_handlers, log_unhandled
from botloom.server.middleware import rate_limit_config, request_context
from botloom.server.paths import ORIGINAL_PATH, method_not_allowed, routing_path

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576
"""Largest request body the API accepts (1 MiB); knowledge uploads have their own limit."""


class BotloomApp(Litestar):
    """A Litestar app that lets ``{bot}`` be ``tenant-slug/bot-slug`` (see :mod:`botloom.server.paths`)."""

    webhook_fast_path: Any = None
    """Answers push channels' webhooks before Litestar's request cycle (:mod:`botloom.server.channels.fast`)."""

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        """Join a two-segment bot reference into one before Litestar routes the request, keeping the client's path."""
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            method = scope.get("method")
            joined = routing_path(path, method if isinstance(method, str) else None, self.asgi_router.handle_routing)
            if joined != path:
                scope = {**scope, "path": joined, "raw_path": joined.encode(), ORIGINAL_PATH: path}  # type: ignore[assignment]
            fast = self.webhook_fast_path
            if fast is not None and scope["type"] == ScopeType.HTTP and await fast(scope, receive, send):
                return
        await super().__call__(scope, receive, send)


def provide_services(state: State) -> Services:
    """The process's open services."""
    services: Services = state.services
    return services


async def authenticated(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Guard of every ``/api/v1`` route: 401 without a valid token, checked before the body is read."""
    if connection.route_handler.opt.get("public"):  # the desk's sign-in (botloom.server.api.agents)
        return
    connection.state.principal = await authenticate(connection, connection.app.state.services)


def provide_principal(request: ASGIConnection) -> Principal:  # type: ignore[type-arg]
    """The caller the guard authenticated."""
    principal: Principal = request.state.principal
    return principal


def api_handlers() -> list[ControllerRouterHandler]:
    """The ``/api/v1`` controllers."""
    from botloom.server.api import API_HANDLERS
    from botloom.server.api.budgets import BUDGET_HANDLERS
    from botloom.server.api.dead_letters import DELIVERY_HANDLERS

    return [*API_HANDLERS, *DELIVERY_HANDLERS, *BUDGET_HANDLERS]


def public_handlers() -> list[ControllerRouterHandler]:
    """Routes without API keys: health, metrics, webhooks of channels that are not installed.

    Every channel's own routes (REST chat, web chat, webhooks) are mounted from what
    the channel declares (:mod:`botloom.server.channels.routes`).
    """
    from botloom.server.channels.push import WEBHOOK_HANDLERS
    from botloom.server.debugger import DEBUGGER_HANDLERS  # the debugger page and the API docs' assets
    from botloom.server.public import PUBLIC_HANDLERS

    return [*PUBLIC_HANDLERS, *WEBHOOK_HANDLERS, *DEBUGGER_HANDLERS]


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    extra_handlers: Sequence[ControllerRouterHandler] = (),
    demo: bool = False,
    debug: bool = False,
    workers: bool = True,
) -> Litestar:
    """Build the application; with ``services`` given, use them instead of opening new ones.

    When the app opens its own services it also runs job workers in process,
    unless ``workers`` is false (``botloom worker`` processes run them instead).
    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        async with open_services(settings, host=host) as opened:
            app.state.services = opened
            if not settings.admin_token:
                logger.warning("BOTLOOM_ADMIN_TOKEN is not set: the operator routes (tenants) are closed")
            if demo:
                await _start_demo(opened, settings)
            from botloom.server.worker import workers as job_workers

            async with job_workers(opened) if workers else nullcontext():
                yield

    api = Router(
        path="/api/v1",
        route_handlers=api_handlers(),
        guards=[authenticated],
        dependencies={"principal": Provide(provide_principal, sync_to_thread=False)},
        security=[{"bearer": []}],
    )
    openapi = OpenAPIConfig(
        title="botloom",
        use_handler_docstrings=True,
        render_plugins=_render_plugins(),  # Swagger UI served locally (botloom.server.debugger)
        version=_version(),
        description="The botloom API: tenants, bots, plugins, knowledge, conversations and chat.",
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", description="A tenant's API key, or the operator's admin token"
                )
            }
        ),
    )
    from botloom.server.api.openapi import ExactStructSchemaPlugin
    from botloom.server.channels.routes import plugin_host, register_channel_routes
    from botloom.server.desk import desk_channels, desk_handlers
    from botloom.server.langgraph_api import langgraph_router

    host = services.host if services is not None else plugin_host(settings)  # whose channels' routes to mount
    app = BotloomApp(
        route_handlers=[  # LangGraph API: /langgraph; the agent desk's page and socket (botloom.server.desk)
            api,
            langgraph_router(),
            *public_handlers(),
            *desk_handlers(),
            *extra_handlers,
        ],
        plugins=[
            ExactStructSchemaPlugin(),  # the schema says what msgspec enforces (botloom.server.api.openapi)
            desk_channels(settings),  # each tenant's live events, for the desk and web chat (botloom.server.desk)
        ],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        lifespan=[lifespan],
        openapi_config=openapi,
        cors_config=CORSConfig(
            allow_origins=["*"],
            # x-api-key, cache-control, last-event-id, x-auth-scheme: what LangGraph clients send (/langgraph)
            allow_headers=[
                *("authorization", "content-type"),
                *("x-api-key", "cache-control", "last-event-id", "x-auth-scheme"),
            ],
            expose_headers=["content-location", "x-pagination-next"],
        ),
        request_max_body_size=MAX_BODY_BYTES,
        middleware=[
            request_context,
            PrometheusConfig(app_name="botloom", prefix="botloom", group_path=True).middleware,
            rate_limit_config(settings.rate_limit_per_minute).middleware,
        ],
        stores={"rate_limit": _rate_limit_store(settings)},
        state=State({"settings": settings, **({"services": services} if services is not None else {})}),
        logging_config=None,  # botloom.server.logs configures logging (masked, with request ids)
        exception_handlers={  # an outage is a 503 with Retry-After (botloom.server.errors)
            **exception_handlers(),
            MethodNotAllowedException: method_not_allowed,  # in the client's words (botloom.server.paths)
        },
        after_exception=[log_unhandled],  # every unhandled error logged once, with request id and route
        debug=debug,
    )
    register_channel_routes(app, host)  # what each channel declares: the server names none
    return app


async def _start_demo(services: Services, settings: Settings) -> None:
    """Create the demo when its tenant is missing, and say how to reach it."""
    from botloom.server.demo import DEMO_BOT, DEMO_TENANT, demo_agent_lines, ensure_demo

    if await services.store.tenants.get_by_slug(DEMO_TENANT) is not None:
        ready = f"demo bot {DEMO_TENANT}/{DEMO_BOT} is ready"
        print(f"{ready} (run 'botloom demo' for a new API key and desk password)", flush=True)
        return
    info = await ensure_demo(services, progress=lambda line: print(f"  {line}", flush=True), agent=True)
    base = (settings.public_url or "").rstrip("/")
    print(f"demo bot {DEMO_TENANT}/{DEMO_BOT} created; API key of tenant {DEMO_TENANT} (shown once): {info.api_key}")
    print(f"chat page: {base}/chat/{DEMO_TENANT}/{DEMO_BOT}", flush=True)
    for line in demo_agent_lines(info, base):
        print(line, flush=True)


def _rate_limit_store(settings: Settings) -> Any:
    """Rate-limit counters in Redis when configured (shared by every process), else in memory."""
    if settings.redis_url:
        from litestar.stores.redis import RedisStore

        return RedisStore.with_client(url=settings.redis_url, namespace="botloom:ratelimit")
    from litestar.stores.memory import MemoryStore

    return MemoryStore()


def _render_plugins() -> list[Any]:
    from botloom.server.debugger import render_plugins

    return render_plugins()


def _version() -> str:
    from botloom import __version__

    return __version__


def app_factory() -> Litestar:
    """The app as ``uvicorn --factory botloom.server.app:app_factory`` builds it, from the environment."""
    from botloom.core.settings import load_settings

    return create_app(load_settings())


__all__ = ["BotloomApp", "create_app"]
