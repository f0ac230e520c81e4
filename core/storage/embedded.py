"""The embedded PostgreSQL (with pgvector) that botloom starts when no database is configured.

It comes from the ``pgserver`` package (the ``embedded`` extra) and keeps its data in
``<data_dir>/postgres``. Several botloom processes on one data dir share one server:
``pgserver`` counts the processes using it and the last one to exit stops it.

That stop runs in an exit handler (``atexit``), so a process must end through
Python's exit, never by the default action of a signal: the command line turns
SIGTERM into a ``SystemExit`` (``botloom.server.cli.Terminated``) before anything
else runs, and uvicorn hands SIGTERM back to that handler after its graceful
shutdown. A process killed outright (SIGKILL) is forgotten by the next process
that starts or stops the server.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATABASE_NAME = "botloom"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not start; the message says what to do."""


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir`` and return the URL of its ``botloom`` database."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' RuntimeDirWarning on headless machines
            from pgserver.postgres_server import PostgresServer, get_server
    except ImportError as exc:
        raise EmbeddedPostgresError(
            "BOTLOOM_DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "pip install 'botloom[embedded]', or point BOTLOOM_DATABASE_URL at a PostgreSQL with pgvector"
        ) from exc
    pgdata = data_dir / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:  # pgserver's own inter-process lock over its list of users
        _forget_dead_processes(pgdata)
    _exit_cleanly_on_sigterm()
    logger.info("starting the embedded PostgreSQL in %s", pgdata)
    try:
        server: Any = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise EmbeddedPostgresError(f"the embedded PostgreSQL in {pgdata} did not start: {exc}\n{tail}") from exc

    def forget_dead_at_exit() -> None:
        with PostgresServer._lock:
            _forget_dead_processes(pgdata)

    # Exit handlers run last-registered first: this one runs before pgserver's, which stops the
    # server only when no other live process is on its list.
    atexit.register(forget_dead_at_exit)
    exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608 - a constant
    if not server.psql(exists).count("(1 row)"):
        try:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        except Exception:  # noqa: BLE001 - another process created it first
            logger.debug("database %s was created concurrently", DATABASE_NAME)
    return str(server.get_uri(DATABASE_NAME))


def _forget_dead_processes(pgdata: Path) -> None:
    """Drop processes that died without saying so (SIGKILL) from pgserver's list of users of the server.

    pgserver stops the server when the last process on its list exits; a killed
    process never leaves the list, which would keep the server running for ever.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM exit through Python's exit handlers, so pgserver can stop the server.

    Only possible from the main thread while SIGTERM has its default action: for a
    library caller; the command line installs its own handler first.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _runtime_dir() -> Path:
    path = Path(f"/tmp/botloom-runtime-{os.getuid()}")  # noqa: S108 - per-user, 0700
    path.mkdir(mode=0o700, exist_ok=True)
    return path
