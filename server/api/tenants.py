"""``/api/v1/tenants``: the operator creates and deletes tenants; a tenant reads itself."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody

from botloom.core.storage.repositories import Conflict
from botloom.runtime.audit import record
from botloom.runtime.erasure import REQUEST_THREADS, erase_threads
from botloom.server.api.audit import actor_of
from botloom.server.api.common import (
    AUTH_ERRORS,
    OPERATOR_ERRORS,
    READ_ERRORS,
    ApiController,
    ConflictException,
    TenantRef,
    visible_tenant,
)
from botloom.server.api.schemas import KeyCreated, TenantCreate, TenantCreated, TenantOut
from botloom.server.auth import require_operator
from botloom.server.deps import PrincipalDep, ServicesDep


class TenantController(ApiController):
    """Tenants: organisations that own bots and API keys."""

    path = "/tenants"
    tags = ("tenants",)

    @post(
        summary="Create a tenant and its first API key",
        raises=[*OPERATOR_ERRORS, ValidationException, ConflictException],
    )
    async def create_tenant(
        self, data: JSONBody[TenantCreate], principal: PrincipalDep, services: ServicesDep
    ) -> TenantCreated:
        """Operator only. Answers the tenant and its first API key, shown this once; 409 if the slug is taken."""
        require_operator(principal)
        try:
            # One transaction: no tenant without its key, nor without its audit row.
            async with services.store.db.transaction():
                tenant = await services.store.tenants.create(data.slug, data.name)
                key, secret = await services.store.api_keys.create(tenant.id, "default")
                await record(
                    services,
                    actor_of(principal),
                    "tenant.created",
                    tenant_id=tenant.id,
                    target=("tenant", tenant.id),
                    details={"slug": tenant.slug, "api_key": key.id},
                )
        except Conflict as exc:
            raise ConflictException(f"a tenant with slug {data.slug!r} exists") from exc
        return TenantCreated(tenant=TenantOut.of(tenant), api_key=KeyCreated.of(key, secret))

    @get(summary="List tenants", raises=AUTH_ERRORS)
    async def list_tenants(self, principal: PrincipalDep, services: ServicesDep) -> list[TenantOut]:
        """The operator sees every tenant, oldest first; a tenant's key sees only its own tenant."""
        if principal.is_operator:
            return [TenantOut.of(t) for t in await services.store.tenants.list_all()]
        assert principal.tenant_id is not None
        tenant = await services.store.tenants.get(principal.tenant_id)
        return [TenantOut.of(tenant)] if tenant else []

    @get("/{tenant:str}", summary="Get a tenant", raises=READ_ERRORS)
    async def get_tenant(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> TenantOut:
        """A tenant by slug or id; 404 when it does not exist or is another tenant."""
        return TenantOut.of(await visible_tenant(services, principal, tenant))

    @delete("/{tenant:str}", summary="Delete a tenant", raises=[*OPERATOR_ERRORS, NotFoundException])
    async def delete_tenant(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> None:
        """Operator only. Deletes the tenant with its keys, bots, conversations, knowledge and checkpoint threads.

        The checkpoint threads of its conversations and their debug forks are deleted before
        this answers (up to 10,000; the hourly retention pass deletes any more), and once more
        by that pass after any turn still running for them has ended (docs/data-rights.md).
        """
        require_operator(principal)
        found = await visible_tenant(services, principal, tenant)
        async with services.store.db.transaction():
            if not await services.store.tenants.delete(found.id):
                raise NotFoundException(f"no tenant {tenant!r}")
            # Kept after the tenant is gone (docs/audit.md): the deletion itself stays accountable.
            await record(
                services,
                actor_of(principal),
                "tenant.deleted",
                tenant_id=found.id,
                target=("tenant", found.id),
                details={"slug": found.slug},
            )
        await erase_threads(services, tenant_id=found.id, limit=REQUEST_THREADS)
