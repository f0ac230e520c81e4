"""``/api/v1/tenants/{tenant}/webhooks`` (a tenant's webhook endpoints) and ``/api/v1/events`` (polling).

An endpoint's URL must be ``http(s)`` and reach a public address (or one the
operator allows in ``BOTLOOM_ALLOWED_ENDPOINTS``, see :mod:`botloom.core.netguard`):
a tenant never chooses where botloom connects. The signing secret is shown once,
when the endpoint is created. docs/webhooks.md describes what is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import delete, get, post
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

from botloom.core.netguard import EndpointRefused, check_url
from botloom.core.signing import new_secret
from botloom.runtime.audit import record
from botloom.runtime.events import KIND_PATTERN
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, IdRef, TenantRef, visible_tenant
from botloom.server.api.schemas import ONE_LINE, Request, Shown
from botloom.server.deps import PrincipalDep, ServicesDep

MAX_ENDPOINTS = 20
"""Webhook endpoints one tenant may have."""
MAX_URL = 2000

WebhookUrl = Annotated[str, msgspec.Meta(min_length=8, max_length=MAX_URL, pattern=ONE_LINE)]
Kind = Annotated[str, msgspec.Meta(pattern=KIND_PATTERN, max_length=64)]


class WebhookCreate(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new webhook endpoint."""

    url: WebhookUrl
    """Where events are POSTed: an ``https://`` (or ``http://``) URL of a public address."""
    kinds: Annotated[list[Kind], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    """Event kinds to receive (``handover.waiting``...); empty: every kind."""
    description: Annotated[str, msgspec.Meta(max_length=200, pattern=ONE_LINE)] = ""


class WebhookOut(Shown, frozen=True, kw_only=True):
    """A webhook endpoint (never its secret)."""

    id: str
    url: str
    kinds: list[str]
    description: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut, frozen=True, kw_only=True):
    """A new webhook endpoint with its signing secret: shown this once, store it now."""

    secret: str
    """The key of the ``Botloom-Signature`` HMAC (docs/webhooks.md); botloom keeps it encrypted."""


class DeliveryOut(msgspec.Struct, frozen=True, kw_only=True):
    """One event's delivery to an endpoint."""

    event_id: str
    kind: str
    conversation_id: str | None
    sequence: int
    status: str
    """``pending`` (being tried), ``delivered`` (accepted) or ``failed`` (given up)."""
    attempts: int
    last_error: str | None
    """Why the last attempt failed (a status code, a timeout; never the endpoint's answer)."""
    next_attempt_at: datetime
    finished_at: datetime | None


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """Events after a position, oldest first."""

    events: list[dict[str, Any]]
    after: int
    """Pass this as ``after`` to get the next events (the last position listed, or the one given)."""


async def checked_url(url: str) -> str:
    """``url`` if botloom may POST to it: http(s), a host, no credentials, a public address; else a 400."""
    parts = urlsplit(url.strip())
    problem: str | None = None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        problem = "must be an http:// or https:// URL with a host"
    elif parts.username is not None or parts.password is not None:
        problem = "must not carry a user name or password"
    elif parts.fragment:
        problem = "must not have a #fragment"
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
            await check_url(url.strip())
        except EndpointRefused as exc:
            problem = f"is refused: {exc.reason} (only public addresses, unless the operator allows the endpoint)"
        except (OSError, ValueError):
            problem = "has a host that cannot be resolved or a bad port"
    if problem is not None:
        message = f"url {problem}"
        raise ValidationException(message, extra=[{"key": "url", "message": message, "source": "body"}])
    return url.strip()


def url_host(url: str) -> str:
    """An endpoint's host, as the audit log records it: never the path or query, which may carry a token."""
    return urlsplit(url).hostname or ""


