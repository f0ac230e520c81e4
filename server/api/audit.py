"""``GET /api/v1/audit``: the audit log, newest first (``docs/audit.md``); and who a request's caller is in it.

The operator's token sees every row; a tenant's key only its tenant's (a ``tenant``
filter naming another tenant is a 404, as everywhere); an agent's token is refused (403)
like on every route that is not the desk's. Pages are keyset: each answer's
``next_cursor`` is the next page's ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.params import QueryParameter
from litestar.types import ControllerRouterHandler

from botloom.core.storage.repositories import AuditEntry, as_uuid
from botloom.runtime.audit import Actor
from botloom.runtime.services import Services
from botloom.server.api.common import MAX_REF, READ_ERRORS, ApiController, visible_tenant
from botloom.server.api.schemas import NO_NUL
from botloom.server.auth import Principal
from botloom.server.deps import PrincipalDep, ServicesDep
from botloom.server.logs import request_id

MAX_PAGE = 200
MAX_TIME = 40
ACTION_PATTERN = r"^[a-z][a-z_]*(\.([a-z][a-z_]*|\*))?$"
ERRORS = [*READ_ERRORS, PermissionDeniedException, ValidationException]


def actor_of(principal: Principal) -> Actor:
    """Who the caller is, as an audit row records it (the key's or the agent's id, never a secret), with the request id.

    Pass it to :func:`botloom.runtime.audit.record`.
    """
    rid = request_id.get()
    rid_or_none = None if rid == "-" else rid
    if principal.agent is not None:
        return Actor("agent", principal.agent.id, rid_or_none)
    if principal.is_operator:
        return Actor("operator", None, rid_or_none)
    return Actor("api_key", principal.key_id, rid_or_none)


def time_query(*, name: str, description: str) -> Any:
    """A time query parameter: ISO 8601 with a UTC offset (``2026-12-01T00:00:00Z``)."""
    return QueryParameter(name=name, description=f"{description} (ISO 8601 with a UTC offset)", format="date-time")


def moment(value: str | None, key: str) -> datetime | None:
    """``value`` as an aware datetime; 400 naming ``key`` when it is not one."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if len(value) <= MAX_TIME else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValidationException(
            f"invalid {key}: give a time in ISO 8601 with a UTC offset (2026-12-01T00:00:00Z)",
            extra=[{"key": key, "message": "not a time with a UTC offset", "source": "query"}],
        )
    return parsed


class AuditPrincipalOut(msgspec.Struct, frozen=True, kw_only=True):
    """Who made the change."""

    kind: str
    """``operator``, ``api_key``, ``agent`` or ``system`` (botloom itself)."""
    id: str | None
    """The API key's or the agent's id; ``null`` for the operator and for botloom."""


class AuditTargetOut(msgspec.Struct, frozen=True, kw_only=True):
    """What was changed."""

    kind: str
    """``tenant``, ``api_key``, ``bot``, ``plugin``, ``agent``, ``team``, ``canned_response``, ``intent_example``,
    ``webhook``, ``document``, ``contact``, ``conversation`` (docs/audit.md)."""
    id: str | None


