"""The ``botloom`` command line: help, usage errors, start-up imports, ``botloom graph``.

The helpers here (:func:`botloom_env`, :func:`run_botloom`) are shared by the other
test modules that run the command line in a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from tests.serve_process import Server
from tests.servers import free_port

BOTLOOM = Path(sys.executable).with_name("botloom")
HEAVY_MODULES = ("langgraph", "litestar", "langchain", "openai")
TURN_NODES = ("retrieve", "classify", "act", "respond", "escalate")


def botloom_env(extra: Mapping[str, str] | None = None, *, pythonpath: str | None = None) -> dict[str, str]:
    """The test process's environment without ``BOTLOOM_*`` settings or pytest's own variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BOTLOOM_", "PYTEST_")) and k not in {"PYTHONPATH", "COV_CORE_SOURCE"}
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    env.update(extra or {})
    return env


def run_botloom(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m botloom ARGS`` with a clean environment; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "botloom", *args],
        env=dict(env) if env is not None else botloom_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_script(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOTLOOM), *args], env=botloom_env(), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_help_exits_zero_and_lists_the_commands(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = _run_script(["--help"], tmp_path)
    elapsed = time.perf_counter() - started
    print(f"botloom --help took {elapsed:.2f}s")  # measured, never asserted
    assert result.returncode == 0, result.stderr
    for command in ("migrate", "demo", "chat", "graph", "plugins"):
        assert command in result.stdout


@pytest.mark.slow
def test_importing_the_command_line_does_not_import_the_heavy_libraries(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import botloom.server.cli"],
        env=botloom_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "botloom.server.cli" in result.stderr  # the import-time report is there
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    heavy = sorted({name for name in imported for prefix in HEAVY_MODULES if name.split(".")[0].startswith(prefix)})
    assert heavy == []


@pytest.mark.slow
def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    result = _run_script([], tmp_path)
    assert result.returncode == 2
    assert "usage: botloom" in result.stdout + result.stderr
    assert "migrate" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args", [["no-such-command"], ["plugins"], ["plugins", "nope"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = _run_script(args, tmp_path)
    assert result.returncode == 2
    assert "usage: botloom" in result.stderr


@pytest.mark.slow
def test_graph_prints_the_turn_graph_as_mermaid(tmp_path: Path) -> None:
    result = run_botloom("graph", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "graph TD" in result.stdout
    for node in TURN_NODES:
        assert f"{node}(" in result.stdout, node


@pytest.mark.slow
def test_graph_writes_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "turn.mmd"
    result = run_botloom("graph", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert all(node in text for node in TURN_NODES)


@pytest.mark.slow
def test_graph_draws_the_turn_graph_as_svg_offline(tmp_path: Path) -> None:
    out = tmp_path / "turn.svg"
    offline = botloom_env({"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    result = run_botloom("graph", "--format", "svg", "-o", str(out), env=offline, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = ElementTree.parse(out).getroot()  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {*TURN_NODES, "__start__", "__end__"} <= texts
    edges = {
        "".join(t.itertext()) for g in root.iter() if g.get("class") == "edge" for t in g if t.tag.endswith("title")
    }
    assert {"__start__ → retrieve", "classify → escalate", "escalate → escalate", "respond → __end__"} <= edges

    printed = run_botloom("graph", "--format", "svg", env=offline, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert ElementTree.fromstring(printed.stdout).tag.endswith("svg")


@pytest.mark.slow
def test_graph_draws_a_png_offline(tmp_path: Path) -> None:
    out = tmp_path / "turn.png"
    offline = botloom_env({"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    result = run_botloom("graph", "--format", "png", "-o", str(out), env=offline, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 200 and height > 400, (width, height)  # the whole graph, drawn at twice the SVG's size


@pytest.mark.slow
def test_a_bad_setting_is_reported_by_name(tmp_path: Path) -> None:
    result = run_botloom("plugins", "list", env=botloom_env({"BOTLOOM_DB_POOL_SIZE": "many"}), cwd=tmp_path)
    assert result.returncode == 1
    assert "BOTLOOM_DB_POOL_SIZE" in result.stderr


@pytest.mark.slow
def test_serve_on_a_taken_port_says_so_before_any_database_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_botloom(
            "serve", "--port", str(port), env=botloom_env({"BOTLOOM_DATA_DIR": str(data)}), cwd=tmp_path
        )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"botloom: error: port {port} on 127.0.0.1 is in use")
    suggested = int(line.rsplit("--port ", 1)[1])
    assert suggested != port
    assert "serving on" not in result.stdout
    assert not data.exists(), "no embedded PostgreSQL was set up for a server that cannot listen"


@pytest.mark.slow
def test_serve_says_it_serves_once_it_answers(tmp_path: Path, database_url: str) -> None:
    server = Server(database_url, tmp_path, demo=False)
    server.env = botloom_env({k: v for k, v in server.env.items() if k.startswith("BOTLOOM_")})
    server.spawn()
    assert server.process is not None
    try:
        deadline = time.monotonic() + 60
        while "serving on" not in server.log.read_text():
            assert server.process.poll() is None, server.log.read_text()
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200, "answers as soon as it says so"
    finally:
        server.stop()


UNREACHABLE_COMMANDS = [["migrate"], ["chat", "acme/support"], ["serve"], ["demo"]]


@pytest.mark.slow
@pytest.mark.parametrize("args", UNREACHABLE_COMMANDS, ids=lambda a: a[0])
def test_an_unreachable_database_is_one_line_saying_what_to_check(tmp_path: Path, args: list[str]) -> None:
    url = f"postgresql://botloom:hunter2@127.0.0.1:{free_port()}/botloom"
    extra = ["--port", str(free_port())] if args == ["serve"] else []
    result = run_botloom(
        *args, *extra, env=botloom_env({"BOTLOOM_DATABASE_URL": url, "BOTLOOM_DATA_DIR": str(tmp_path)}), cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("botloom: error: cannot use the database at postgresql://botloom:********@127.0.0.1:")
    assert "Connection refused" in line and "check BOTLOOM_DATABASE_URL" in line
    assert "hunter2" not in result.stderr + result.stdout
    assert "serving on" not in result.stdout


@pytest.mark.slow
def test_chat_with_an_unknown_bot_names_the_database_it_looked_in(tmp_path: Path, database_url: str) -> None:
    env = botloom_env(
        {"BOTLOOM_DATABASE_URL": database_url, "BOTLOOM_DATA_DIR": str(tmp_path), "BOTLOOM_SECRET_KEY": "k"}
    )
    result = run_botloom("chat", "acme/support", env=env, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("botloom: error: no bot 'acme/support' in the database at postgresql://")
    assert "(BOTLOOM_DATABASE_URL)" in line
