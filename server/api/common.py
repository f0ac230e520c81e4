"""What the API's controllers share: tenant look-up, error types, path parameters, documented errors."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response
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
from botloom.runtime.services import Services
from botloom.server.api.schemas import NO_NUL
from botloom.server.auth import Principal

TenantRef = Annotated[str, PathParameter(description="A tenant's slug or id", max_length=200, pattern=NO_NUL)]
BotRef = Annotated[
    str, PathParameter(description="A bot's id, or `tenant-slug/bot-slug`", max_length=200, pattern=NO_NUL)
]
IdRef = Annotated[str, PathParameter(description="An id", max_length=200, pattern=NO_NUL)]
NameRef = Annotated[str, PathParameter(description="A name", max_length=255, pattern=NO_NUL)]


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


_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """A 400 whose ``extra`` names each bad field (msgspec puts missing and unknown ones in the message only)."""
    errors = [dict(e) for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    for error in errors:
        match = _FIELD.search(str(error.get("message", "")))
        if match:
            parent = error.get("key")
            error["key"] = f"{parent}.{match[1]}" if parent and parent != "data" else match[1]
        elif error.get("key") == "data":  # Litestar's name for the whole body
            error["key"] = "body"
            if error.get("message") == "'data'":  # no body at all
                error["message"] = "missing: send a JSON object (content-type: application/json)"
    named = "; ".join(f"{e['key']}: {e.get('message', 'invalid')}" for e in errors if e.get("key"))
    detail = f"invalid request: {named}" if named and exc.detail.startswith("Validation failed") else exc.detail
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": detail}
    if errors or exc.extra:
        body["extra"] = errors or exc.extra
    return Response(body, status_code=exc.status_code)


class ApiController(Controller):
    """Base of the API's controllers: validation errors name their fields."""

    exception_handlers = {ValidationException: validation_error}  # noqa: RUF012 - Litestar reads it as is


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
