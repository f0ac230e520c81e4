"""Database outages: pools never hand out a connection that died with the server; transient errors are told apart.

The real thing is tested: backends ended with ``pg_terminate_backend`` (the
``AdminShutdown`` a restart gives every connection), and a PostgreSQL of the test's
own stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
import redis.asyncio
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from botloom.core.errors import is_transient
from botloom.core.settings import Settings
from botloom.core.storage.database import Database
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from botloom.testing.channel_contract import configure_twilio, fast_app
from tests import servers
from tests.helpers import api_client
from tests.servers import RunningPostgres, free_port, start_postgres
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

ORDER_ANSWER = "Your Acme Shop order 1234"
WEBHOOK = "/channels/twilio/acme/support"


# ----------------------------------------------------------------------------- is_transient


def _raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """``error`` as it is seen after being raised (with a traceback and, optionally, a cause)."""
    try:
        raise error from cause
    except BaseException as caught:  # noqa: BLE001
        return caught


async def test_admin_shutdown_and_a_lost_connection_are_transient(database_url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    pid = conn.pgconn.backend_pid
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as killer:
        await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError) as first:
        await conn.execute("SELECT 1")
    assert isinstance(first.value, pg_errors.AdminShutdown)
    with pytest.raises(psycopg.OperationalError) as closed:
        await conn.execute("SELECT 1")  # "the connection is closed", raised by the client
    await conn.close()
    assert is_transient(first.value) and is_transient(closed.value)


async def test_refused_connections_and_pool_timeouts_are_transient() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(psycopg.OperationalError) as refused:
        await psycopg.AsyncConnection.connect(url, connect_timeout=2)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=1, open=False, timeout=0.2)
    await pool.open(wait=False)
    try:
        with pytest.raises(PoolTimeout) as timed_out:
            async with pool.connection():
                pass
    finally:
        await pool.close()
    assert is_transient(refused.value) and is_transient(timed_out.value)


async def test_redis_going_away_is_transient_a_wrong_password_is_not(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError) as refused:
        await client.ping()
    await client.aclose()
    wrong = redis.asyncio.Redis.from_url(redis_url, password="not-the-password", username="nobody")
    with pytest.raises(redis.exceptions.RedisError) as denied:
        await wrong.ping()
    await wrong.aclose()
    assert is_transient(refused.value)
    assert is_transient(redis.TimeoutError("Timeout reading from socket"))
    assert is_transient(redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"))
    assert is_transient(redis.exceptions.ReadOnlyError("You can't write against a read only replica."))
    assert not is_transient(denied.value), denied.value


async def test_errors_of_the_statement_or_the_turn_are_not_transient(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as unique:
            await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (1)")
        await conn.execute("SET statement_timeout = '10ms'")
        with pytest.raises(pg_errors.QueryCanceled) as cancelled:
            await conn.execute("SELECT pg_sleep(1)")
        with pytest.raises(psycopg.Error) as nul:
            await conn.execute("SELECT %s::text", ("a\x00b",))
    assert not is_transient(unique.value)
    assert not is_transient(cancelled.value), "a statement timeout is the statement's own"
    assert not is_transient(nul.value)
    assert not is_transient(_raised(TimeoutError()))  # asyncio.timeout: the turn ran out of time
    assert not is_transient(_raised(ValueError("a plugin's bug")))
    assert not is_transient(_raised(KeyError("x"), cause=ValueError("y")))


def test_a_wrapped_or_grouped_outage_is_transient() -> None:
    outage = pg_errors.AdminShutdown("terminating connection due to administrator command")
    assert is_transient(_raised(RuntimeError("turn failed"), cause=outage))
    during = KeyError("raised while handling it")
    during.__context__ = ConnectionResetError("reset by peer")
    assert is_transient(during)
    during.__suppress_context__ = True  # raise ... from None: the new error replaces the old one
    assert not is_transient(during)
    assert is_transient(ExceptionGroup("tasks", [ValueError("own"), PoolTimeout("no connection")]))
    assert not is_transient(ExceptionGroup("tasks", [ValueError("own"), TypeError("own too")]))
    looped = RuntimeError("a")
    looped.__context__ = RuntimeError("b")
    looped.__context__.__context__ = looped
    assert not is_transient(looped)


# ----------------------------------------------------------------------------- terminated backends


def terminate_backends(server_url: str, database_url: str) -> int:
    """End every session on the test's database (``AdminShutdown``), and wait until they are gone."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        ended = len(conn.execute(query, (name,)).fetchall())
        deadline = time.monotonic() + 10
        count = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        while (row := conn.execute(count, (name,)).fetchone()) and row[0]:
            assert time.monotonic() < deadline, "backends outlived pg_terminate_backend"
            time.sleep(0.02)
    return ended


