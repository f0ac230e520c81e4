"""What the server answers, and logs, when a request fails unexpectedly.

* An outage of PostgreSQL or Redis (:func:`botloom.core.errors.is_transient`) is a
  ``503 Service Unavailable`` with ``Retry-After``: Twilio and well-behaved clients
  try again, nothing was lost. It is logged as one WARNING line (an outage makes many).
* Any other unhandled error is a ``500`` (Litestar's body, no details), logged once
  at ERROR with the request id, the route and the traceback.

:func:`exception_handlers` and :func:`log_unhandled` are registered by
:func:`botloom.server.app.create_app`; the hook also sees errors of WebSocket routes,
which close with 4500 (Litestar's default).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ServiceUnavailableException
from litestar.exceptions.responses import create_debug_response, create_exception_response
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap, Scope

from botloom.core.errors import is_transient
from botloom.server.logs import request_id

logger = logging.getLogger("botloom.server.errors")

RETRY_AFTER_SECONDS = 5
"""What ``Retry-After`` says during an outage: the pools reconnect within seconds of the service's return."""
UNAVAILABLE = "the service is temporarily unavailable (its database or cache cannot be reached); try again shortly"


def route_of(scope: Scope) -> str:
    """``METHOD /path/{template}`` of the request, or its path when it reached no route."""
    method = scope.get("method") or ("WEBSOCKET" if scope.get("type") == "websocket" else "?")
    return f"{method} {scope.get('path_template') or scope.get('path', '?')}"


def _is_server_error(exc: BaseException) -> bool:
    """An error nobody turned into a deliberate 4xx (an ``HTTPException`` below 500)."""
    return not isinstance(exc, HTTPException) or exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR


async def log_unhandled(exc: Exception, scope: Scope) -> None:
    """Log an error that reached Litestar, once: request id, route and the exception.

    An ``after_exception`` hook: it runs for every exception a route lets through,
    HTTP or WebSocket; deliberate 4xx answers (``HTTPException``) are not logged.
    """
    if not _is_server_error(exc):
        return
    route = route_of(scope)
    extra = {"route": route, "request_id": request_id.get()}
    if is_transient(exc):
        logger.warning("%s answered 503, a service is unavailable: %s: %s", route, type(exc).__name__, exc, extra=extra)
        return
    logger.error("%s failed: %s: %s", route, type(exc).__name__, exc, exc_info=exc, extra=extra)


def handle_server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The answer to an unhandled error: 503 with ``Retry-After`` during an outage, else a bare 500."""
    if is_transient(exc):
        unavailable = ServiceUnavailableException(UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return create_exception_response(request, unavailable)
    if request.app.debug:
        return create_debug_response(request, exc)
    return create_exception_response(request, exc)


def exception_handlers() -> ExceptionHandlersMap:
    """The application's handlers: every error that is not a deliberate HTTP answer goes to one place."""
    return {HTTP_500_INTERNAL_SERVER_ERROR: handle_server_error}


__all__ = ["RETRY_AFTER_SECONDS", "exception_handlers", "handle_server_error", "log_unhandled", "route_of"]
