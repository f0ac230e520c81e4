"""What the server answers, and logs, when a request fails unexpectedly.

* An outage of PostgreSQL or Redis (:func:`botloom.core.errors.is_transient`) is a
  ``503 Service Unavailable`` with ``Retry-After``: Twilio and well-behaved clients
  try again, nothing was lost. It is logged as one WARNING line (an outage makes many).
* PostgreSQL refusing a NUL character a route let through is a ``400`` (logged
  as a WARNING: the route should have refused it naming the field).
* A message whose identifiers a channel filled with control characters
  (:class:`botloom.core.messages.InvalidMessage`) is a ``400`` naming the field; so
  is a JSON body nested too deeply to decode.
* Any other unhandled error is a ``500`` (Litestar's body, no details), logged once
  at ERROR with the request id, the route and the traceback.

:func:`exception_handlers` and :func:`log_unhandled` are registered by
:func:`botloom.server.app.create_app`; the hook also sees errors of WebSocket routes,
which close with 4500 (Litestar's default).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ServiceUnavailableException, ValidationException
from litestar.exceptions.responses import create_debug_response, create_exception_response
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap, Scope

from botloom.core.errors import is_transient
from botloom.core.messages import InvalidMessage
from botloom.server.logs import request_id

logger = logging.getLogger("botloom.server.errors")

RETRY_AFTER_SECONDS = 5
"""What ``Retry-After`` says during an outage: the pools reconnect within seconds of the service's return."""
UNSTORABLE = "invalid request: a value contains a NUL character (U+0000), which cannot be stored"
UNAVAILABLE = "the service is temporarily unavailable (its database or cache cannot be reached); try again shortly"


def route_of(scope: Scope) -> str:
    """``METHOD /path/{template}`` of the request, or its path when it reached no route."""
    method = scope.get("method") or ("WEBSOCKET" if scope["type"] == ScopeType.WEBSOCKET else "?")
    return f"{method} {scope.get('path_template') or scope.get('path', '?')}"


def _is_server_error(exc: BaseException) -> bool:
    """An error nobody turned into a deliberate 4xx (an ``HTTPException`` below 500, a refused message)."""
    if isinstance(exc, InvalidMessage) or is_too_deep(exc):
        return False
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
    if is_unstorable_text(exc):  # answered 400, but the route should have said which field
        logger.warning("%s let a NUL character reach the database (answered 400)", route, extra=extra)
        return
    if is_transient(exc):
        logger.warning("%s answered 503, a service is unavailable: %s: %s", route, type(exc).__name__, exc, extra=extra)
        return
    logger.error("%s failed: %s: %s", route, type(exc).__name__, exc, exc_info=exc, extra=extra)


def handle_server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The answer to an unhandled error: 503 with ``Retry-After`` during an outage, 400 for a NUL, else a bare 500."""
    if is_unstorable_text(exc):
        return create_exception_response(request, ValidationException(UNSTORABLE))
    if is_transient(exc):
        unavailable = ServiceUnavailableException(UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return create_exception_response(request, unavailable)
    if request.app.debug:
        return create_debug_response(request, exc)
    return create_exception_response(request, exc)


def handle_invalid_message(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A 400 naming the field of a message that a channel could not hand over (a control character in an id)."""
    field = getattr(exc, "field", "")
    refused = ValidationException(
        f"invalid message: {exc}", extra=[{"key": field, "message": str(exc), "source": "body"}]
    )
    return create_exception_response(request, refused)


def is_unstorable_text(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL (or psycopg) refusing a NUL character: input some route did not check."""
    if isinstance(exc, psycopg.errors.UntranslatableCharacter):  # 22P05: \u0000 in JSON
        return True
    return isinstance(exc, psycopg.DataError) and "NUL" in str(exc)


def is_too_deep(exc: BaseException) -> bool:
    """Whether ``exc`` is msgspec refusing to decode a request body nested deeper than Python's recursion limit."""
    return isinstance(exc, RecursionError) and "while deserializing" in str(exc)


def handle_recursion(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A 400 for a JSON body nested too deeply to decode; any other ``RecursionError`` is a server error."""
    if is_too_deep(exc):
        return create_exception_response(request, ValidationException("malformed JSON: nested too deeply"))
    return handle_server_error(request, exc)


def exception_handlers() -> ExceptionHandlersMap:
    """The application's handlers: every error that is not a deliberate HTTP answer goes to one place."""
    return {
        HTTP_500_INTERNAL_SERVER_ERROR: handle_server_error,
        InvalidMessage: handle_invalid_message,
        RecursionError: handle_recursion,
    }


__all__ = [
    "RETRY_AFTER_SECONDS",
    "exception_handlers",
    "handle_invalid_message",
    "handle_server_error",
    "log_unhandled",
    "route_of",
]
