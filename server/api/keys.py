"""``/api/v1/tenants/{tenant}/keys``: a tenant's API keys (listed by prefix, shown once on creation)."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody

from botloom.runtime.audit import record
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, IdRef, TenantRef, visible_tenant
from botloom.server.api.schemas import KeyCreate, KeyCreated, KeyOut
from botloom.server.deps import PrincipalDep, ServicesDep


class KeyController(ApiController):
    """API keys of a tenant."""

    path = "/tenants/{tenant:str}/keys"
    tags = ("keys",)

    @get(summary="List a tenant's API keys", raises=READ_ERRORS)
    async def list_keys(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> list[KeyOut]:
        """Every key of the tenant, revoked ones included, by prefix and name; never the key itself."""
        found = await visible_tenant(services, principal, tenant)
        return [KeyOut.of(k) for k in await services.store.api_keys.list_all(found.id)]

    @post(summary="Create an API key", raises=WRITE_ERRORS)
    async def create_key(
        self, tenant: TenantRef, data: JSONBody[KeyCreate], principal: PrincipalDep, services: ServicesDep
    ) -> KeyCreated:
        """A new key for the tenant; the answer shows the key this once."""
        found = await visible_tenant(services, principal, tenant)
        async with services.store.db.transaction():
            key, secret = await services.store.api_keys.create(found.id, data.name)
            await record(
                services,
                actor_of(principal),
                "api_key.created",
                tenant_id=found.id,
                target=("api_key", key.id),
                details={"name": key.name, "prefix": key.prefix},
            )
        return KeyCreated.of(key, secret)

    @delete("/{key_id:str}", summary="Revoke an API key", raises=READ_ERRORS)
    async def revoke_key(
        self, tenant: TenantRef, key_id: IdRef, principal: PrincipalDep, services: ServicesDep
    ) -> None:
        """Revoke a key: from now on it gets 401 everywhere. 404 when it is unknown or already revoked."""
        found = await visible_tenant(services, principal, tenant)
        async with services.store.db.transaction():
            if not await services.store.api_keys.revoke(found.id, key_id):
                raise NotFoundException(f"no live API key {key_id!r}")
            await record(
                services, actor_of(principal), "api_key.revoked", tenant_id=found.id, target=("api_key", key_id)
            )
