"""What the API's controllers share: tenant look-up, error types, path parameters, documented errors."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import PathParameter

from botloom.core.domain import Tenant, is_slug
from botloom.core.storage.repositories import as_uuid
from botloom.graphs.services import Services
from botloom.server.auth import Principal

TenantRef = Annotated[str, PathParameter(description="A tenant's slug or id", max_length=200)]
BotRef = Annotated[str, PathParameter(description="A bot's id, or `tenant-slug/bot-slug`", max_length=200)]
IdRef = Annotated[str, PathParameter(description="An id", max_length=200)]
NameRef = Annotated[str, PathParameter(description="A name", max_length=255)]


class ConflictException(ClientException):
    """The name is taken (a tenant or bot slug)."""

    status_code = 409


AUTH_ERRORS: list[type[HTTPException]] = [NotAuthorizedException]
"""Every route answers 401 without a valid ``Authorization: Bearer`` token."""
READ_ERRORS: list[type[HTTPException]] = [NotAuthorizedException, NotFoundException]
WRITE_ERRORS: list[type[HTTPException]] = [NotAuthorizedException, NotFoundException, ValidationException]
OPERATOR_ERRORS: list[type[HTTPException]] = [NotAuthorizedException, PermissionDeniedException]


async def visible_tenant(services: Services, principal: Principal, ref: str) -> Tenant:
    """The tenant ``ref`` (an id or a slug) names, if the caller may see it; 404 otherwise."""
    tenant: Tenant | None = None
    if as_uuid(ref) is not None:
        tenant = await services.store.tenants.get(ref)
    elif is_slug(ref):
        tenant = await services.store.tenants.get_by_slug(ref)
    if tenant is None or not principal.sees(tenant.id):
        raise NotFoundException(f"no tenant {ref!r}")
    return tenant


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def invalid(error: msgspec.ValidationError, prefix: str = "") -> ValidationException:
    """A 400 naming the field msgspec found wrong, in Litestar's ``extra`` list shape."""
    text = str(error)
    match = _AT.search(text)
    field = match["path"] if match else ""
    message = text[: match.start()] if match else text
    key = ".".join(part for part in (prefix, field) if part)
    return ValidationException(
        f"invalid {key or 'body'}: {message}", extra=[{"key": key, "message": message, "source": "body"}]
    )
