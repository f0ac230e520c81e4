"""``botloom serve`` in a child process, for tests that need a real server (browser, several processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers import LOCAL_ENDPOINTS
from tests.servers import free_port


class Server:
    """``botloom serve --demo`` in a child process, restartable on the same port and database.

    ``workers=False`` runs it with ``--no-workers``: no job workers, so no cron job (the desk's
    sweep, the recovery sweep) acts on the test's rows behind its back.
    """

    def __init__(
        self, database_url: str, data_dir: Path, *, demo: bool = True, workers: bool = True, **env: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "BOTLOOM_DATABASE_URL": database_url,
            "BOTLOOM_DATA_DIR": str(data_dir),
            "BOTLOOM_SECRET_KEY": "page-test",
            "BOTLOOM_ADMIN_TOKEN": "admin",
            "BOTLOOM_ALLOWED_ENDPOINTS": LOCAL_ENDPOINTS,
            **env,
        }
        self.demo = demo
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"serve-{self.port}.log"

    def __enter__(self) -> Server:
        """Start the server (see :meth:`start`); it stops when the block ends."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until ``/ready`` answers."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the server process without waiting for it."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "botloom",
                    "serve",
                    "--port",
                    str(self.port),
                    *(["--demo"] if self.demo else []),
                    *([] if self.workers else ["--no-workers"]),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        """Wait until the spawned server answers ``/ready``."""
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("botloom serve did not become ready:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def started_together(servers: Sequence[Server]) -> Iterator[Sequence[Server]]:
    """Spawn every server, then wait until each is ready (their starts overlap); stop them all after."""
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
