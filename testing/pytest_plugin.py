"""botloom's pytest plugin (entry point ``pytest11``: ``botloom``): fixtures for a plugin author's tests.

Installed with botloom, it is active in every pytest run of an environment that has
botloom; importing it imports nothing of botloom's own (each fixture imports what it
needs when it runs), so a project that does not use it pays nothing.

Fixtures (see docs/plugins.md, "Testing a plugin"):

``botloom_plugins``
    Override it: ``{plugin name: config}`` of the plugins the test bot enables.
``botloom_harness``
    A :class:`~botloom.testing.BotHarness`: ``await botloom_harness.send("hi")``.
``botloom_bot``, ``botloom_services``
    The harness's bot and services, started.
``scripted_model``
    A :class:`~botloom.testing.ScriptedOpenAI` the test bot's model talks to.
``botloom_channel``
    A :class:`~botloom.testing.ChannelHarness`: the real app, requests signed by ``botloom_signer``.
``botloom_signer``
    Override it: the function that signs a request to the channel under test.
``botloom_demo``
    The demo bot (``acme/support``) on ``botloom_services``, as the channel contract uses it.
``botloom_settings``, ``botloom_database_url``, ``botloom_postgres_url``
    The test deployment's settings, a fresh migrated database, the session's PostgreSQL server.

Marker ``@pytest.mark.botloom_plugin(plugin_object, name="x", config={...})`` registers a
plugin object for one test, enabled for the test bot.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

try:
    import pytest_asyncio

    async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio missing: the async fixtures say so when used
    async_fixture = pytest.fixture

if TYPE_CHECKING:
    from botloom.core.domain import Bot
    from botloom.core.settings import Settings
    from botloom.runtime.services import Services
    from botloom.server.demo import DemoInfo
    from botloom.testing.database import TestDatabases
    from botloom.testing.harness import BotHarness, ChannelHarness, Signer
    from botloom.testing.openai import ScriptedOpenAI

DATABASE_URL_VARIABLE = "BOTLOOM_DATABASE_URL"

# The conformance suites are test classes in installed modules: pytest explains their failed asserts too.
pytest.register_assert_rewrite(
    "botloom.testing.channel_contract", "botloom.testing.intent_contract", "botloom.testing.tool_contract"
)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the plugin's marker (``--strict-markers`` projects need it declared)."""
    config.addinivalue_line(
        "markers",
        "botloom_plugin(plugin, name, config=None): register a plugin object for this test, enabled for "
        "the test bot of botloom_harness (botloom.testing)",
    )


# -- servers, shared by the session --------------------------------------------------------------


@pytest.fixture(scope="session")
def botloom_postgres_url() -> Iterator[str]:
    """The session's PostgreSQL server: ``BOTLOOM_DATABASE_URL`` when set, else the embedded one (``pgserver``)."""
    from botloom.testing.database import session_server

    with session_server(os.environ.get(DATABASE_URL_VARIABLE)) as url:
        yield url


@pytest.fixture(scope="session")
def botloom_databases(botloom_postgres_url: str) -> Iterator[TestDatabases]:
    """Fresh databases on the session's server, cloned from one migrated template."""
    from botloom.testing.database import TestDatabases

    databases = TestDatabases(botloom_postgres_url)
    yield databases
    databases.drop_template()


@pytest.fixture
def botloom_database_url(botloom_databases: TestDatabases) -> Iterator[str]:
    """A fresh, migrated database of the test's own, dropped afterwards."""
    with botloom_databases.fresh() as url:
        yield url


