"""Who is calling: the operator (``BOTLOOM_ADMIN_TOKEN``), a tenant (one of its API keys), or an agent.

An agent's token (its personal token, ``bla_...``, or a desk sign-in's, ``bls_...``) reaches
only the desk routes of its tenant: routes whose handler (or controller) has ``opt={"desk": True}``.
Every other route refuses it with 403, before anything else is read.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException

from botloom.core.domain import Bot
from botloom.core.storage.repositories.agents import AGENT_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, Agent
from botloom.runtime.services import Services
from botloom.server.paths import bot_ref

BEARER = "bearer "


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an ``/api/v1/`` route."""

    tenant_id: str | None
    """The tenant whose key was used; ``None`` for the operator."""
    key_id: str | None = None
    agent: Agent | None = None
    """The agent whose token was used (its tenant is ``tenant_id``); ``None`` for a key or the operator."""

    @property
    def is_operator(self) -> bool:
        """Whether this is the operator, who may do everything."""
        return self.tenant_id is None

    @property
    def is_agent(self) -> bool:
        """Whether an agent calls (it reaches only its tenant's desk routes)."""
        return self.agent is not None

    def sees(self, tenant_id: str) -> bool:
        """Whether the caller may see the tenant's data."""
        return self.is_operator or self.tenant_id == tenant_id


def bearer_token(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = connection.headers.get("authorization", "")
    if not header.lower().startswith(BEARER):
        return None
    return header[len(BEARER) :].strip() or None


async def authenticate(connection: ASGIConnection, services: Services) -> Principal:  # type: ignore[type-arg]
    """The caller of the request; 401 without a valid token."""
    token = bearer_token(connection)
    if token is None:
        raise NotAuthorizedException(
            "missing bearer token: send 'Authorization: Bearer <API key>'",
            headers={"WWW-Authenticate": 'Bearer realm="botloom"'},
        )
    admin = services.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(tenant_id=None)
    if token.startswith((AGENT_TOKEN_PREFIX, SESSION_TOKEN_PREFIX)):
        agent = await services.store.agents.authenticate(token)
        if agent is None:
            raise NotAuthorizedException(
                "invalid agent token", headers={"WWW-Authenticate": 'Bearer realm="botloom", error="invalid_token"'}
            )
        if not desk_route(connection):
            raise PermissionDeniedException(
                "an agent's token reaches only the agent desk's routes (/api/v1/handovers...)"
            )
        return Principal(tenant_id=agent.tenant_id, agent=agent)
    key = await services.store.api_keys.authenticate(token)
    if key is None:
        raise NotAuthorizedException(
            "invalid or revoked API key", headers={"WWW-Authenticate": 'Bearer realm="botloom", error="invalid_token"'}
        )
    return Principal(tenant_id=key.tenant_id, key_id=key.id)


def desk_route(connection: ASGIConnection) -> bool:  # type: ignore[type-arg]
    """Whether the route called is one of the agent desk's (its handler's ``opt`` has ``desk``)."""
    handler = connection.scope.get("route_handler")
    opt = getattr(handler, "opt", None) or {}
    return bool(opt.get("desk"))


def require_operator(principal: Principal) -> None:
    """403 unless the caller is the operator."""
    if not principal.is_operator:
        raise PermissionDeniedException("only the operator (BOTLOOM_ADMIN_TOKEN) may do this")


async def visible_bot(services: Services, principal: Principal, ref: str) -> Bot:
    """The bot ``ref`` names, if the caller may see it; 404 otherwise (with no hint it exists)."""
    bot = await services.store.bots.find(bot_ref(ref))
    if bot is None or not principal.sees(bot.tenant_id):
        raise NotFoundException(f"no bot {bot_ref(ref)!r}")
    return bot


async def public_bot(services: Services, ref: str) -> Bot:
    """The bot ``ref`` names, for public routes (chat page, webhooks); 404 if there is none."""
    bot = await services.store.bots.find(bot_ref(ref))
    if bot is None:
        raise NotFoundException(f"no bot {bot_ref(ref)!r}")
    return bot
