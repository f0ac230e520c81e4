"""What every repository shares: the database, tenant-safe ids, rows as Structs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from botloom.core.storage.database import Database

S = TypeVar("S", bound=msgspec.Struct)


API_KEY_PREFIX = "blk_"


class Conflict(Exception):
    """A unique name is taken (a tenant or bot slug)."""


def as_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID, or ``None`` when it is not one (so lookups find nothing)."""
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


COLUMN_FIELDS = {"user_ref": "user"}
"""Columns whose Struct field has another name (``user`` is a reserved word in SQL)."""


def to_struct(cls: type[S], row: Mapping[str, Any]) -> S:
    """A row as a ``cls`` Struct: UUIDs as strings, columns renamed by :data:`COLUMN_FIELDS`."""
    data = {COLUMN_FIELDS.get(k, k): (str(v) if isinstance(v, uuid.UUID) else v) for k, v in row.items()}
    return msgspec.convert(data, cls, strict=False, from_attributes=False)


def hash_api_key(key: str) -> bytes:
    """The stored form of an API key: SHA-256 (keys are long random strings, so no salt is needed)."""
    return hashlib.sha256(key.encode()).digest()


class Repository:
    """Base for repositories: holds the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any] | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()