async def chat_turn(client: httpx.AsyncClient, demo: DemoInfo, text: str, conversation: str | None) -> dict[str, Any]:
    """One REST chat turn; the answer's JSON."""
    response = await client.post(
        "/api/v1/bots/acme/support/messages",
        json={"text": text, "conversation_id": conversation},
        headers={"Authorization": f"Bearer {demo.api_key}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_next_turn_and_request_after_terminated_backends_are_answered(
    settings: Settings, services: Services, demo: DemoInfo, pg_server_url: str, database_url: str
) -> None:
    headers = {"Authorization": f"Bearer {demo.api_key}"}
    async with api_client(create_app(settings, services=services)) as client:
        first = await chat_turn(client, demo, "hello", None)
        assert await services.queue.pending("turns") == 0  # the queue's pool is open too
        assert terminate_backends(pg_server_url, database_url) >= 4, "main, locks, checkpoints and queue pools"
        second = await chat_turn(client, demo, "where is my order 1234", first["conversation_id"])
        assert second["replies"][0]["text"].startswith(ORDER_ANSWER), second
        terminate_backends(pg_server_url, database_url)
        response = await client.get("/api/v1/bots/acme/support", headers=headers)
        assert response.status_code == 200, response.text
        assert (await client.get("/ready")).status_code == 200
        terminate_backends(pg_server_url, database_url)
        assert await services.queue.pending("turns") == 0


async def test_idle_connections_are_checked_without_a_round_trip(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("SELECT 1")
    before = db.pool.get_stats().get("connections_lost", 0)
    for _ in range(20):
        async with db.connection() as conn:
            await conn.execute("SELECT 1")
    assert db.pool.get_stats().get("connections_lost", 0) == before
    assert db.unreachable_since is None


# ----------------------------------------------------------------------------- a real restart


def restart(server: RunningPostgres) -> RunningPostgres:
    """Start ``server`` again on its data directory and port, after :meth:`RunningPostgres.stop`."""
    restarted = servers.respawn_postgres(server)
    process = restarted._process
    assert process is not None and server.log_path is not None
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, servers._log_tail(server.log_path)
        try:
            psycopg.connect(server.url, connect_timeout=2).close()
            return restarted
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, servers._log_tail(server.log_path)
            time.sleep(0.05)


@pytest.fixture
def own_postgres() -> Iterator[list[RunningPostgres]]:
    """A PostgreSQL of this test alone (it is stopped and started); the list's last item is the running one."""
    # Not under pytest's temporary directory (see conftest.pg_server_url): as root, PostgreSQL runs as another user.
    base = Path(tempfile.mkdtemp(prefix="botloom-test-outage-"))
    running = [start_postgres(base)]
    try:
        yield running
    finally:
        running[-1].stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def own_services(settings: Settings, own_postgres: list[RunningPostgres]) -> AsyncIterator[Services]:
    async with open_services(settings, url=own_postgres[0].url) as opened:
        yield opened


@pytest.mark.slow
async def test_a_restarted_postgres_answers_the_next_turn_and_request(
    settings: Settings, own_postgres: list[RunningPostgres], own_services: Services, peer: TwilioPeer
) -> None:
    services = own_services
    demo = await ensure_demo(services)
    headers = {"Authorization": f"Bearer {demo.api_key}"}
    async with api_client(fast_app(settings, services)) as client, workers(services):
        assert (await configure_twilio(client, demo, twilio_config(peer, "rest"))).status_code == 200
        first = await chat_turn(client, demo, "hello", None)
        assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
        await asyncio.to_thread(peer.wait_for, 1, 30)
        own_postgres[0].stop()
        own_postgres.append(await asyncio.to_thread(restart, own_postgres[0]))
        second = await chat_turn(client, demo, "where is my order 1234", first["conversation_id"])
        assert second["replies"][0]["text"].startswith(ORDER_ANSWER), second
        response = await client.get("/api/v1/bots/acme/support", headers=headers)
        assert response.status_code == 200, response.text
        assert (await client.get("/ready")).status_code == 200
        webhook = await post_signed(client, WEBHOOK, inbound_form("where is my order 1234"))
        assert webhook.status_code == 200, webhook.text
        sent = await asyncio.to_thread(peer.wait_for, 2, 60)
        assert sent[-1].body.startswith(ORDER_ANSWER), "the queued turn ran and its reply went out"


# ----------------------------------------------------------------------------- during the outage


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and how many seconds it took."""
    began = time.monotonic()
    response = await request
    return response, time.monotonic() - began


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert response.headers.get("x-request-id")


@pytest.mark.slow
async def test_while_postgres_is_down_requests_get_a_quick_503_and_ready_says_so(
    settings: Settings, own_postgres: list[RunningPostgres], own_services: Services, peer: TwilioPeer
) -> None:
    services = own_services
    demo = await ensure_demo(services)
    headers = {"Authorization": f"Bearer {demo.api_key}"}
    async with api_client(create_app(settings, services=services)) as client:
        assert (await configure_twilio(client, demo, twilio_config(peer, "rest"))).status_code == 200
        assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
        own_postgres[0].stop()

        ready, took = await timed(client.get("/ready"))
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False, ready.text
        assert ready.headers["retry-after"] and took < 4
        first, first_took = await timed(client.get("/api/v1/bots/acme/support", headers=headers))
        assert_unavailable(first)
        assert first_took < 8, "a bounded wait, well within Twilio's 15 s"
        for _ in range(3):
            webhook, took = await timed(post_signed(client, WEBHOOK, inbound_form("are you there?")))
            assert_unavailable(webhook)
            assert took < 4, f"fails fast once the database is known to be unreachable ({took:.1f}s)"
        chat_request = client.post("/api/v1/bots/acme/support/messages", json={"text": "hi"}, headers=headers)
        chat, took = await timed(chat_request)
        assert_unavailable(chat)
        assert took < 4

        own_postgres.append(await asyncio.to_thread(restart, own_postgres[0]))
        deadline = time.monotonic() + 30
        while (await client.get("/ready")).status_code != 200:
            assert time.monotonic() < deadline, "/ready stayed 503 after the database came back"
            await asyncio.sleep(0.1)
        assert (await post_signed(client, WEBHOOK, inbound_form("back again"))).status_code == 200
        assert (await client.get("/api/v1/bots/acme/support", headers=headers)).status_code == 200
