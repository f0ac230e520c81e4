"""The example third-party channel (examples/telegram): installed like a stranger's plugin, its own suite green.

The distribution is installed with pip into a directory of its own (nothing leaks into this
environment) and its suite runs in a subprocess from its own folder, under its own pytest
configuration, with botloom.testing's fixtures, as its author runs it; the PostgreSQL server
is this session's (``BOTLOOM_DATABASE_URL``), so no second one starts.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import botloom_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "telegram"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("telegram") / "site"
    build = tmp_path_factory.mktemp("telegram-build")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = build / "botloom-telegram"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
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
            str(target),
            str(source),
        ],
        env=botloom_env({"TMPDIR": str(build)}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "botloom_telegram" / "plugin.py").is_file()
    return target


@pytest.mark.slow
def test_the_telegram_example_suite_passes(site: Path, pg_server_url: str) -> None:
    env = botloom_env({"BOTLOOM_DATABASE_URL": pg_server_url, "PYTHONDONTWRITEBYTECODE": "1"}, pythonpath=str(site))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "tests"],
        env=env,
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None, output[-3000:]
    assert int(passed[1]) >= 19, output[-3000:]
    assert not re.search(r"\d+ (failed|error|skipped)", result.stdout), output[-3000:]


def botloom_imports(path: Path) -> list[str]:
    """Every module of botloom (``botloom`` or ``botloom.*``) a file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append(node.module or "")
    return [name for name in found if name == "botloom" or name.startswith("botloom.")]


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [("src", ("botloom",)), ("tests", ("botloom", "botloom.testing"))],
)
def test_the_example_uses_only_the_public_api(folder: str, allowed: tuple[str, ...]) -> None:
    """The plugin imports only ``botloom``; its tests add ``botloom.testing``: what any plugin author has."""
    files = sorted((EXAMPLE / folder).rglob("*.py"))
    assert files
    for path in files:
        for name in botloom_imports(path):
            assert name in allowed or (name.startswith("botloom.testing.") and "botloom.testing" in allowed), (
                path,
                name,
            )