@pytest.fixture(scope="session")
def botloom_openai_server() -> Iterator[ScriptedOpenAI]:
    """The session's scripted OpenAI-compatible server (see ``scripted_model``)."""
    from botloom.testing.openai import ScriptedOpenAI

    server = ScriptedOpenAI()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scripted_model(botloom_openai_server: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """The scripted model, emptied: queue its answers with ``scripted_model.script(...)``.

    A test that asks for it gets a ``botloom_harness`` whose bot uses a language model
    (``langchain-openai``, the real client) pointed at this server instead of the offline
    engine. Unscripted requests are answered with an echo of the user's message.
    """
    botloom_openai_server.reset()
    yield botloom_openai_server
    botloom_openai_server.reset()


# -- the deployment and the bot ----------------------------------------------------------------


@pytest.fixture
def botloom_settings(tmp_path: Path) -> Settings:
    """Settings of a test deployment: offline engine, PostgreSQL checkpoints, loopback endpoints allowed."""
    from botloom.testing.harness import test_settings

    data = tmp_path / "botloom-data"
    data.mkdir(exist_ok=True)
    return test_settings(str(data))


@pytest.fixture
def botloom_plugins() -> Mapping[str, Mapping[str, Any] | None]:
    """The plugins the test bot enables, with their config: override it in your ``conftest.py``.

    ``{"acme_weather": {"units": "metric"}}``; the default enables none.
    """
    return {}


@async_fixture
async def botloom_harness(
    request: pytest.FixtureRequest,
    botloom_settings: Settings,
    botloom_database_url: str,
    botloom_plugins: Mapping[str, Mapping[str, Any] | None],
) -> AsyncIterator[BotHarness]:
    """A bot with ``botloom_plugins`` enabled, on botloom's real services; started on first use, closed after."""
    import msgspec

    from botloom.testing.harness import BotHarness

    settings = botloom_settings
    if "scripted_model" in request.fixturenames:
        model: ScriptedOpenAI = request.getfixturevalue("scripted_model")
        settings = msgspec.structs.replace(
            settings, openai_api_key="botloom-testing-key", openai_base_url=model.base_url
        )
    harness = BotHarness(settings, botloom_database_url, plugins=botloom_plugins)
    for marker in request.node.iter_markers("botloom_plugin"):
        plugin = marker.args[0] if marker.args else marker.kwargs["plugin"]
        name = marker.args[1] if len(marker.args) > 1 else marker.kwargs["name"]
        harness.register(plugin, name, config=marker.kwargs.get("config"))
    try:
        yield harness
    finally:
        await harness.close()


@async_fixture
async def botloom_bot(botloom_harness: BotHarness) -> Bot:
    """The test bot (tenant ``test``, bot ``bot``) with ``botloom_plugins`` enabled."""
    return (await botloom_harness.start()).bot


@async_fixture
async def botloom_services(botloom_harness: BotHarness) -> Services:
    """The services of the harness, started (internal API: the store, the host, the runner)."""
    return (await botloom_harness.start()).services


@async_fixture
async def botloom_demo(botloom_services: Services) -> DemoInfo:
    """The demo tenant ``acme`` and its bot ``support`` on ``botloom_services`` (the channel contract's bot)."""
    from botloom.server.demo import ensure_demo

    return await ensure_demo(botloom_services)


# -- channels -------------------------------------------------------------------------------------


@pytest.fixture
def botloom_signer() -> Signer | None:
    """Signs a request to the channel under test: override it (the default signs nothing).

    It gets a :class:`~botloom.testing.SigningRequest` (URL, body, form, the bot's config of
    the channel) and returns the headers that authenticate the request.
    """
    return None


@async_fixture
async def botloom_channel(
    botloom_harness: BotHarness,
    botloom_plugins: Mapping[str, Mapping[str, Any] | None],
    botloom_signer: Signer | None,
) -> AsyncIterator[ChannelHarness]:
    """The real HTTP app on the harness's services, for the first plugin of ``botloom_plugins``."""
    from botloom.testing.harness import ChannelHarness

    channel = ChannelHarness(botloom_harness, plugin=next(iter(botloom_plugins), None), signer=botloom_signer)
    try:
        yield await channel.start()
    finally:
        await channel.close()
