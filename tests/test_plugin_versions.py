"""Plugin versions: a plugin's specifier on ``botloom`` is checked at load time; hooks evolve without breaking plugins.

Distributions are real ``*.dist-info`` directories (``Requires-Dist`` lines as pip
writes them) on ``sys.path`` or ``PYTHONPATH``; importlib.metadata reads them like
installed packages.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import msgspec
import pytest

from botloom import InboundMessage, hookimpl, hookspec
from botloom.core.host import PluginHost, running_version, supported_versions, version_refusal
from botloom.core.settings import load_settings
from tests.test_cli import botloom_env, run_botloom
from tests.test_plugin_host import (
    BROKEN_MODULE,
    GOOD_MODULE,
    FakeSite,
    assert_builtins_listed,
    make_bot,
    problems_of,
)
from tests.test_plugin_host import site as site  # the fixture  # noqa: PLC0414

# --------------------------------------------------------------------------- the check at load time


async def test_a_plugin_whose_specifier_excludes_the_running_botloom_is_refused_and_the_others_load(
    site: FakeSite,
) -> None:
    # Importing the refused plugin would raise: a refused plugin is not imported at all.
    site.distribution("fake-future", {"fake_future": site.module("future", BROKEN_MODULE)}, requires=["botloom>=99"])
    site.distribution("fake-good", {"fake_good": site.module("good", GOOD_MODULE)}, requires=["botloom>=0.0.1"])
    host = await PluginHost.discover().collect()
    [problem] = problems_of(host, "fake_future")
    running = running_version()
    assert problem.stage == "version"
    assert problem.message == f"supports botloom>=99, but botloom {running} is running: not loaded"
    assert "fake_future" not in host.infos
    refused = host.unloaded["fake_future"]
    assert (refused.status, refused.supports, refused.distribution, refused.version) == (
        "refused",
        ">=99",
        "fake-future",
        "1.0",
    )
    good = host.infos["fake_good"]
    assert (good.status, good.supports, good.distribution) == ("loaded", ">=0.0.1", "fake-good")
    assert host.registry.owner("tool", "fake_lookup") == "fake_good"
    assert_builtins_listed(msgspec.to_builtins(host.infos), [])


INVALID_MODULE = """
from botloom import hookimpl

@hookimpl
def moderate_message(message, mood):
    return None
"""


async def test_a_plugin_pluggy_refuses_is_listed_as_failed(site: FakeSite) -> None:
    site.distribution("fake-invalid", {"fake_invalid": site.module("invalid", INVALID_MODULE)}, requires=["botloom"])
    host = await PluginHost.discover().collect()
    [problem] = problems_of(host, "fake_invalid")
    assert problem.stage == "register"
    assert "mood" in problem.message
    failed = host.unloaded["fake_invalid"]
    assert (failed.status, failed.supports, failed.distribution) == ("failed", "", "fake-invalid")
    assert "fake_invalid" not in host.infos


@pytest.mark.parametrize(
    ("requires", "supports", "loads"),
    [
        (["botloom<0.5"], "<0.5", False),
        (["botloom>=0.4,<0.5"], "<0.5,>=0.4", False),
        (["botloom>=0.5,<0.6"], "<0.6,>=0.5", True),
        (["botloom~=0.5.0"], "~=0.5.0", True),
        (["botloom[server]>=0.6"], ">=0.6", False),
        (["Botloom==0.5.*"], "==0.5.*", True),
        (["botloom"], "", True),
        (["botloom>=0.1", "botloom<0.5"], "<0.5,>=0.1", False),  # every requirement that applies counts
        (['botloom>=0.6; extra == "test"'], None, True),  # only for an extra: not the plugin's own range
        (['botloom>=0.6; python_version < "3"'], None, True),  # for another Python
        (["requests>=2"], None, True),  # no requirement on botloom at all
    ],
)
async def test_the_specifier_is_read_as_pip_reads_it(
    site: FakeSite, requires: list[str], supports: str | None, loads: bool
) -> None:
    site.distribution("fake-good", {"fake_good": site.module("good", GOOD_MODULE)}, requires=requires)
    host = await PluginHost.discover(botloom_version="0.5.2").collect()
    info = host.infos.get("fake_good") or host.unloaded["fake_good"]
    assert info.supports == supports
    assert ("fake_good" in host.infos) is loads
    problems = problems_of(host, "fake_good")
    if loads:
        assert problems == []
    else:
        assert [(p.stage, p.message) for p in problems] == [
            ("version", f"supports botloom{supports}, but botloom 0.5.2 is running: not loaded")
        ]


def test_a_development_build_counts_as_its_version() -> None:
    assert version_refusal(">=0.1,<0.3", "0.2.0.dev1") is None
    assert version_refusal(">=0.2", "0.2.0.dev1") is not None  # 0.2.0.dev1 comes before 0.2
    assert version_refusal(None, "0.2.0") is None
    assert version_refusal("", "0.2.0") is None


async def test_built_in_plugins_are_exempt(site: FakeSite) -> None:
    site.distribution("fake-good", {"fake_good": site.module("good", GOOD_MODULE)}, requires=["botloom>=0.1"])
    host = await PluginHost.discover(botloom_version="0.0.1").collect()
    assert_builtins_listed(msgspec.to_builtins(host.infos), msgspec.to_builtins(host.problems))
    assert {info.supports for name, info in host.infos.items() if name != "fake_good"} == {None}
    assert host.unloaded["fake_good"].status == "refused"


def test_the_specifier_of_botloom_itself_is_none() -> None:
    from importlib import metadata

    assert supported_versions(metadata.distribution("botloom")) is None
    assert supported_versions(None) is None


async def test_the_refusal_is_logged_when_the_server_starts(
    site: FakeSite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What ``create_app`` (``botloom serve``) discovers first, to mount the channels' routes."""
    from botloom.server.channels.routes import plugin_host

    site.distribution("fake-future", {"fake_future": site.module("future", BROKEN_MODULE)}, requires=["botloom>=99"])
    settings = load_settings(environ={"BOTLOOM_DATA_DIR": str(tmp_path)})
    with caplog.at_level(logging.INFO, logger="botloom.core.host"):
        host = plugin_host(settings)
    assert "fake_future" in host.unloaded
    errors = [r.getMessage() for r in caplog.records if r.name == "botloom.core.host" and r.levelno == logging.ERROR]
    assert (
        f"plugin fake_future: version: supports botloom>=99, but botloom {running_version()} is running: not loaded"
        in (errors)
    )


