"""The embedded PostgreSQL: shared by the processes of one data dir, stopped by the last one.

Each botloom process here is a real subprocess calling
:func:`botloom.core.storage.embedded.start_embedded_postgres`, so pgserver's
process counting is exercised as in a deployment. As root, pgserver runs the
server as the system user ``pgserver`` and opens up the data dir's parents itself.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from botloom.core.storage.migrations import MIGRATIONS_DIR
from tests.serve_process import Server
from tests.test_cli import botloom_env, run_botloom

pytestmark = pytest.mark.slow

DEADLINE = 60.0
MIGRATIONS = sorted(MIGRATIONS_DIR.glob("*.sql"))
STOP_DEADLINE = 20.0
"""Seconds a server may take to stop after its last process ended (pg_ctl stop takes about one)."""

CLIENT = """
import json, sys
from pathlib import Path
import psycopg
from botloom.core.storage.embedded import start_embedded_postgres

url = start_embedded_postgres(Path(sys.argv[1]))
with psycopg.connect(url, autocommit=True) as conn:
    def report():
        start, data, database = conn.execute(
            "SELECT pg_postmaster_start_time()::text, current_setting('data_directory'), current_database()"
        ).fetchone()
        print(json.dumps({"url": url, "start": start, "data_directory": data, "database": database}), flush=True)
    report()
    for _ in sys.stdin:  # one report per line; end of input ends the process normally
        report()