class WebhookController(ApiController):
    """A tenant's webhook endpoints."""

    path = "/tenants/{tenant:str}/webhooks"
    tags = ("webhooks",)

    @get(summary="List a tenant's webhook endpoints", raises=READ_ERRORS)
    async def list_webhooks(
        self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep
    ) -> list[WebhookOut]:
        """Every webhook endpoint of the tenant, oldest first; never their secrets."""
        found = await visible_tenant(services, principal, tenant)
        return [WebhookOut.of(e) for e in await services.store.webhooks.of_tenant(found.id)]

    @post(summary="Add a webhook endpoint", raises=WRITE_ERRORS)
    async def create_webhook(
        self, tenant: TenantRef, data: JSONBody[WebhookCreate], principal: PrincipalDep, services: ServicesDep
    ) -> WebhookCreated:
        """A new endpoint receiving the tenant's events, signed; the answer shows its secret this once."""
        found = await visible_tenant(services, principal, tenant)
        url = await checked_url(data.url)
        if await services.store.webhooks.count(found.id) >= MAX_ENDPOINTS:
            message = f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints"
            raise ValidationException(message, extra=[{"key": "url", "message": message, "source": "body"}])
        secret = new_secret()
        async with services.store.db.transaction():
            endpoint = await services.store.webhooks.create(
                found.id, url, secret, kinds=sorted(set(data.kinds)), description=data.description
            )
            if endpoint is None:
                raise NotFoundException(f"no tenant {tenant!r}")
            await record(
                services,
                actor_of(principal),
                "webhook.created",
                tenant_id=found.id,
                target=("webhook", endpoint.id),
                details={"host": url_host(endpoint.url), "kinds": list(endpoint.kinds)},
            )
        out = WebhookOut.of(endpoint)
        return WebhookCreated(**msgspec.structs.asdict(out), secret=secret)

    @get("/{webhook_id:str}/deliveries", summary="Recent deliveries to a webhook endpoint", raises=READ_ERRORS)
    async def list_deliveries(
        self,
        tenant: TenantRef,
        webhook_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Deliveries at most")] = 100,
    ) -> list[DeliveryOut]:
        """The endpoint's deliveries, newest event first: status, attempts and the last error. 404 when unknown."""
        found = await visible_tenant(services, principal, tenant)
        if await services.store.webhooks.get(found.id, webhook_id) is None:
            raise NotFoundException(f"no webhook endpoint {webhook_id!r}")
        rows = await services.store.webhooks.deliveries(found.id, webhook_id, limit)
        return [msgspec.convert(row, DeliveryOut) for row in rows]

    @delete("/{webhook_id:str}", summary="Remove a webhook endpoint", raises=READ_ERRORS)
    async def delete_webhook(
        self, tenant: TenantRef, webhook_id: IdRef, principal: PrincipalDep, services: ServicesDep
    ) -> None:
        """Remove an endpoint: nothing more is sent to it (its undelivered events are dropped). 404 when unknown."""
        found = await visible_tenant(services, principal, tenant)
        async with services.store.db.transaction():
            endpoint = await services.store.webhooks.get(found.id, webhook_id)
            if endpoint is None or not await services.store.webhooks.delete(found.id, endpoint.id):
                raise NotFoundException(f"no webhook endpoint {webhook_id!r}")
            await record(
                services,
                actor_of(principal),
                "webhook.deleted",
                tenant_id=found.id,
                target=("webhook", endpoint.id),
                details={"host": url_host(endpoint.url)},
            )


class EventController(ApiController):
    """The tenant's events, for polling (the same envelopes webhooks receive)."""

    path = "/events"
    tags = ("webhooks",)

    @get(summary="Poll a tenant's events", raises=READ_ERRORS)
    async def list_events(
        self,
        principal: PrincipalDep,
        services: ServicesDep,
        after: Annotated[
            int, QueryParameter(ge=0, le=2**53 - 1, description="The last position seen (0: from the start)")
        ] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Events at most")] = 100,
        tenant: Annotated[
            str | None,
            QueryParameter(max_length=200, pattern=ONE_LINE, description="Only this tenant's events (a slug or id)"),
        ] = None,
    ) -> EventPage:
        """The caller's tenant's events after the position ``after``, oldest first (at least once: de-duplicate by id).

        A tenant key lists its own tenant's events; the operator every tenant's, or the one it names.
        """
        tenant_id: str | None = principal.tenant_id
        if tenant is not None:
            tenant_id = (await visible_tenant(services, principal, tenant)).id
        events = await services.store.events.after(tenant_id, after, limit)
        return EventPage(events=[e.envelope() for e in events], after=events[-1].position if events else after)


WEBHOOK_HANDLERS: list[ControllerRouterHandler] = [WebhookController, EventController]

__all__ = ["WEBHOOK_HANDLERS", "EventController", "WebhookController", "checked_url"]
