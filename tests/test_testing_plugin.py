"""botloom.testing as a pytest plugin (its entry point, a cheap import), and ``botloom plugins enable``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from botloom.core.crypto import Cipher
from botloom.core.storage.database import Database
from botloom.core.storage.repositories import Store
from botloom.server.demo import DemoInfo
from tests.cli_batch import run_botloom_commands
from tests.test_cli import botloom_env


def test_the_pytest_plugin_is_registered_through_its_entry_point() -> None:
    found = [ep for ep in metadata.entry_points(group="pytest11") if ep.name == "botloom"]
    assert [ep.value for ep in found] == ["botloom.testing.pytest_plugin"]


def test_importing_the_plugin_loads_nothing_heavy() -> None:
    """Every pytest run of an environment with botloom imports the plugin: it must not pull in the server."""
    code = (
        "import sys, botloom.testing.pytest_plugin, botloom.testing; print('\\n'.join(sorted(m for m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=botloom_env(), capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    heavy = {
        "botloom.runtime",
        "botloom.server",
        "botloom.graphs",
        "langgraph",
        "langchain_openai",
        "psycopg",
        "litestar",
    }
    assert sorted(loaded & heavy) == []
    assert "botloom.testing.harness" not in loaded


@pytest.fixture
def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    settings = {"BOTLOOM_DATABASE_URL": database_url, "BOTLOOM_DATA_DIR": str(data_dir)}
    return botloom_env({**settings, "BOTLOOM_SECRET_KEY": "test-secret-key"})  # the demo fixture's key


@pytest.mark.slow
async def test_plugins_enable_stores_a_checked_config_and_names_what_is_wrong(
    cli_env: dict[str, str], demo: DemoInfo, database_url: str, tmp_path: Path
) -> None:
    enable = ["plugins", "enable", "acme/support"]
    commands = [  # in one interpreter (tests/cli_batch.py), the first as in a process of its own
        [*enable, "webchat", "--config", '{"title": "Kit"}'],
        [*enable, "webchat", "--config", '{"titel": "Kit"}'],
        [*enable, "webchat", "--config", "{"],
        [*enable, "webchat", "--config", "[]"],
        [*enable, "no_such_plugin"],
        ["plugins", "enable", "acme/nobody", "webchat"],
        [*enable, "smalltalk", "--disable"],
    ]
    ran = await asyncio.to_thread(run_botloom_commands, commands, env=cli_env, cwd=tmp_path)
    enabled, wrong_field, not_json, a_list, unknown, no_bot, disabled = ran
    assert (enabled.returncode, enabled.stdout.strip()) == (0, "enabled webchat for acme/support"), enabled.stderr
    assert wrong_field.returncode == 1
    assert "titel" in wrong_field.stderr
    assert (not_json.returncode, "--config is not JSON" in not_json.stderr) == (1, True), not_json.stderr
    assert (a_list.returncode, "must be a JSON object" in a_list.stderr) == (1, True), a_list.stderr
    assert unknown.returncode == 1
    assert "no plugin 'no_such_plugin' is loaded" in unknown.stderr
    assert (no_bot.returncode, "no bot 'acme/nobody'" in no_bot.stderr) == (1, True), no_bot.stderr
    assert disabled.stdout.strip() == "disabled smalltalk for acme/support", disabled.stderr

    db = await Database.open(database_url, migrate=False, max_size=2)
    try:
        store = Store(db, Cipher(b"0" * 43 + b"="))
        bot = await store.bots.find("acme/support")
        assert bot is not None
        webchat = await store.plugin_settings.get(bot.tenant_id, bot.id, "webchat")
        smalltalk = await store.plugin_settings.get(bot.tenant_id, bot.id, "smalltalk")
    finally:
        await db.close()
    assert webchat is not None
    assert (webchat.enabled, webchat.config.get("title")) == (True, "Kit"), "the refused configs changed nothing"
    assert smalltalk is not None
    assert smalltalk.enabled is False
    assert json.loads(json.dumps(webchat.config))["title"] == "Kit"
