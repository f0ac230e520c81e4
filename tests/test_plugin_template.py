"""The plugin template: rendered, installed like a stranger's plugin, found by botloom, its tests green.

The rendered package is installed with pip into a target directory (nothing leaks
into the test environment) and used through ``PYTHONPATH`` in subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from botloom.server.scaffold import PluginNames, TemplateError, render_plugin
from tests.test_cli import botloom_env, run_botloom

pytestmark = pytest.mark.slow

NAME = "order-lookup"
NAMES = PluginNames.from_name(NAME)


@dataclass(frozen=True)
class InstalledPlugin:
    package: Path
    """The rendered source tree."""
    site: Path
    """The directory pip installed it into."""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledPlugin:
    root = tmp_path_factory.mktemp("template")
    package = render_plugin(NAME, root / "pkg")
    site = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        env=botloom_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return InstalledPlugin(package, site)


def test_the_names_derive_from_the_plugin_name() -> None:
    assert (NAMES.plugin, NAMES.distribution, NAMES.module) == (
        "order_lookup",
        "botloom-order-lookup",
        "botloom_order_lookup",
    )
    assert (NAMES.tool, NAMES.intent) == ("order_lookup_greet", "order_lookup_introduction")


def test_every_placeholder_is_filled(installed: InstalledPlugin) -> None:
    files = [
        p for p in installed.package.rglob("*") if p.is_file() and "build" not in p.relative_to(installed.package).parts
    ]
    assert installed.package / "src" / NAMES.module / "plugin.py" in files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "${" not in text, path
        assert "__module__" not in str(path.relative_to(installed.package)), path
    pyproject = (installed.package / "pyproject.toml").read_text(encoding="utf-8")
    assert f'{NAMES.plugin} = "{NAMES.module}.plugin"' in pyproject
    assert f'name = "{NAMES.distribution}"' in pyproject
    assert "$KEY" in (installed.package / "README.md").read_text(encoding="utf-8")  # shell text survives


def test_botloom_lists_the_installed_plugin(installed: InstalledPlugin, tmp_path: Path) -> None:
    result = run_botloom("plugins", "list", "--json", env=botloom_env(pythonpath=str(installed.site)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    plugins = {info["name"]: info for info in payload["plugins"]}
    assert NAMES.plugin in plugins, payload
    info = plugins[NAMES.plugin]
    assert info["source"] == f"pip:{NAMES.distribution}"
    assert info["version"] == "0.1.0"
    assert (info["tools"], info["intents"], info["kinds"]) == ([NAMES.tool], [NAMES.intent], ["tool", "intent"])
    assert info["configurable"] is True
    assert [p for p in payload["problems"] if p["plugin"] == NAMES.plugin] == []
    assert plugins["smalltalk"]["source"] == "builtin"


def test_the_rendered_package_tests_pass(installed: InstalledPlugin) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
        env=botloom_env(pythonpath=str(installed.site)),
        cwd=installed.package,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_rendering_into_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(TemplateError, match="not empty"):
        render_plugin(NAME, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_rendering_into_an_existing_empty_directory_works(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert render_plugin("greeter", target) == target
    assert (target / "src" / "botloom_greeter" / "plugin.py").is_file()


@pytest.mark.parametrize("name", ["", "1lookup", "order lookup", "order/lookup", "ünicode", "x" * 42])
def test_a_bad_plugin_name_is_refused(tmp_path: Path, name: str) -> None:
    target = tmp_path / "pkg"
    with pytest.raises(TemplateError, match="plugin name"):
        render_plugin(name, target)
    assert not target.exists()
