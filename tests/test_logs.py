"""Logs of failed requests: every unhandled error logged once, with request id, route and traceback, masked.

The application is the real one (``create_app``) with routes of the test's own
that fail; the log lines are read from botloom's configured logging output.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Request, WebSocket, get, websocket
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from psycopg_pool import PoolTimeout

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.app import create_app
from tests.helpers import api_client, captured_logs


@get("/test/boom/{item:str}", sync_to_thread=False)
def boom(item: FromPath[str]) -> None:
    """A route with a bug."""
    raise RuntimeError(f"boom while handling {item} for ada@example.com")


@get("/test/outage", sync_to_thread=False)
def outage() -> None:
    """A route whose database went away."""
    raise PoolTimeout("couldn't get a connection after 5.00 sec")


@get("/test/nul")
async def unchecked_nul(request: Request[Any, Any, Any]) -> None:
    """A route that lets a NUL reach PostgreSQL."""
    async with request.app.state.services.db.connection() as conn:
        await conn.execute("SELECT %s::text", ("a\x00b",))


@get("/test/missing", sync_to_thread=False)
def missing() -> None:
    """A route that answers a deliberate 404."""
    raise NotFoundException("no such thing")


@websocket("/test/socket")
async def broken_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """A socket route with a bug."""
    await socket.accept()
    raise ZeroDivisionError("socket bug")


@pytest.fixture(params=["json", "text"])
def log_output(request: pytest.FixtureRequest, settings: Settings) -> Iterator[io.StringIO]:
    """What botloom's configured logging (``BOTLOOM_LOG_FORMAT``) writes, in a string."""
    with captured_logs(settings, request.param) as output:
        yield output


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, services=services, extra_handlers=[boom, outage, unchecked_nul, missing, broken_socket])
    async with api_client(app) as test_client:
        yield test_client


def lines_of(output: io.StringIO, logger: str = "botloom.server.errors") -> list[str]:
    """The log records of ``logger``, each as the text it was written as (tracebacks included)."""
    text = output.getvalue()
    if text.lstrip().startswith("{"):
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [json.dumps(r) for r in records if r["logger"] == logger]
    chunks, current = [], ""
    for line in text.splitlines(keepends=True):
        if line[:4].isdigit() and current:  # a new record starts with its time
            chunks.append(current)
            current = ""
        current += line
    chunks.append(current)
    return [chunk for chunk in chunks if f"] {logger}:" in chunk]


async def test_an_unhandled_error_is_logged_once_with_request_id_route_and_traceback(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    response = await client.get("/test/boom/item-7", headers={"X-Request-ID": "req-boom-1"})
    assert response.status_code == 500
    assert response.json() == {"status_code": 500, "detail": "Internal Server Error"}, "no details to the client"
    assert response.headers["x-request-id"] == "req-boom-1"
    (line,) = lines_of(log_output)
    assert "ERROR" in line and "req-boom-1" in line
    assert "GET /test/boom/{item}" in line
    assert "Traceback" in line and "RuntimeError: boom while handling item-7" in line
    assert "raise RuntimeError(" in line and "in boom" in line, "the traceback shows where"
    assert "ada@example.com" not in line and "<email>" in line, "masked like every log line"


async def test_an_outage_is_a_503_logged_as_one_warning_line(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    response = await client.get("/test/outage", headers={"X-Request-ID": "req-outage-1"})
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert "try again" in response.json()["detail"]
    (line,) = lines_of(log_output)
    assert "WARNING" in line and "req-outage-1" in line and "GET /test/outage" in line
    assert "PoolTimeout" in line and "Traceback" not in line


async def test_a_nul_that_reaches_postgresql_is_a_400_and_a_warning(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    response = await client.get("/test/nul", headers={"X-Request-ID": "req-nul-1"})
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["detail"]
    (line,) = lines_of(log_output)
    assert "WARNING" in line and "req-nul-1" in line and "GET /test/nul" in line


async def test_deliberate_answers_are_not_logged_as_errors(client: httpx.AsyncClient, log_output: io.StringIO) -> None:
    assert (await client.get("/test/missing")).status_code == 404
    assert (await client.get("/test/nowhere")).status_code == 404
    assert (await client.get("/api/v1/bots/acme/support")).status_code == 401
    assert lines_of(log_output) == []


async def test_a_failing_socket_is_logged_once(settings: Settings, services: Services, log_output: io.StringIO) -> None:
    from litestar.testing import AsyncTestClient

    app = create_app(settings, services=services, extra_handlers=[broken_socket])
    async with AsyncTestClient(app) as test_client:
        with await test_client.websocket_connect("/test/socket") as socket, pytest.raises(Exception) as closed:
            socket.receive_text()
    assert "4500" in str(closed.value) or getattr(closed.value, "code", None) == 4500
    (line,) = lines_of(log_output)
    assert "ERROR" in line and "WEBSOCKET /test/socket" in line and "ZeroDivisionError: socket bug" in line