@pytest.mark.slow
def test_plugins_list_shows_the_refused_plugin_with_its_range(site: FakeSite, tmp_path: Path) -> None:
    site.distribution("fake-future", {"fake_future": site.module("future", BROKEN_MODULE)}, requires=["botloom>=99"])
    site.distribution("fake-good", {"fake_good": site.module("good", GOOD_MODULE)}, requires=["botloom>=0.0.1"])
    env = botloom_env(pythonpath=str(site.root))
    result = run_botloom("plugins", "list", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    running = running_version()
    assert payload["botloom"] == running
    plugins = {info["name"]: info for info in payload["plugins"]}
    shape = {
        "name", "status", "version", "source", "distribution", "supports", "module", "hooks", "kinds",
        "channels", "tools", "intents", "graphs", "migrations", "configurable", "warnings", "config_schema", "problems",
    }  # fmt: skip
    assert all(set(info) == shape for info in plugins.values()), plugins
    assert plugins["demo_shop"]["config_schema"]["$defs"]["DemoShopConfig"]["type"] == "object"
    future = plugins["fake_future"]
    message = f"supports botloom>=99, but botloom {running} is running: not loaded"
    assert (future["status"], future["supports"], future["distribution"], future["hooks"]) == (
        "refused",
        ">=99",
        "fake-future",
        [],
    )
    assert future["problems"] == [{"plugin": "fake_future", "stage": "version", "message": message}]
    good = plugins["fake_good"]
    assert (good["status"], good["supports"], good["tools"], good["problems"]) == (
        "loaded",
        ">=0.0.1",
        ["fake_lookup"],
        [],
    )
    assert_builtins_listed(plugins, payload["problems"])

    text = run_botloom("plugins", "list", env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    at = lines.index("fake_future  1.0  pip:fake-future  refused  supports botloom>=99")
    assert lines[at + 1] == f"  problem: version: {message}"
    assert "fake_good  1.0  pip:fake-good  loaded  supports botloom>=0.0.1" in lines


# --------------------------------------------------------------------------- hooks evolve without breaking plugins


class HooksV2:
    """A later version of a hook specification: ``on_thing`` gained ``extra``; the rest are being deprecated."""

    @hookspec
    def on_thing(self, thing: str, extra: str) -> str | None:
        """Called with a thing (and, since this version, an extra)."""

    @hookspec(warn_on_impl=DeprecationWarning("old_thing is deprecated since botloom 0.5 and goes in 0.6"))
    def old_thing(self, thing: str) -> str | None:
        """A hook on its way out."""

    @hookspec(warn_on_impl_args={"legacy": DeprecationWarning("new_thing(legacy) is deprecated: use thing")})
    def new_thing(self, thing: str, legacy: str) -> str | None:
        """A hook one argument of which is on its way out."""


V1_PLUGIN = """
from botloom import hookimpl

@hookimpl
def on_thing(thing):
    return f"v1 saw {thing}"

@hookimpl
def moderate_message(message):
    return None
"""

DEPRECATED_PLUGIN = """
from botloom import hookimpl

@hookimpl
def old_thing(thing):
    return f"old {thing}"

@hookimpl
def new_thing(thing, legacy):
    return f"{thing} with {legacy}"
"""

UP_TO_DATE_PLUGIN = """
from botloom import hookimpl

@hookimpl
def new_thing(thing):
    return f"{thing} alone"
"""


def load(site: FakeSite, name: str, source: str) -> object:
    """A real plugin: a module written to the site and imported."""
    return importlib.import_module(site.module(name, source))


async def test_a_new_hook_argument_is_optional_for_implementations(site: FakeSite) -> None:
    """A plugin written before ``extra`` existed is called with the arguments it names only."""
    host = PluginHost()
    host.pm.add_hookspecs(HooksV2)
    assert host.register(load(site, "v1", V1_PLUGIN), "v1")
    await host.collect()
    answer = await host.call("on_thing", {"thing": "a box", "extra": "new in v2"})
    assert (answer.results, answer.problems) == (["v1 saw a box"], [])
    # The same with botloom's own hooks: moderate_message(message, bot) implemented with message alone.
    moderated, problems = await host.moderate(
        InboundMessage(channel="rest", conversation_key="c", sender="u", text="hi"), make_bot()
    )
    assert (moderated.text, problems) == ("hi", [])
    assert host.infos["v1"].warnings == []


async def test_a_deprecated_hook_and_argument_warn_and_still_work(site: FakeSite) -> None:
    host = PluginHost()
    host.pm.add_hookspecs(HooksV2)
    module = load(site, "deprecated", DEPRECATED_PLUGIN)
    with pytest.warns(DeprecationWarning, match="is deprecated") as caught:
        assert host.register(module, "deprecated")
    assert sorted(str(w.message) for w in caught) == [
        "new_thing(legacy) is deprecated: use thing",
        "old_thing is deprecated since botloom 0.5 and goes in 0.6",
    ]
    # Each warning points at the plugin's own function, where its author has to change something.
    assert {Path(w.filename) for w in caught} == {Path(module.__file__)}
    assert {w.lineno for w in caught} == {4, 8}  # the @hookimpl line of each function
    assert sorted(host.infos["deprecated"].warnings) == sorted(str(w.message) for w in caught)
    await host.collect()
    # During the deprecation period both still work.
    assert (await host.call("old_thing", {"thing": "x"})).results == ["old x"]
    assert (await host.call("new_thing", {"thing": "x", "legacy": "y"})).results == ["x with y"]


async def test_an_up_to_date_plugin_does_not_warn(site: FakeSite, recwarn: pytest.WarningsRecorder) -> None:
    host = PluginHost()
    host.pm.add_hookspecs(HooksV2)
    assert host.register(load(site, "current", UP_TO_DATE_PLUGIN), "current")
    assert [str(w.message) for w in recwarn] == []
    await host.collect()
    assert (await host.call("new_thing", {"thing": "x", "legacy": "y"})).results == ["x alone"]


async def test_the_deprecation_is_logged_for_the_operator(site: FakeSite, caplog: pytest.LogCaptureFixture) -> None:
    host = PluginHost()
    host.pm.add_hookspecs(HooksV2)
    with (
        caplog.at_level(logging.WARNING, logger="botloom.core.host"),
        pytest.warns(DeprecationWarning, match="is deprecated"),
    ):
        host.register(load(site, "deprecated", DEPRECATED_PLUGIN), "deprecated")
    lines = [r.getMessage() for r in caplog.records if r.name == "botloom.core.host"]
    assert "plugin deprecated: old_thing is deprecated since botloom 0.5 and goes in 0.6" in lines


def test_a_throwaway_plugin_object_warns_at_its_function() -> None:
    """Not only modules: any object with ``@hookimpl`` functions, as ``host.register`` takes."""

    class Old:
        @hookimpl
        def old_thing(self, thing: str) -> str:
            return thing

    host = PluginHost()
    host.pm.add_hookspecs(HooksV2)
    with pytest.warns(DeprecationWarning, match="old_thing is deprecated") as caught:
        host.register(Old(), "old")
    assert Path(caught[0].filename) == Path(__file__)
