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
    ServiceUnavailableException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import PathParameter

from botloom.core.domain import Tenant, is_slug
from botloom.core.storage.repositories import as_uuid
from botloom.runtime.services import Services
from botloom.server.api.schemas import MULTI_LINE, NO_NUL, ONE_LINE, VISIBLE_TEXT
from botloom.server.auth import Principal

MAX_REF = 200
TenantRef = Annotated[str, PathParameter(description="A tenant's slug or id", max_length=MAX_REF, pattern=NO_NUL)]
BotRef = Annotated[
    str, PathParameter(description="A bot's id, or `tenant-slug/bot-slug`", max_length=MAX_REF, pattern=NO_NUL)
]
IdRef = Annotated[str, PathParameter(description="An id", max_length=MAX_REF, pattern=NO_NUL)]
NameRef = Annotated[str, PathParameter(description="A name", max_length=255, pattern=NO_NUL)]


class ConflictException(ClientException):
    """The name is taken (a tenant or bot slug)."""

    status_code = 409


SERVICE_ERRORS: list[type[HTTPException]] = [TooManyRequestsException, ServiceUnavailableException]
"""Every API route answers 429 over the per-key rate limit, and 503 (with ``Retry-After``) during an outage."""
AUTH_ERRORS: list[type[HTTPException]] = [NotAuthorizedException, *SERVICE_ERRORS]
"""Every route answers 401 without a valid ``Authorization: Bearer`` token."""
READ_ERRORS: list[type[HTTPException]] = [NotAuthorizedException, NotFoundException, *SERVICE_ERRORS]
WRITE_ERRORS: list[type[HTTPException]] = [
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
    *SERVICE_ERRORS,
]
OPERATOR_ERRORS: list[type[HTTPException]] = [NotAuthorizedException, PermissionDeniedException, *SERVICE_ERRORS]


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


def _named(exc: ValidationException) -> tuple[list[dict[str, Any]], str]:
    """Litestar's ``extra`` with each bad field named and said in words, and the fields in one line."""
    errors = [dict(e) for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    for error in errors:
        if isinstance(error.get("message"), str):
            error["message"] = readable(error["message"])
        match = _FIELD.search(str(error.get("message", "")))
        if match:
            parent = error.get("key")
            error["key"] = f"{parent}.{match[1]}" if parent and parent != "data" else match[1]
        elif error.get("key") == "data":  # Litestar's name for the whole body
            error["key"] = "body"
            if error.get("message") == "'data'":  # no body at all
                error["message"] = "missing: send a JSON object (content-type: application/json)"
    named = "; ".join(f"{e['key']}: {e.get('message', 'invalid')}" for e in errors if e.get("key"))
    return errors, named


def _answer(exc: ValidationException, detail: str, errors: list[dict[str, Any]]) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": detail}
    if errors or exc.extra:
        body["extra"] = errors or exc.extra
    return Response(body, status_code=exc.status_code)


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """A 400 whose ``extra`` names each bad field (msgspec puts missing and unknown ones in the message only)."""
    errors, named = _named(exc)
    detail = f"invalid request: {named}" if named and exc.detail.startswith("Validation failed") else exc.detail
    return _answer(exc, detail, errors)


def route_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """A channel route's 400: Litestar's detail (the method and path as written), then each bad field in words."""
    errors, named = _named(exc)
    return _answer(exc, f"{exc.detail}: {named}" if named else exc.detail, errors)


def _checkable(value: str) -> bool:
    """Whether a path value is within the bounds its parameter declares (else Litestar answers 400 for it)."""
    return len(value) <= MAX_REF and "\x00" not in value


async def check_request(request: Request[Any, Any, Any]) -> None:
    """Before a handler that takes a body parses it: the path's tenant and bot exist, then the body as declared.

    * The tenant and bot a path names are looked up first: a request about a bot
      the caller cannot see is a 404 whatever its body (``PATCH /api/v1/bots/0/conversations``
      reads as the bot ``0/conversations``, and there is none).
    * A JSON body is decoded strictly against the handler's Struct, as the API schema
      describes it: ``"redact_personal_data": 0`` is not a boolean and ``"max_tokens": "5"``
      not an integer (Litestar's own conversion would take both), but ``5.0`` is. The 400 names the field.
    """
    from botloom.server.auth import visible_bot

    field = request.route_handler.parsed_data_field
    if field is None:
        return  # no body: the handler looks up what the path names
    params = request.path_params
    services: Services = request.app.state.services
    principal: Principal = request.state.principal
    tenant, bot = params.get("tenant"), params.get("bot")
    if isinstance(tenant, str) and _checkable(tenant):
        await visible_tenant(services, principal, tenant)
    if isinstance(bot, str) and _checkable(bot):
        await visible_bot(services, principal, bot)
    body_type = field.annotation
    if not (isinstance(body_type, type) and issubclass(body_type, msgspec.Struct)):
        return
    body = await request.body()
    if not body.strip():
        return  # Litestar says the body is missing
    try:
        msgspec.convert(integral(msgspec.json.decode(body)), body_type, strict=True)
    except msgspec.ValidationError as exc:
        key, message = located(exc)
        extra = [{"key": key or "data", "message": message, "source": "body"}]  # "data": Litestar's name for the body
        raise ValidationException(f"Validation failed for {request.method} {request.url.path}", extra=extra) from None
    except msgspec.DecodeError:
        return  # Litestar says the JSON is malformed


def integral(value: Any) -> Any:
    """``value`` with each whole float as an int: in JSON (and its schema) ``2.0`` is the integer 2."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


class ApiController(Controller):
    """Base of the API's controllers: the path's tenant and bot, then the body checked strictly; 400s name fields."""

    before_request = check_request  # type: ignore[assignment] # Litestar calls it with the request only
    exception_handlers = {ValidationException: validation_error}  # noqa: RUF012 - Litestar reads it as is


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_PATTERN = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$")
PATTERN_MEANINGS = {
    NO_NUL: "must not contain a NUL character (U+0000)",
    ONE_LINE: "must not contain control characters",
    MULTI_LINE: "must not contain control characters other than tabs and line breaks",
    VISIBLE_TEXT: "must have visible text and no NUL character (U+0000)",
}
"""What a refused string pattern asks for, in words (the schema shows the pattern itself)."""


def readable(message: str) -> str:
    """The message msgspec gives, with a pattern botloom uses said in words."""
    match = _PATTERN.match(message)
    if match is None:
        return message
    pattern = match["pattern"].encode().decode("unicode_escape") if "\\\\" in match["pattern"] else match["pattern"]
    return PATTERN_MEANINGS.get(pattern, message)


def located(error: msgspec.ValidationError) -> tuple[str, str]:
    """Where in the body msgspec found ``error`` (``settings.model.max_tokens``, ``""`` for the body) and what."""
    text = str(error)
    match = _AT.search(text)
    return (match["path"] if match else ""), readable(text[: match.start()] if match else text)


def invalid(error: msgspec.ValidationError, prefix: str = "") -> ValidationException:
    """A 400 naming the field msgspec found wrong, in Litestar's ``extra`` list shape."""
    field, message = located(error)
    key = ".".join(part for part in (prefix, field) if part)
    return ValidationException(
        f"invalid {key or 'body'}: {message}", extra=[{"key": key, "message": message, "source": "body"}]
    )
