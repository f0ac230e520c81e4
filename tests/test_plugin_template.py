"""``botloom new-plugin``: each kind rendered, installed as a stranger's plugin is, its tests green, listed by botloom.

And the tutorial of docs/plugins.md: its console commands run here, in order, in the same
environment (from ``botloom new-plugin`` to a bot answering through the new plugin).

The environment is one virtual environment for the module, made in a second: it sees this
checkout's environment (botloom, pytest, pgserver) through a ``.pth`` file, and ``pip``,
``pytest`` and ``botloom`` are its own commands, so what ``pip install -e`` puts in it (the
rendered plugins' entry points) is seen by those commands and by nothing else on the machine.
pip runs with no index and no build isolation: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import site
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import botloom
from botloom.server.scaffold import KINDS, PluginNames, TemplateError, render_plugin, supported_range
from tests.test_cli import botloom_env, run_botloom

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "plugins.md"
NAMES = {kind: PluginNames.from_name(f"kit-{kind}") for kind in KINDS}
PASSED = {"tool": 8, "channel": 8}
"""How many tests each rendered suite passes (the channel contract skips its push-only test)."""


@dataclass(frozen=True)
class Venv:
    """A virtual environment whose commands see this environment's packages plus what is installed into it."""

    path: Path
    env: dict[str, str]

    def run(self, command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the environment; never raises on a non-zero exit."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


COMMANDS = {"pip": "pip", "pytest": "pytest", "botloom": "botloom"}


def make_venv(path: Path, extra_env: Mapping[str, str]) -> Venv:
    """A venv without pip of its own, seeing this environment's site-packages (and their ``.pth`` finders)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
    (Path(purelib) / "zz_parent_environment.pth").write_text(lines, encoding="utf-8")
    for command, module in COMMANDS.items():
        script = path / "bin" / command
        body = "import runpy, sys\nsys.argv[0] = {0!r}\nrunpy.run_module({1!r}, run_name='__main__', alter_sys=True)\n"
        script.write_text(f"#!{python}\n" + body.format(command, module), encoding="utf-8")
        script.chmod(0o755)
    env = botloom_env(
        {
            "PATH": f"{path / 'bin'}:{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(path),
            "PIP_NO_INDEX": "1",
            "PIP_NO_BUILD_ISOLATION": "0",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **extra_env,
        }
    )
    return Venv(path, env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("plugin-kit")
    data = root / "data"
    data.mkdir()
    return make_venv(root / "venv", {"BOTLOOM_DATA_DIR": str(data)})


@pytest.fixture(scope="module")
def tutorial_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv of its own: the tutorial's plugin would share its intent's examples with the rendered intent plugin."""
    root = tmp_path_factory.mktemp("tutorial")
    data = root / "data"
    data.mkdir()
    return make_venv(root / "venv", {"BOTLOOM_DATA_DIR": str(data)})


@pytest.fixture(scope="module")
def rendered(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three kinds rendered and installed (editable, no dependencies) into the module's venv."""
    root = tmp_path_factory.mktemp("rendered")
    packages = {kind: root / names.distribution for kind, names in NAMES.items()}
    for kind, package in packages.items():
        result = run_botloom("new-plugin", NAMES[kind].distribution, "--kind", kind, "-o", str(package))
        assert result.returncode == 0, result.stderr
    editable = " ".join(f"-e {shlex.quote(str(p))}" for p in packages.values())
    installed = venv.run(f"pip install --quiet --no-deps {editable}", cwd=root)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return packages


def test_the_names_derive_from_the_distribution_name() -> None:
    names = PluginNames.from_name("Acme.Weather")
    assert (names.distribution, names.module, names.plugin) == ("acme-weather", "acme_weather", "acme_weather")
    assert PluginNames.from_name("botloom-order-lookup").plugin == "order_lookup", "the botloom- prefix is dropped"
    assert PluginNames.from_name("kit-channel").channel_class == "KitChannelChannel"


@pytest.mark.parametrize(
    ("version", "expected"), [("0.1.0", ">=0.1,<0.2"), ("0.12.3", ">=0.12,<0.13"), ("1.4.0", ">=1.4,<2")]
)
def test_the_supported_range_is_up_to_the_next_breaking_version(version: str, expected: str) -> None:
    assert supported_range(version) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_placeholder_is_filled_and_every_part_is_there(rendered: dict[str, Path], kind: str) -> None:
    package, names = rendered[kind], NAMES[kind]
    files = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file() and ".egg-info" not in str(p)}
    assert {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        ".github/workflows/test.yml",
        "tests/conftest.py",
        "tests/test_plugin.py",
        f"src/{names.module}/__init__.py",
        f"src/{names.module}/plugin.py",
        f"src/{names.module}/py.typed",
    } <= files
    for name in files:
        text = (package / name).read_text(encoding="utf-8")
        assert not re.search(r"\$\{(?!\{)", text), f"{name} keeps a placeholder"
        assert "__module__" not in name
    pyproject = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == names.distribution
    assert pyproject["project"]["dependencies"] == [f"botloom{supported_range(botloom.__version__)}"]
    assert pyproject["project"]["entry-points"]["botloom"] == {names.plugin: f"{names.module}.plugin"}
    assert "${{ matrix.python }}" in (package / ".github/workflows/test.yml").read_text(encoding="utf-8")
    assert "$API_KEY" in (package / "README.md").read_text(encoding="utf-8"), "shell text survives"
    compile((package / f"src/{names.module}/plugin.py").read_text(encoding="utf-8"), "plugin.py", "exec")


def test_botloom_lists_the_installed_plugins(venv: Venv, rendered: dict[str, Path], tmp_path: Path) -> None:
    result = venv.run("botloom plugins list --json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    plugins = {info["name"]: info for info in payload["plugins"]}
    problems = payload.get("problems", []) + [p for info in plugins.values() for p in info.get("problems", [])]
    for kind, names in NAMES.items():
        assert names.plugin in plugins, (kind, sorted(plugins))
        assert plugins[names.plugin]["source"] == f"pip:{names.distribution}"
        assert [p for p in problems if isinstance(p, dict) and p.get("plugin") == names.plugin] == []
    assert plugins[NAMES["tool"].plugin]["tools"] == [NAMES["tool"].temperature_tool]
    assert plugins[NAMES["intent"].plugin]["intents"] == [NAMES["intent"].intent]
    plain = venv.run("botloom plugins list", cwd=tmp_path)
    assert all(names.plugin in plain.stdout for names in NAMES.values()), plain.stdout


@pytest.mark.timeout(900)  # two whole plugin suites in subprocesses, each starting botloom's services per test
@pytest.mark.parametrize("kinds", [("tool", "channel")])
def test_the_rendered_suites_pass(
    venv: Venv, rendered: dict[str, Path], pg_server_url: str, kinds: tuple[str, ...]
) -> None:
    """Each kind's own tests, as rendered, on the suite's PostgreSQL (BOTLOOM_DATABASE_URL), at once.

    The intent kind's suite runs in the tutorial (``pytest acme-greeter``), on the embedded PostgreSQL.
    """
    env = {**venv.env, "BOTLOOM_DATABASE_URL": pg_server_url}

    def run(kind: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pytest", "-q", "-p", "no:cacheprovider", str(rendered[kind])],
            cwd=rendered[kind].parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        results = dict(zip(kinds, pool.map(run, kinds), strict=True))
    for kind, result in results.items():
        assert result.returncode == 0, f"{kind}:\n{result.stdout}\n{result.stderr}"
        assert f"{PASSED[kind]} passed" in result.stdout, f"{kind}: {result.stdout[-500:]}"


def test_an_existing_folder_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine", encoding="utf-8")
    result = run_botloom("new-plugin", "acme-weather", "-o", str(target))
    assert result.returncode == 2
    assert "exists and is not an empty directory" in result.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(TemplateError, match="not an empty directory"):
        render_plugin("acme-weather", a_file)


def test_an_existing_empty_folder_is_used(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert render_plugin("greeter", target, kind="channel") == target
    assert (target / "src" / "greeter" / "plugin.py").is_file()


@pytest.mark.parametrize(
    "name", ["", "1lookup", "order lookup", "order/lookup", "ünicode", "x" * 41, "-lead", "trail-", "json", "class"]
)
def test_a_bad_plugin_name_is_a_usage_error(tmp_path: Path, name: str) -> None:
    target = tmp_path / "pkg"
    with pytest.raises(TemplateError, match="plugin name"):
        render_plugin(name, target)
    assert not target.exists()


def test_the_command_line_names_the_bad_name_and_kind(tmp_path: Path) -> None:
    result = run_botloom("new-plugin", "1lookup", "-o", str(tmp_path / "x"))
    assert (result.returncode, result.stdout) == (2, "")
    assert "'1lookup'" in result.stderr
    assert "Python cannot import" in result.stderr
    wrong_kind = run_botloom("new-plugin", "lookup", "--kind", "graph", "-o", str(tmp_path / "y"))
    assert wrong_kind.returncode == 2
    assert "invalid choice: 'graph'" in wrong_kind.stderr
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "y").exists()


# -- the tutorial of docs/plugins.md --------------------------------------------------------------------------------


def tutorial_steps() -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of every console block of the tutorial, in order."""
    text = TUTORIAL.read_text(encoding="utf-8")
    start, end = text.index("<!-- tutorial: start -->"), text.index("<!-- tutorial: end -->")
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text[start:end], re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip() and steps:
                steps[-1][1].append(line.strip())
    return steps


def test_the_tutorial_has_steps() -> None:
    commands = [command for command, _ in tutorial_steps()]
    assert commands[0].startswith("botloom new-plugin"), commands
    assert any(c.startswith("pip install -e") for c in commands), commands
    assert any(c.startswith("pytest") for c in commands), commands
    assert any("botloom chat" in c for c in commands), commands


@pytest.mark.timeout(900)  # a plugin's whole suite and four botloom commands, each starting the embedded PostgreSQL
def test_the_tutorial_runs(tutorial_venv: Venv, tmp_path: Path) -> None:
    """Every command of the tutorial, in order, in one folder; each shown output line appears in its output.

    On the embedded PostgreSQL, as a reader's machine runs it (no BOTLOOM_DATABASE_URL).
    """
    for command, expected in tutorial_steps():
        result = tutorial_venv.run(command, cwd=tmp_path)
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
        for line in expected:
            if line == "...":
                continue
            assert line in result.stdout, f"$ {command}: {line!r} not in\n{result.stdout}"
