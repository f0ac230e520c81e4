"""Who calls the LangGraph API, and what it may see: every look-up is scoped by the key's tenant.

A call carries ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY`` (the header the
LangGraph clients send); KEY is a tenant's API key (that tenant's bots and
conversations only) or the operator's token (every tenant). Another tenant's
assistant or thread is a 404, as one that does not exist.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.handlers.base import BaseRouteHandler

from botloom.core.domain import Bot, Conversation
from botloom.runtime.services import Services
from botloom.server.auth import BEARER, Principal

MAX_REF = 200
"""Longest assistant or thread id looked up (longer ones are unknown)."""


def api_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The key of an ``Authorization: Bearer`` or an ``X-Api-Key`` header."""
    header = connection.headers.get("authorization", "")
    if header.lower().startswith(BEARER):
        return header[len(BEARER) :].strip() or None
    return connection.headers.get("x-api-key", "").strip() or None


async def caller(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: 401 without a valid key, before the body is read; the caller goes to ``state.principal``."""
    services: Services = connection.app.state.services
    token = api_token(connection)
    challenge = {"WWW-Authenticate": 'Bearer realm="botloom"'}
    if token is None:
        raise NotAuthorizedException(
            "missing API key: send 'Authorization: Bearer <API key>' or 'X-Api-Key: <API key>'", headers=challenge
        )
    admin = services.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        connection.state.principal = Principal(tenant_id=None)
        return
    key = await services.store.api_keys.authenticate(token)
    if key is None:
        raise NotAuthorizedException("invalid or revoked API key", headers=challenge)
    connection.state.principal = Principal(tenant_id=key.tenant_id, key_id=key.id)


async def visible_bots(services: Services, principal: Principal) -> list[Bot]:
    """The bots the caller sees: its tenant's, or every tenant's for the operator."""
    if principal.tenant_id is None:
        return await services.store.bots.all_tenants_bots()
    return await services.store.bots.list_all(principal.tenant_id)


async def find_assistant(services: Services, principal: Principal, ref: str) -> Bot:
    """The bot an assistant id names: its id, ``tenant-slug/bot-slug``, or the slug of one of the caller's bots.

    404 for a bot the caller does not see (with no hint it exists).
    """
    bots = services.store.bots
    bot = await bots.find(ref) if 0 < len(ref) <= MAX_REF and "\x00" not in ref else None
    if bot is None and principal.tenant_id is not None and 0 < len(ref) <= MAX_REF and "/" not in ref:
        bot = await bots.get_by_slug(principal.tenant_id, ref)
    if bot is None or not principal.sees(bot.tenant_id):
        raise NotFoundException(f"no assistant {ref[:MAX_REF]!r}")
    return bot


async def find_thread(services: Services, principal: Principal, thread_id: str) -> tuple[Conversation, Bot]:
    """The conversation a thread id names, and its bot; 404 for one the caller does not see."""
    conversations = services.store.conversations
    found: Conversation | None = None
    if 0 < len(thread_id) <= MAX_REF and "\x00" not in thread_id:
        if principal.tenant_id is not None:
            found = await conversations.get(principal.tenant_id, thread_id)
        else:
            tenant_id = await conversations.tenant_of(thread_id)
            found = await conversations.get(tenant_id, thread_id) if tenant_id is not None else None
    bot = await services.store.bots.get(found.tenant_id, found.bot_id) if found is not None else None
    if found is None or bot is None:
        raise NotFoundException(f"no thread {thread_id[:MAX_REF]!r}")
    return found, bot
