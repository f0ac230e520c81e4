"""``BOTLOOM_TRACE_PLUGINS``: every hook call logged (hook, arguments summarized, plugins, time, result or error).

Traced calls go through pluggy (its ``add_hookcall_monitoring`` is what logs the
call), not through the host's direct path for plain implementations.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from botloom.core.host import PluginHost
from tests.test_cli import botloom_env, run_botloom
from tests.test_plugin_host import INBOUND, _mask, _raise, host_of, make_bot, plugin

HOST_LOGGER = "botloom.core.host"
TOOK = r" in \d+\.\d\d ms"


def traced(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == HOST_LOGGER]


@pytest.fixture
def host_logger_level() -> Iterator[None]:
    """The host logger's own level, restored after the test (tracing raises it to INFO)."""
    logger = logging.getLogger(HOST_LOGGER)
    level = logger.level
    yield
    logger.setLevel(level)


async def test_every_call_is_logged_with_its_arguments_summarized(caplog: pytest.LogCaptureFixture) -> None:
    host = await host_of(("masker", plugin(moderate_message=_mask)), ("raiser", plugin(moderate_message=_raise)))
    host.trace = True
    with caplog.at_level(logging.INFO, logger=HOST_LOGGER):
        await host.moderate(INBOUND, make_bot())
    lines = traced(caplog)
    for expected in [
        rf"plugin masker: hook moderate_message: returned InboundMessage{TOOK}",
        rf"plugin raiser: hook moderate_message: raised ValueError: moderation exploded{TOOK}",
        rf"hook moderate_message\(message=InboundMessage\(channel=web, text\[20\]\), "
        rf"bot=Bot\(name=Support, slug=support\)\): called raiser, masker{TOOK}: returned 1 result",
    ]:
        assert any(re.fullmatch(expected, line) for line in lines), (expected, lines)
    # The end user's words and address never reach the log: their sizes do.
    assert not [line for line in lines if "4111" in line or "user-1" in line], lines


async def test_without_the_trace_nothing_is_logged_and_the_direct_path_is_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = await host_of(("masker", plugin(moderate_message=_mask)))
    assert not host.trace
    impls = host.pm.hook.moderate_message.get_hookimpls()
    assert host._direct(impls, {"message": INBOUND, "bot": make_bot()}) is not None
    with caplog.at_level(logging.INFO, logger=HOST_LOGGER):
        moderated, _ = await host.moderate(INBOUND, make_bot())
    assert moderated.text.startswith("my card is ####")
    assert traced(caplog) == []
    host.trace = True
    assert host._direct(impls, {"message": INBOUND, "bot": make_bot()}) is None, "traced calls go through pluggy"


def test_the_trace_is_seen_under_a_quieter_log_level(host_logger_level: None) -> None:
    logging.getLogger(HOST_LOGGER).setLevel(logging.WARNING)
    host = PluginHost()
    assert not logging.getLogger(HOST_LOGGER).isEnabledFor(logging.INFO)
    host.trace = True
    assert logging.getLogger(HOST_LOGGER).isEnabledFor(logging.INFO)


@pytest.mark.slow
def test_the_setting_traces_the_command_line(tmp_path: Path) -> None:
    """``BOTLOOM_TRACE_PLUGINS=1 botloom plugins list --json``: the trace on standard error, the JSON intact."""
    env = botloom_env({"BOTLOOM_TRACE_PLUGINS": "1"})
    result = run_botloom("plugins", "list", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {info["name"] for info in json.loads(result.stdout)["plugins"]} >= {"turn", "smalltalk"}
    lines = result.stderr.splitlines()
    assert any(
        re.fullmatch(
            rf"INFO botloom\.core\.host: plugin smalltalk: hook register_intents: returned 3 results{TOOK}", line
        )
        for line in lines
    ), lines
    assert any(line.startswith("INFO botloom.core.host: hook register_intents(): called ") for line in lines), lines

    quiet = run_botloom("plugins", "list", "--json", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "hook register_intents" not in quiet.stderr