"""


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class EmbeddedClient:
    """A process using the embedded server; it answers a report per line written to it."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=botloom_env({"BOTLOOM_DATA_DIR": str(data_dir)}),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self.process.stdout, self._lines), daemon=True).start()

    def report(self) -> dict[str, str]:
        """The next report: which server (start time, data directory) the process talks to."""
        try:
            line = self._lines.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError("the embedded client did not report in time") from None
        assert line is not None, f"the client exited: {self.stderr()}"
        return dict(json.loads(line))

    def ask(self) -> dict[str, str]:
        """Have the process query the server again."""
        assert self.process.stdin is not None
        self.process.stdin.write("again\n")
        self.process.stdin.flush()
        return self.report()

    def finish(self) -> None:
        """End the process normally (end of its input), as a botloom process shuts down."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(DEADLINE) == 0, self.stderr()

    def crash(self) -> None:
        """Kill the process without any clean-up (out of memory, ``kill -9``)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE)

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_until_stopped(pgdata: Path, pid: int) -> bool:
    """Poll until the server is gone (pid file removed, process exited); False at the deadline."""
    deadline = time.monotonic() + STOP_DEADLINE
    while (pgdata / "postmaster.pid").exists() or is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh ``BOTLOOM_DATA_DIR`` directly under the system temp dir.

    Not under pytest's ``tmp_path``: pgserver opens the parents of the data dir to its
    ``pgserver`` user when run as root, and any pytest session starting meanwhile (another
    xdist worker, a neighbour's run) closes ``/tmp/pytest-of-root`` again, so a server
    restarted later could no longer reach its data.
    """
    root = Path(tempfile.mkdtemp(prefix="botloom-embedded-"))
    path = root / "data"
    path.mkdir()
    yield path
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pgdata(data_dir: Path) -> Iterator[Path]:
    """``<data_dir>/postgres``; a server a test leaves behind is stopped afterwards."""
    path = data_dir / "postgres"
    yield path
    pid = postmaster_pid(path)
    if pid is not None and is_alive(pid):
        os.kill(pid, signal.SIGINT)  # fast shutdown of the server this test started
        wait_until_stopped(path, pid)


@pytest.fixture
def clients() -> Iterator[list[EmbeddedClient]]:
    started: list[EmbeddedClient] = []
    yield started
    for client in started:
        client.stop()


def start_clients(data_dir: Path, clients: list[EmbeddedClient], count: int) -> list[dict[str, str]]:
    """Start ``count`` processes (the first alone, then the rest at once); returns their first reports."""
    first = EmbeddedClient(data_dir)
    clients.append(first)
    reports = [first.report()]
    more = [EmbeddedClient(data_dir) for _ in range(count - 1)]
    clients.extend(more)
    return reports + [client.report() for client in more]


def test_processes_share_one_server_and_the_last_one_stops_it(
    data_dir: Path, pgdata: Path, clients: list[EmbeddedClient]
) -> None:
    reports = start_clients(data_dir, clients, 2)
    assert reports[0]["database"] == "botloom"
    assert reports[0]["url"] == reports[1]["url"]
    assert {(r["start"], r["data_directory"]) for r in reports} == {(reports[0]["start"], str(pgdata.resolve()))}
    pid = postmaster_pid(pgdata)
    assert pid is not None
    assert is_alive(pid)

    first, second = clients
    first.finish()
    assert second.ask()["start"] == reports[0]["start"]  # the same server, still up
    assert postmaster_pid(pgdata) == pid

    second.finish()
    assert wait_until_stopped(pgdata, pid), "the server outlived its last process"


def test_a_crashed_process_does_not_keep_the_server_alive(
    data_dir: Path, pgdata: Path, clients: list[EmbeddedClient]
) -> None:
    """A process killed without clean-up must not make the server outlive the last live process."""
    start_clients(data_dir, clients, 2)
    pid = postmaster_pid(pgdata)
    assert pid is not None
    first, second = clients
    first.crash()
    second.ask()
    second.finish()
    assert wait_until_stopped(pgdata, pid), "the server keeps running after every botloom process ended"


def test_a_new_process_restarts_a_stopped_server_on_the_same_data(
    data_dir: Path, pgdata: Path, clients: list[EmbeddedClient]
) -> None:
    [before] = start_clients(data_dir, clients, 1)
    pid = postmaster_pid(pgdata)
    assert pid is not None
    clients[0].finish()
    assert wait_until_stopped(pgdata, pid)
    [after] = start_clients(data_dir, clients, 1)
    assert after["data_directory"] == before["data_directory"]
    assert after["start"] != before["start"]
    clients[-1].finish()


def test_migrate_uses_the_embedded_server(data_dir: Path, pgdata: Path, tmp_path: Path) -> None:
    env = botloom_env({"BOTLOOM_DATA_DIR": str(data_dir)})
    first = run_botloom("migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"applied {len(MIGRATIONS)} migration(s)"
    assert "applying migration 0001.core" in first.stderr
    assert (pgdata / "PG_VERSION").exists()

    second = run_botloom("migrate", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "the database is up to date"
    assert not (pgdata / "postmaster.pid").exists(), "the server outlived botloom migrate"


def serve(data_dir: Path) -> Server:
    """``botloom serve`` on the embedded server of ``data_dir`` (no ``BOTLOOM_DATABASE_URL``), started."""
    server = Server("", data_dir, demo=False)
    server.env = botloom_env({k: v for k, v in server.env.items() if k.startswith("BOTLOOM_") and v})
    server.start()
    return server


def terminate(server: Server) -> int:
    """Send SIGTERM, as systemd, Docker and Kubernetes do, and wait for the process to end; its exit status."""
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(DEADLINE)


def test_sigterm_stops_the_embedded_server_of_the_last_serve_process(data_dir: Path, pgdata: Path) -> None:
    first = serve(data_dir)
    second: Server | None = None
    try:
        pid = postmaster_pid(pgdata)
        assert pid is not None and is_alive(pid)
        second = serve(data_dir)
        assert postmaster_pid(pgdata) == pid, "the second process joined the running server"

        first_status = terminate(first)
        assert is_alive(pid), "the server stopped while another process still uses it"
        assert httpx.get(f"{second.url}/ready", timeout=10).status_code == 200

        second_status = terminate(second)
        assert wait_until_stopped(pgdata, pid), "SIGTERM left the embedded PostgreSQL running"
        assert (first_status, second_status) == (0, 0), "a graceful stop ends with status 0"
    finally:
        for server in (first, second):
            if server is not None and server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait(DEADLINE)


def test_chat_in_another_folder_names_the_new_empty_data_dir(data_dir: Path) -> None:
    """Run in a folder without ``.botloom``, ``botloom chat`` says where it looked and that it was created just now."""
    folder = data_dir / "elsewhere"
    folder.mkdir()
    result = run_botloom("chat", "acme/support", env=botloom_env({"BOTLOOM_SECRET_KEY": "k"}), cwd=folder)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"botloom: error: no bot 'acme/support' in the data dir {folder / '.botloom'}, created")
    assert "BOTLOOM_DATA_DIR" in line
    assert not (folder / ".botloom" / "postgres" / "postmaster.pid").exists(), "the server stopped with the command"


def test_sigterm_ends_chat_waiting_for_a_line_and_stops_the_embedded_server(data_dir: Path, pgdata: Path) -> None:
    env = botloom_env({"BOTLOOM_DATA_DIR": str(data_dir), "BOTLOOM_SECRET_KEY": "k"})
    assert run_botloom("demo", env=env, cwd=data_dir).returncode == 0
    chat = subprocess.Popen(
        [sys.executable, "-m", "botloom", "chat", "acme/support"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write("hi\n")
        chat.stdin.flush()
        assert chat.stdout.readline().startswith("bot> "), "the chat answered"
        pid = postmaster_pid(pgdata)
        assert pid is not None and is_alive(pid)
        chat.send_signal(signal.SIGTERM)  # while it waits for the next line
        assert chat.wait(DEADLINE) == 128 + signal.SIGTERM
        assert wait_until_stopped(pgdata, pid), "SIGTERM left the embedded PostgreSQL running"
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait(DEADLINE)
        for stream in (chat.stdin, chat.stdout, chat.stderr):
            if stream is not None:
                stream.close()
