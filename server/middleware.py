"""Request ids, security headers, the body-read timeout and rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from typing import Any, cast

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_408_REQUEST_TIMEOUT
from litestar.stores.base import Store
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from botloom.server.auth import bearer_token
from botloom.server.logs import request_id
from botloom.server.paths import restore_original_path

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
UNLIMITED = ["^/health$", "^/ready$", "^/metrics$", "^/channels/"]
"""Paths the per-key rate limit skips: probes, and channel webhooks. A provider posts every
end user's message from a few addresses, so a per-address limit would refuse (and lose)
real messages; webhooks are checked by their signature or secret instead, and a flood
of forged ones is refused cheaply (403) before anything is stored."""


BODY_TIMEOUT_SECONDS = 30.0
"""The body-read timeout when the app's state has no settings (``BOTLOOM_BODY_TIMEOUT``)."""


class BodyTimeout(ClientException):
    """A request's body stopped arriving: answered ``408 Request Timeout``, and the connection closed."""

    status_code = HTTP_408_REQUEST_TIMEOUT


def body_timeout_of(scope: Scope) -> float:
    """Seconds each part of a request's body may take to arrive: ``Settings.body_timeout`` of the app."""
    state = getattr(scope.get("app"), "state", None)
    settings = state.get("settings") if state is not None else None
    return float(getattr(settings, "body_timeout", BODY_TIMEOUT_SECONDS))


def receive_within(receive: Receive, seconds: float) -> Receive:
    """``receive``, where each ``http.request`` message of the body must arrive within ``seconds``.

    A client that sends its headers and then trickles (or stops) its body would hold a
    connection and a request forever: past ``seconds`` without the next part, the body
    read raises :class:`BodyTimeout` (a 408 with ``Connection: close``, so the server
    stops reading). A steady upload is not limited: the clock restarts with each part.
    Once the body is complete, later calls (waiting for a disconnect) are not timed.
    """
    complete = False

    async def receive_in_time() -> ReceiveMessage:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout(seconds):
                message = await receive()
        except TimeoutError:
            complete = True  # nothing more is read from this client
            raise BodyTimeout(body_timeout_detail(seconds), headers={"connection": "close"}) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return receive_in_time


async def answer_body_timeout(send: Send, seconds: float) -> None:
    """Answer ``408`` with a short JSON body and ``Connection: close`` (when the app could not)."""
    body = json.dumps({"status_code": HTTP_408_REQUEST_TIMEOUT, "detail": body_timeout_detail(seconds)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": HTTP_408_REQUEST_TIMEOUT, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def body_timeout_detail(seconds: float) -> str:
    """What a 408 for a body that stopped arriving says."""
    return f"the request body did not arrive in time: no part of it for {seconds:g} s"


def request_context(app: ASGIApp) -> ASGIApp:
    """Give each request an id (the client's ``X-Request-ID`` if sane), the security headers and a body timeout.

    Runs first once the route is found, and gives the request back the path the
    client wrote (the app routed ``tenant/bot`` joined; see :mod:`botloom.server.paths`).
    Each part of an HTTP request's body must arrive within ``BOTLOOM_BODY_TIMEOUT``
    seconds (:func:`receive_within`); WebSockets are passed through untouched.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        restore_original_path(scope)
        given = MutableScopeHeaders(scope).get("x-request-id") or ""
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        seconds = body_timeout_of(scope)
        receive_body = receive_within(receive, seconds)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableScopeHeaders.from_message(message)
                headers["x-request-id"] = rid
                if scope.get("method") == "OPTIONS" and "allow" in headers:
                    headers["allow"] = allowed_methods(scope) or headers["allow"]
                for name, value in SECURITY_HEADERS.items():
                    if name == "x-frame-options" and scope["path"].startswith("/chat/"):
                        continue  # the chat page is embeddable; its CSP frame-ancestors decides where
                    headers.setdefault(name, value)
            await send(message)

        try:
            await app(scope, receive_body, send_with_headers)
        except BodyTimeout:
            if started:
                raise
            await answer_body_timeout(send_with_headers, seconds)  # raised where Litestar does not answer it
        finally:
            request_id.reset(token)

    return middleware


def allowed_methods(scope: Scope) -> str | None:
    """Every method the request's route answers, for the ``Allow`` header of ``OPTIONS``.

    Litestar answers ``OPTIONS`` with the methods of the handlers registered at the
    path first: a path whose ``GET`` and ``POST`` come from two handlers (a list and
    a create) said ``Allow: OPTIONS, POST``. The app's routes know them all.
    """
    template = scope.get("path_template")
    app = scope.get("app")
    if not template or app is None:
        return None
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            methods |= route.methods
    return ", ".join(sorted(methods)) or None


def rate_limit_key(request: Request[Any, Any, Any]) -> str:
    """Rate limits apply per API key, and per client address for requests without one."""
    token = bearer_token(request)
    if token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:24]
    client = request.client.host if request.client else "unknown"
    return "ip:" + client


class Counted:
    """A window's requests as Litestar's rate limiter reads them: only their number (``len``).

    Litestar keeps a fixed window (its history restarts at ``reset``) but stores the
    timestamp of every request in it, decoding and re-encoding the whole list on each
    request: at 100 requests a second that is thousands of integers a request, and
    its cost grew with the minute's traffic. Only the count is ever read, so the
    store keeps ``count:reset`` instead (same limit, same headers).
    """

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


class RetryAfterRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate limiting with the ``Retry-After`` header clients look for, counting (:class:`Counted`)."""

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        """The window of ``key``: how many requests it holds and when it resets (a new one once past)."""
        now = int(time.time())
        cached = await store.get(key)
        if cached:
            count, reset = _decode_window(cached)
            if reset > now:
                return CacheObject(history=cast(list[int], Counted(count)), reset=reset)
        return CacheObject(history=cast(list[int], Counted(0)), reset=now + DURATION_VALUES[self.unit])

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        """Count one more request in the window."""
        count = len(cache_object.history) + 1
        cache_object.history = cast(list[int], Counted(count))
        await store.set(key, f"{count}:{cache_object.reset}", expires_in=DURATION_VALUES[self.unit])

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        """The ``RateLimit-*`` headers plus ``Retry-After`` on a 429."""
        headers = super().create_response_headers(cache_object)
        reset = headers.get(self.config.rate_limit_reset_header_key)
        if reset is not None:
            headers["Retry-After"] = str(max(1, int(reset)))
        return headers


def _decode_window(cached: bytes) -> tuple[int, int]:
    """``(count, reset)`` of a stored window; Litestar's own JSON form (before an upgrade) is read too."""
    if cached.startswith(b"{"):
        found = json.loads(cached)
        return len(found.get("history") or []), int(found.get("reset") or 0)
    count, _, reset = cached.partition(b":")
    return int(count), int(reset)


def rate_limit_config(per_minute: int) -> RateLimitConfig:
    """Per-key (or per-address) limits on every route but the probes, metrics and channel webhooks."""
    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        identifier_for_request=rate_limit_key,
        exclude=UNLIMITED,
        middleware_class=RetryAfterRateLimitMiddleware,
        store="rate_limit",
    )