class AuditEntryOut(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded administrative action."""

    id: str
    at: datetime
    tenant_id: str | None
    principal: AuditPrincipalOut
    action: str
    """``bot.updated``, ``api_key.revoked``... (docs/audit.md lists them)."""
    target: AuditTargetOut
    request_id: str | None
    """The ``X-Request-ID`` of the request that made the change."""
    details: dict[str, Any]
    """What changed: field names, counts, slugs; never a secret, an end user's address or a message's text."""

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        """The row as the API answers it."""
        return cls(
            id=str(entry.id),
            at=entry.at,
            tenant_id=entry.tenant_id,
            principal=AuditPrincipalOut(kind=entry.principal_kind, id=entry.principal_id),
            action=entry.action,
            target=AuditTargetOut(kind=entry.target_kind, id=entry.target_id),
            request_id=entry.request_id,
            details=entry.details,
        )


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of the audit log, newest first."""

    items: list[AuditEntryOut]
    next_cursor: str | None
    """The ``cursor`` of the next (older) page; ``null`` on the last page."""


Cursor = Annotated[
    str | None,
    QueryParameter(
        description="The `next_cursor` of the previous page (an opaque token: any other value is a 400)",
        max_length=100,
        pattern=r"^[A-Za-z0-9_-]+$",
    ),
]


def encode_cursor(entry_id: int) -> str:
    """The opaque cursor of the page after the row ``entry_id``."""
    return base64.urlsafe_b64encode(f"audit:{entry_id}".encode()).decode().rstrip("=")


def _cursor(cursor: str) -> int:
    try:
        kind, _, ident = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
    except (binascii.Error, ValueError):
        kind, ident = "", ""
    if kind != "audit" or not ident.isdigit() or len(ident) > 18:
        raise ValidationException(
            "invalid cursor: pass a next_cursor this API answered",
            extra=[{"key": "cursor", "message": "not a cursor", "source": "query"}],
        )
    return int(ident)


async def _scope(services: Services, principal: Principal, tenant: str | None) -> str | None:
    """The tenant whose rows to list (``None``: every tenant's, for the operator only)."""
    if tenant is None:
        return principal.tenant_id
    if principal.is_operator and as_uuid(tenant) is not None:
        return str(as_uuid(tenant))  # a deleted tenant's rows stay (docs/audit.md)
    try:
        return (await visible_tenant(services, principal, tenant)).id
    except NotFoundException:
        raise NotFoundException(f"no tenant {tenant!r}") from None


class AuditController(ApiController):
    """The audit log."""

    path = "/audit"
    tags = ("audit",)

    @get(
        summary="List the audit log",
        description=(
            "Every administrative change recorded (who: the operator, an API key or an agent by id; the action; "
            "what it changed; the tenant; the request id; when), newest first, one page at a time. The operator's "
            "token sees every tenant's rows; a tenant's key sees its own tenant's only (a `tenant` naming another "
            "tenant is a 404). Agents' tokens are refused. `from` is inclusive, `to` exclusive; `action` is one "
            "action (`bot.updated`) or a family (`bot.*`)."
        ),
        raises=ERRORS,
    )
    async def list_audit(
        self,
        *,
        principal: PrincipalDep,
        services: ServicesDep,
        since: Annotated[str | None, time_query(name="from", description="Only rows at or after this time")] = None,
        until: Annotated[str | None, time_query(name="to", description="Only rows before this time")] = None,
        action: Annotated[
            str | None,
            QueryParameter(
                description="An action (`bot.updated`) or a family (`bot.*`)", max_length=64, pattern=ACTION_PATTERN
            ),
        ] = None,
        tenant: Annotated[
            str | None,
            QueryParameter(
                description="Only this tenant's rows (its slug or id; the operator may name a deleted tenant by id)",
                max_length=MAX_REF,
                pattern=NO_NUL,
            ),
        ] = None,
        cursor: Cursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="How many rows at most")] = 50,
    ) -> AuditPage:
        """One page of the audit rows the caller may see, newest first."""
        start, end = moment(since, "from"), moment(until, "to")
        if start is not None and end is not None and start >= end:
            raise ValidationException(
                "invalid range: from must be before to",
                extra=[{"key": "from", "message": "not before to", "source": "query"}],
            )
        scope = await _scope(services, principal, tenant)
        before = _cursor(cursor) if cursor else None
        rows = await services.store.audit.page(
            scope, since=start, until=end, action=action, before=before, limit=limit + 1
        )
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_cursor(rows[-1].id) if more and rows else None
        return AuditPage(items=[AuditEntryOut.of(r) for r in rows], next_cursor=next_cursor)


AUDIT_HANDLERS: list[ControllerRouterHandler] = [AuditController]

__all__ = ["AUDIT_HANDLERS", "AuditController", "AuditEntryOut", "AuditPage", "actor_of"]
