"""Push channels' webhooks answered straight from ASGI: the acknowledgement path without Litestar's request cycle.

A provider's webhook (a Twilio message) is the busiest request a server answers,
and the simplest: no API key, no CORS, no rate limit (:data:`~botloom.server.middleware.UNLIMITED`),
no body model. Litestar's cycle around it (exception middleware, CORS, routing, the
request-id, Prometheus and rate-limit middleware, dependency injection, a ``Request``
and a ``Response``) cost about a quarter of a webhook's server CPU (py-spy; see
docs/benchmarks.md, #16 goal 3). :class:`WebhookFastPath` answers the ``POST`` routes
that push channels declare before Litestar sees them, through the same channel
contract and the same inbound path (:meth:`~botloom.runtime.inbound.Inbound.webhook`):

* the route is Litestar's own: the app's router resolves the path, and only a
  request it routes to a push channel's webhook handler is taken here;
* what the middleware gives every request is kept: the request id (the client's
  ``X-Request-ID`` when sane, in the logs and the answer), the security headers,
  the body-read timeout (408), and the same Prometheus metrics (``botloom_requests_total``,
  ``botloom_request_duration_seconds``, ``botloom_requests_in_progress`` with the route's template);
* the answers are the slow path's: the channel's acknowledgement as it renders it,
  and every refusal (404, 403, 400, 413, 415) as the same JSON ``{"status_code", "detail"}``;
* anything else (a request with an ``Origin`` header, which CORS answers; an outage;
  a bug) goes to Litestar, with the body already read handed over as it arrived:
  its exception handlers answer (503 with ``Retry-After``, ...) and log as for any route.
  The inbound path is idempotent (a message's idempotency key, its job's key), so a
  request handed over after a failure stores nothing twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._asgi.utils import is_valid_host
from litestar.exceptions import HTTPException
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import HTTPRequestEvent, Message, Receive, ReceiveMessage, Scope, Send

from botloom.core.channels import ChannelRejected, ChannelRequest, ChannelResponse, ChannelRoute
from botloom.server.channels.push import ROUTE_MAX_AGE, WEBHOOK_MAX_BODY, WEBHOOK_OPT, form_of, url_of
from botloom.server.logs import request_id
from botloom.server.middleware import (
    REQUEST_ID,
    SECURITY_HEADERS,
    answer_body_timeout,
    body_timeout_of,
)
from botloom.server.paths import bot_ref

if TYPE_CHECKING:
    from litestar import Litestar

    from botloom.runtime.services import Services

logger = logging.getLogger(__name__)

PROMETHEUS = PrometheusConfig(app_name="botloom", prefix="botloom", group_path=True)
"""The app's Prometheus settings (``create_app``'s): the fast path records the same metrics."""
_SECURITY = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
_JSON = b"application/json"
_ENCODER = msgspec.json.Encoder()
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:
    """A forked process (a server started with its app preloaded) draws its own prefix: ids stay unique."""
    global _ID_PREFIX, _ID_COUNTER  # noqa: PLW0603 - per-process state, reset in the child after a fork
    _ID_PREFIX = uuid.uuid4().hex[:16]
    _ID_COUNTER = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)
"""A request id without one from the client: this process's random prefix and a counter (32 hex digits, as a
uuid4's; unique without reading the system's random source on every webhook)."""


def _answer_of(answer: ChannelResponse) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A channel's acknowledgement as ASGI headers and body (content type and length added as Litestar does)."""
    media = answer.media_type
    content_type = f"{media}; charset=utf-8" if media.startswith("text/") else media
    out = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()]
    names = {name for name, _ in out}
    if answer.status in (204, 304) or answer.status < 200:
        return out, b""
    if b"content-type" not in names:
        out.append((b"content-type", content_type.encode("latin-1")))
    if b"content-length" not in names:
        out.append((b"content-length", str(len(answer.body)).encode()))
    return out, answer.body


