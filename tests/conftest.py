"""Shared fixtures: real PostgreSQL (pgvector), real Redis (search + JSON), a scripted OpenAI server.

Servers start once per test session (per xdist worker) on free loopback ports.
Set ``BOTLOOM_TEST_DATABASE_URL`` / ``BOTLOOM_TEST_REDIS_URL`` to use servers you run.
Each test that asks for ``database_url`` gets a fresh database cloned from a
migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from litestar import Litestar

from botloom.core.crypto import Cipher
from botloom.core.settings import Settings, load_settings
from botloom.core.storage.database import Database
from botloom.core.storage.migrations import apply_migrations
from botloom.core.storage.repositories import Store
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from tests.helpers import LOCAL_ENDPOINTS
from tests.mailservers import RunningSmtp, start_smtp
from tests.servers import ScriptedOpenAI, start_postgres, start_redis
from tests.twilio_peer import TwilioPeer

TEMPLATE_DB = "botloom_template"


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's PostgreSQL server (its ``postgres`` database)."""
    external = os.environ.get("BOTLOOM_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's temporary directory: as root, PostgreSQL runs as another user, and a
    # concurrent pytest session resets that directory to 0700 under the running server's feet.
    base = Path(tempfile.mkdtemp(prefix="botloom-test-postgres-"))
    server = start_postgres(base)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def template_database_url(pg_server_url: str) -> str:
    """A database with every migration applied, cloned for each test."""
    name = f"{TEMPLATE_DB}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server_url, name)
    apply_migrations(url)
    return url


@contextmanager
def scratch_database(server_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new database on the server (optionally cloned from ``template``), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clone}')
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server_url: str, template_database_url: str) -> Iterator[str]:
    """A fresh, migrated database of its own for one test."""
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with scratch_database(pg_server_url, "t", template) as url:
        yield url


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    with scratch_database(pg_server_url, "e") as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An open :class:`Database` on the test's own database."""
    database = await Database.open(database_url, migrate=False, max_size=20)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def cipher() -> Cipher:
    """A cipher with a fixed test key."""
    return Cipher(b"0" * 43 + b"=")


@pytest.fixture
def store(db: Database, cipher: Cipher) -> Store:
    """The repositories over the test's database."""
    return Store(db, cipher)


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's Redis (Valkey with RediSearch and RedisJSON)."""
    external = os.environ.get("BOTLOOM_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """The session's Redis, emptied after the test."""
    import redis

    yield redis_server_url
    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def openai_server(botloom_openai_server: ScriptedOpenAI) -> ScriptedOpenAI:
    """The session's scripted OpenAI-compatible server: botloom.testing's, one server for both names."""
    return botloom_openai_server


@pytest.fixture
def openai(openai_server: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """The scripted OpenAI server with an empty script and request log."""
    openai_server.reset()
    yield openai_server
    openai_server.reset()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty ``BOTLOOM_DATA_DIR`` for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Settings of a test deployment: offline engine, Postgres checkpoints, a known admin token."""
    return load_settings(
        environ={},
        data_dir=str(data_dir),
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key",
        checkpointer="postgres",
        allowed_endpoints=LOCAL_ENDPOINTS,
    )


@pytest.fixture
async def services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    """botloom's services (plugins from entry points, runner, knowledge) on the test's database."""
    async with open_services(settings, url=database_url) as opened:
        yield opened


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with ``slow`` tests run first, each module's tests kept together and in order.

    Under xdist a long test (a browser, a plugin's own suite, a fault) that starts last keeps
    the run going while the other workers idle; started first, the short tests fill in around it.
    """
    slow_modules = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_modules)  # stable: the order within each group stays


def pytest_configure(config: pytest.Config) -> None:
    """A test stopped by pytest-timeout also shows its event loop's tasks (where an ``await`` hangs)."""
    try:
        import pytest_timeout
    except ImportError:  # pragma: no cover - the test extra installs it
        return
    dump_threads = pytest_timeout.dump_stacks

    def dump_stacks(terminal: Any) -> None:
        dump_threads(terminal)
        loop = asyncio._get_running_loop()  # the signal interrupts the test's loop in this thread
        for task in asyncio.all_tasks(loop) if loop is not None else ():
            terminal.sep("~", title=f"asyncio task {task.get_name()}")
            awaited: Any = task.get_coro()
            while awaited is not None:  # the chain of awaits, outermost first
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
                if frame is not None:
                    terminal.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)

    pytest_timeout.dump_stacks = dump_stacks


@pytest.fixture
def socket_app(settings: Settings, database_url: str) -> Litestar:
    """An app (with the demo) that opens its own services on the test client's event loop: for WebSockets."""
    return create_app(msgspec.structs.replace(settings, database_url=database_url), demo=True)


@pytest.fixture
async def demo(services: Services) -> DemoInfo:
    """The demo tenant ``acme`` with its bot ``support``, plugins and knowledge."""
    return await ensure_demo(services)


@pytest.fixture
def peer() -> Iterator[TwilioPeer]:
    """A local stand-in of Twilio's Messages API that records what botloom sends."""
    with TwilioPeer() as running:
        yield running


@pytest.fixture
def smtp() -> Iterator[RunningSmtp]:
    """A real SMTP server (aiosmtpd, no TLS, no login) that records what botloom sends."""
    with start_smtp("plain") as running:
        yield running


# botloom.testing's pytest plugin (the plugin author's fixtures) on this suite's servers and deployment:
# its fixtures that botloom's own tests reach (the channel contract, tests/test_testing_*.py) share them.
@pytest.fixture(scope="session")
def botloom_postgres_url(pg_server_url: str) -> str:
    """The suite's PostgreSQL server, for botloom.testing."""
    return pg_server_url


@pytest.fixture
def botloom_database_url(database_url: str) -> str:
    """The test's own migrated database, for botloom.testing."""
    return database_url


@pytest.fixture
def botloom_settings(settings: Settings) -> Settings:
    """The suite's test deployment settings, for botloom.testing."""
    return settings


@pytest.fixture
def botloom_services(services: Services) -> Services:
    """The suite's services (a test module may override ``services``), for the channel contract."""
    return services


@pytest.fixture
def botloom_demo(demo: DemoInfo) -> DemoInfo:
    """The suite's demo bot, for the channel contract."""
    return demo


@pytest.fixture
def llm_settings(settings: Settings, openai: ScriptedOpenAI) -> Settings:
    """The test deployment's settings with its bots talking to the scripted model (``gpt-4o-mini``)."""
    model = {"openai_api_key": "test-key", "openai_base_url": openai.base_url, "llm_model": "gpt-4o-mini"}
    return msgspec.structs.replace(settings, **model)
