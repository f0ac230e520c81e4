"""Numbered schema migrations, applied by ``botloom migrate`` and at start-up.

The migrations are the SQL files in ``botloom/core/storage/migrations/``
(``0001.core.sql``, ...), applied in order by yoyo-migrations, which records
what ran in its own tables and holds a lock while it works: running migrations
twice, or from two processes at once, applies each exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(str(resources.files("botloom.core.storage") / "migrations"))


def yoyo_url(database_url: str) -> str:
    """The URL yoyo needs to use psycopg 3 for ``database_url``."""
    scheme, sep, rest = database_url.partition("://")
    if scheme in {"postgresql", "postgres"}:
        return f"postgresql+psycopg{sep}{rest}"
    return database_url


MIGRATION_LOCK_ID = 0x626F746C6F6F6D  # "botloom"


def apply_migrations(
    database_url: str,
    *,
    directories: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
    lock_timeout: float = 120.0,
) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date).

    A PostgreSQL advisory lock serialises concurrent callers (it is released by
    the server if a process dies, unlike yoyo's own lock row, so a lock row left
    by a crashed process is cleared while the advisory lock is held).
    """
    import psycopg
    import yoyo
    from yoyo.migrations import MigrationList

    with psycopg.connect(database_url, autocommit=True) as guard:
        guard.execute(f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'")
        guard.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        if guard.execute("SELECT to_regclass('yoyo_lock')").fetchone() != (None,):
            guard.execute("DELETE FROM yoyo_lock")
        backend = yoyo.get_backend(yoyo_url(database_url))
        try:
            migrations = yoyo.read_migrations(*(str(d) for d in directories or [MIGRATIONS_DIR]))
            with backend.lock():
                pending = backend.to_apply(migrations)
                for migration in pending:
                    if progress is not None:
                        progress(f"applying migration {migration.id}")
                    backend.apply_migrations(MigrationList([migration]))
        finally:
            backend.connection.close()
            guard.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return [m.id for m in pending]


def pending_migrations(database_url: str) -> list[str]:
    """Ids of the migrations not yet applied to ``database_url``."""
    import yoyo

    backend = yoyo.get_backend(yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(yoyo.read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()
