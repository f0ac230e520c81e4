"""Databases for tests: one PostgreSQL server per pytest session, a fresh migrated database per test.

The server is the embedded one (``pgserver``, the ``embedded`` extra), started in a
temporary directory, unless ``BOTLOOM_DATABASE_URL`` names one: then each test's
database is created on that server (its user needs the ``CREATEDB`` right), and
dropped after the test. Every migration runs once, on a template database that
each test's database is cloned from, so a test costs a ``CREATE DATABASE``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["TestDatabases", "embedded_server_url", "with_database"]


def with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name`` (user, host, port and query kept)."""
    parts = urlsplit(url)
    return parts._replace(path="/" + name).geturl()


def embedded_server_url(base: Path) -> str:
    """Start the embedded PostgreSQL under ``base`` and return the URL of its ``postgres`` database."""
    from botloom.core.storage.embedded import start_embedded_postgres

    return with_database(start_embedded_postgres(base), "postgres")


class TestDatabases:
    """Fresh, migrated databases on one server."""

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._template: str | None = None
        self._lock = threading.Lock()

    def _execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(statement.encode())

    def template(self) -> str:
        """The name of the migrated template database (created on first use)."""
        with self._lock:
            if self._template is None:
                from botloom.core.storage.migrations import apply_migrations

                name = f"botloom_template_{uuid.uuid4().hex[:10]}"
                self._execute(f'CREATE DATABASE "{name}"')
                apply_migrations(with_database(self.server_url, name))
                self._template = name
            return self._template

    @contextmanager
    def fresh(self, prefix: str = "botloom_test") -> Iterator[str]:
        """A new database cloned from the template; its URL, dropped after the block."""
        template = self.template()
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield with_database(self.server_url, name)
        finally:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_template(self) -> None:
        """Drop the template database (end of the session)."""
        with self._lock:
            if self._template is not None:
                self._execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')
                self._template = None


@contextmanager
def session_server(given: str | None) -> Iterator[str]:
    """The session's server URL: ``given`` as it is, else the embedded server in a temporary directory."""
    if given:
        yield given
        return
    # Not under pytest's temporary directory: as root, PostgreSQL runs as another user, and pytest
    # resets its own directories to 0700.
    base = Path(tempfile.mkdtemp(prefix="botloom-testing-postgres-"))
    try:
        yield embedded_server_url(base)
    finally:
        _stop_embedded(base)
        shutil.rmtree(base, ignore_errors=True)


def _stop_embedded(base: Path) -> None:
    """Stop the embedded server under ``base`` (pgserver would stop it at exit; the data goes now)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
    except ImportError:
        return
    server = get_server(base / "postgres", cleanup_mode="stop")
    server.cleanup()
