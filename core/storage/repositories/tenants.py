"""Tenants and their API keys (operator-level tenant rows; keys scoped by tenant, stored as hashes)."""

from __future__ import annotations

import secrets

from psycopg import errors as pg_errors

from botloom.core.domain import ApiKey, Tenant
from botloom.core.storage.repositories.base import (
    API_KEY_PREFIX,
    Conflict,
    Repository,
    as_uuid,
    hash_api_key,
    to_struct,
)
from botloom.core.storage.repositories.contacts import RECORD_THREADS_SQL, thread_params


class TenantRepository(Repository):
    """Tenants (operator-level: the tenant table itself is not scoped)."""

    async def create(self, slug: str, name: str) -> Tenant:
        """Create a tenant; raises :class:`Conflict` when the slug is taken."""
        try:
            row = await self._one("INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING *", (slug, name))
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"tenant {slug!r} exists") from exc
        assert row is not None
        return to_struct(Tenant, row)

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id."""
        row = await self._one("SELECT * FROM tenants WHERE id = %s", (as_uuid(tenant_id),))
        return to_struct(Tenant, row) if row else None

    async def get_by_slug(self, slug: str) -> Tenant | None:
        """The tenant with this slug."""
        row = await self._one("SELECT * FROM tenants WHERE slug = %s", (slug,))
        return to_struct(Tenant, row) if row else None

    async def list_all(self) -> list[Tenant]:
        """Every tenant, oldest first."""
        return [to_struct(Tenant, r) for r in await self._all("SELECT * FROM tenants ORDER BY created_at", ())]

    async def delete(self, tenant_id: str) -> bool:
        """Delete a tenant and everything it owns.

        Its conversations' checkpoint threads (and their debug forks') are recorded in
        ``checkpoint_erasures`` in the same transaction, for ``runtime/erasure.py`` to
        delete: the tenant's row and its bots' rows are locked first, so no bot,
        conversation or fork can be added meanwhile, and every thread the deletion
        orphans is listed.
        """
        tenant = as_uuid(tenant_id)
        if tenant is None:
            return False
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT id FROM tenants WHERE id = %s FOR UPDATE", (tenant,))
            if await cur.fetchone() is None:
                return False
            await conn.execute("SELECT id FROM bots WHERE tenant_id = %s FOR UPDATE", (tenant,))
            await conn.execute(RECORD_THREADS_SQL, thread_params(tenant_id, "tenant"))
            await conn.execute("DELETE FROM tenants WHERE id = %s", (tenant,))
        return True


class ApiKeyRepository(Repository):
    """Tenants' API keys, stored as hashes."""

    async def create(self, tenant_id: str, name: str = "default") -> tuple[ApiKey, str]:
        """Make a new key; returns the stored record and the key itself, which is never stored."""
        token = secrets.token_urlsafe(32)
        key = f"{API_KEY_PREFIX}{token}"
        row = await self._one(
            "INSERT INTO api_keys (tenant_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s) RETURNING *",
            (as_uuid(tenant_id), name, key[: len(API_KEY_PREFIX) + 6], hash_api_key(key)),
        )
        assert row is not None
        row.pop("key_hash")
        return to_struct(ApiKey, row), key

    async def authenticate(self, key: str) -> ApiKey | None:
        """The live (not revoked) key record matching ``key``, noting its use."""
        row = await self._one(
            "UPDATE api_keys SET last_used_at = now() WHERE key_hash = %s AND revoked_at IS NULL "
            "RETURNING id, tenant_id, name, prefix, created_at, revoked_at, last_used_at",
            (hash_api_key(key),),
        )
        return to_struct(ApiKey, row) if row else None

    async def list_all(self, tenant_id: str) -> list[ApiKey]:
        """A tenant's keys, revoked ones included."""
        rows = await self._all(
            "SELECT id, tenant_id, name, prefix, created_at, revoked_at, last_used_at FROM api_keys "
            "WHERE tenant_id = %s ORDER BY created_at",
            (as_uuid(tenant_id),),
        )
        return [to_struct(ApiKey, r) for r in rows]

    async def revoke(self, tenant_id: str, key_id: str) -> bool:
        """Revoke one of the tenant's keys; ``False`` if it has no such live key."""
        row = await self._one(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = %s AND id = %s AND revoked_at IS NULL "
            "RETURNING id",
            (as_uuid(tenant_id), as_uuid(key_id)),
        )
        return row is not None