class HandOver(Exception):
    """Litestar answers this request (with the body read so far handed over)."""


class Disconnected(Exception):
    """The client went away while its body was read."""


class WebhookFastPath:
    """Answers push channels' webhook routes before Litestar does (see the module docstring)."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.serves = False
        """Whether any push channel's webhook route is mounted (their handlers carry ``WEBHOOK_OPT``)."""
        self._metrics = PrometheusMiddleware(app=_unused, config=PROMETHEUS)
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        self._running: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request when it is a push channel's webhook; ``False`` leaves it to Litestar, untouched."""
        if scope.get("method") != "POST" or scope.get("root_path") or not self.serves:
            return False
        services: Services | None = self.app.state.get("services")
        if services is None:
            return False
        host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                return False  # CORS answers it
            if name == b"host":
                host = value
        if host is not None and not is_valid_host(host):
            return False
        try:
            _, handler, _, params, template = self.app.asgi_router.handle_routing(path=scope["path"], method="POST")
        except Exception:  # noqa: BLE001 - a 404 or 405: Litestar answers it
            return False
        served: tuple[str, ChannelRoute, str] | None = handler.opt.get(WEBHOOK_OPT)
        if served is None:
            return False
        channel, route, fixed = served
        scope["app"], scope["path_template"] = self.app, template  # as Litestar sets them (settings, logs)
        call = _Call(scope, receive, send, services, channel, route, params.get("subpath", fixed), params["bot"])
        await self._serve(call, template)
        return True

    async def _serve(self, call: _Call, template: str) -> None:
        began = time.perf_counter()
        given = next((v for n, v in call.scope["headers"] if n == b"x-request-id"), b"").decode("latin-1")
        call.rid = given if REQUEST_ID.match(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
        token = request_id.set(call.rid)
        running = self._in_progress(template)
        running.inc()
        status = 0
        try:
            status = await self._answer(call)
        except HandOver:
            status = -1
        finally:
            running.dec()
            request_id.reset(token)
            if status > 0:
                self._record(template, status, time.perf_counter() - began)
        if status < 0:  # Litestar answers it (and its Prometheus middleware counts it)
            await self._hand_over(call)

    async def _answer(self, call: _Call) -> int:
        """The request's answer, sent; its status (0 when the client went away)."""
        scope, send, rid, channel = call.scope, call.send, call.rid, call.channel
        ref = bot_ref(call.bot)
        inbound = call.services.inbound
        try:
            binding = await inbound.bindings.find(ref, channel, max_age=ROUTE_MAX_AGE)
            limit = min(binding.adapter.max_request_bytes, WEBHOOK_MAX_BODY)
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            declared = headers.get("content-length", "")
            too_large = f"the {channel} channel takes bodies of at most {limit} bytes"
            if declared.isdigit() and int(declared) > limit:
                raise HTTPException(status_code=413, detail=too_large)
            seconds = body_timeout_of(scope)
            try:
                await _read_body(call.receive, call.body, limit, seconds)
            except TimeoutError:
                await answer_body_timeout(_with_headers(send, rid), seconds)
                return 408
            except OverflowError:
                raise HTTPException(status_code=413, detail=too_large) from None
            except Disconnected:
                return 0
            data = b"".join(call.body.chunks)
            settings = self.app.state.settings
            incoming = ChannelRequest(
                method="POST",
                url=url_of(scope, settings, call.route, ref, call.subpath),
                headers=headers,
                body=data,
                form=form_of(data, headers.get("content-type", "")),
                subpath=call.subpath,
                bot_ref=ref,
                bot=binding.bot,
            )
            answer = await inbound.webhook(binding, incoming)
            out, payload = _answer_of(answer)  # a header a channel cannot encode: Litestar answers and logs it
        except ChannelRejected as exc:
            return await _refuse(send, rid, exc.status, exc.detail)
        except HTTPException as exc:
            if exc.status_code >= 500 or exc.extra or exc.headers:
                raise HandOver from exc
            return await _refuse(send, rid, exc.status_code, exc.detail)
        except Exception as exc:  # an outage, a bug: Litestar's handlers answer and log it
            raise HandOver from exc
        await _respond(send, rid, answer.status, out, payload)
        return answer.status

    async def _hand_over(self, call: _Call) -> None:
        """Litestar serves the request, reading the body read here first (a body not read yet, from the client)."""
        from litestar import Litestar

        replayed = False

        async def replay() -> ReceiveMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                body = b"".join(call.body.chunks)
                event: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
                return event
            return await call.receive()

        await Litestar.__call__(self.app, call.scope, replay if call.body.complete else call.receive, call.send)

    def _in_progress(self, template: str) -> Any:
        gauge = self._running.get(template)
        if gauge is None:
            labels = _labels(template, 200)
            gauge = self._metrics.requests_in_progress(labels).labels(*labels.values())
            self._running[template] = gauge
        return gauge

    def _record(self, template: str, status: int, seconds: float) -> None:
        """Count the request as Litestar's Prometheus middleware does."""
        children = self._children.get((template, status))
        if children is None:
            labels = _labels(template, status)
            values = list(labels.values())
            errors = self._metrics.requests_error_count(labels).labels(*values) if status >= 500 else None
            children = (
                self._metrics.request_count(labels).labels(*values),
                self._metrics.request_time(labels).labels(*values),
                errors,
            )
            self._children[(template, status)] = children
        count, duration, errors = children
        count.inc()
        duration.observe(seconds)
        if errors is not None:
            errors.inc()


def _labels(template: str, status: int) -> dict[str, str | int | float]:
    return {"method": "POST", "path": template, "status_code": status, "app_name": PROMETHEUS.app_name}


async def _unused(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never called
    raise RuntimeError("the fast path's metrics middleware is not an app")


class _Call:
    """One webhook request on its way through the fast path."""

    __slots__ = ("body", "bot", "channel", "receive", "rid", "route", "scope", "send", "services", "subpath")

    def __init__(  # noqa: PLR0917 - what one request carries
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        services: Services,
        channel: str,
        route: ChannelRoute,
        subpath: str,
        bot: str,
    ) -> None:
        self.scope, self.receive, self.send, self.services = scope, receive, send, services
        self.channel, self.route, self.subpath, self.bot = channel, route, subpath, bot
        self.rid = ""
        self.body = _Body()


class _Body:
    """A request's body as read so far: its parts, and whether it is all there."""

    __slots__ = ("chunks", "complete")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.complete = False


async def _read_body(receive: Receive, into: _Body, limit: int, seconds: float) -> None:
    """Read the request's body into ``into``; each part must arrive within ``seconds`` (``TimeoutError``).

    ``OverflowError`` past ``limit`` bytes, :class:`Disconnected` when the client went away.
    """
    size = 0
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds) as clock:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise Disconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                into.chunks.append(chunk)
                if size > limit:
                    raise OverflowError
            if not message.get("more_body", False):
                into.complete = True
                return
            clock.reschedule(loop.time() + seconds)


def _with_headers(send: Send, rid: str) -> Send:
    """``send`` adding the request id and the security headers to the response's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"x-request-id", rid.encode()), *_SECURITY]
        await send(message)

    return sending


async def _respond(send: Send, rid: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    names = {name for name, _ in headers}
    extra = [(name, value) for name, value in _SECURITY if name not in names]
    headers = [*headers, (b"x-request-id", rid.encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse(send: Send, rid: str, status: int, detail: str) -> int:
    """A refusal as Litestar's exception responses are: ``{"status_code": ..., "detail": ...}``."""
    body = _ENCODER.encode({"status_code": status, "detail": detail})
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    await _respond(send, rid, status, headers, body)
    return status


__all__ = ["WebhookFastPath"]
