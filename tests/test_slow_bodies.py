"""Slow bodies (issue #12): a client that sends its headers and then trickles or stops its body.

Against a real ``botloom serve`` with ``BOTLOOM_BODY_TIMEOUT=1``: the request is answered
``408`` with a JSON body and its connection closed, the server answers others meanwhile,
and a steady body that takes longer than the timeout as a whole is still accepted. Unit
tests of :func:`botloom.server.middleware.receive_within` and the middleware follow.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from botloom.server.middleware import BodyTimeout, receive_within, request_context
from tests.conftest import scratch_database
from tests.serve_process import Server

ROUTE = "/api/v1/tenants"
LENGTH = 1000
DEADLINE = 20.0
"""Seconds a test waits for the server's answer; without a body timeout it never comes."""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, template_database_url: str
) -> Iterator[Server]:
    """One ``botloom serve`` (no demo) whose body timeout is 1 s, for the tests of this module."""
    data_dir = tmp_path_factory.mktemp("slow-bodies")
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with scratch_database(pg_server_url, "t", template) as url:
        running = Server(url, data_dir, demo=False, BOTLOOM_BODY_TIMEOUT="1")
        try:
            running.start()
            yield running
        finally:
            running.stop()


def head(server: Server, length: int = LENGTH) -> bytes:
    """The request line and headers of an operator's ``POST`` whose body is ``length`` bytes."""
    return (
        f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer admin\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection, or fail at ``deadline`` (monotonic)."""
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no answer (and no close) before the deadline; got {received!r}")
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=min(left, 0.2))
        except TimeoutError:
            continue
        if not chunk:
            return received
        received += chunk


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head_part, _, body = answer.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def assert_timed_out(answer: bytes) -> None:
    """``answer`` is the 408 of a body that stopped arriving, with a JSON error and ``Connection: close``."""
    status, headers, body = parse(answer)
    assert status == 408, answer
    assert headers.get("connection") == "close", headers
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)
    assert error["status_code"] == 408
    assert "body" in error["detail"], error


@pytest.mark.slow
async def test_trickled_body_is_answered_408_and_the_server_keeps_answering(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head(server) + b'{"slug": "slow", ')
        await writer.drain()
        sent = time.monotonic()

        async def trickle() -> None:
            """One more byte every 2 s (longer than the 1 s timeout), until the server hangs up."""
            while True:
                await asyncio.sleep(2)
                writer.write(b" ")
                await writer.drain()

        trickler = asyncio.create_task(trickle())
        try:
            async with httpx.AsyncClient(timeout=2) as client:  # not held up by the slow request
                assert (await client.get(f"{server.url}/health")).status_code == 200
            answer = await read_answer(reader, sent + DEADLINE)
        finally:
            trickler.cancel()
            await asyncio.gather(trickler, return_exceptions=True)
        assert time.monotonic() - sent >= 0.9  # the timeout, not an immediate refusal
        assert_timed_out(answer)
    finally:
        writer.close()


@pytest.mark.slow
async def test_body_that_stops_is_answered_408(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head(server) + b"x" * (LENGTH // 2))
        await writer.drain()
        assert_timed_out(await read_answer(reader, time.monotonic() + DEADLINE))
    finally:
        writer.close()


@pytest.mark.slow
async def test_steady_body_longer_than_the_timeout_is_accepted(server: Server) -> None:
    body = json.dumps({"slug": "steady", "name": "Steady"}).encode()
    body += b" " * (LENGTH - len(body))
    parts = [body[i : i + LENGTH // 4] for i in range(0, LENGTH, LENGTH // 4)]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head(server))
        started = time.monotonic()
        for part in parts:  # 1.6 s in all, each part well within the 1 s timeout
            await asyncio.sleep(0.4)
            writer.write(part)
            await writer.drain()
        assert time.monotonic() - started > 1.0
        status_line = await asyncio.wait_for(reader.readline(), timeout=DEADLINE)
        assert status_line.split(b" ")[1] == b"201", status_line
    finally:
        writer.close()


# The receive wrapper and the middleware, without a server.


def never() -> Any:
    """A ``receive`` whose next body part never comes."""

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def parts(*messages: dict[str, Any]) -> Any:
    """A ``receive`` answering ``messages`` and then waiting forever (as for a disconnect)."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def test_receive_within_times_out_a_missing_part() -> None:
    receive = receive_within(parts({"type": "http.request", "body": b"a", "more_body": True}), 0.05)
    assert (await receive())["body"] == b"a"
    with pytest.raises(BodyTimeout) as raised:
        await receive()
    assert raised.value.status_code == 408
    assert raised.value.headers == {"connection": "close"}


async def test_receive_within_does_not_time_a_complete_body() -> None:
    receive = receive_within(parts({"type": "http.request", "body": b"a", "more_body": False}), 0.05)
    assert (await receive())["body"] == b"a"
    waiting = asyncio.create_task(receive())  # listening for a disconnect: no body timeout applies
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done
    waiting.cancel()


def scope_of(kind: str) -> dict[str, Any]:
    app = SimpleNamespace(state={"settings": SimpleNamespace(body_timeout=0.05)})
    return {"type": kind, "path": "/x", "method": "POST", "headers": [], "app": app}


async def test_middleware_answers_408_when_the_app_lets_the_timeout_through() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # BodyTimeout escapes: the middleware answers

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await request_context(app)(scope_of("http"), never(), send)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["status_code"] == 408


async def test_middleware_leaves_websockets_alone() -> None:
    seen: list[Any] = []
    receive = never()

    async def app(scope: Any, given: Any, send: Any) -> None:
        seen.append(given)

    await request_context(app)(scope_of("websocket"), receive, None)
    assert seen == [receive]
