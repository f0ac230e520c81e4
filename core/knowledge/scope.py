"""Every knowledge call is scoped by tenant and bot: parsing their ids, and checking the bot exists."""

from __future__ import annotations

import uuid

from botloom.core.storage.database import Database


class UnknownBot(LookupError):
    """The tenant has no bot with this id."""


def parse_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID, or ``None`` when it is missing or not one (so it matches no row)."""
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def parse_scope(tenant_id: str, bot_id: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Tenant and bot ids as UUIDs, or ``None`` when either is not a UUID (no such bot, then)."""
    tenant, bot = parse_uuid(tenant_id), parse_uuid(bot_id)
    return None if tenant is None or bot is None else (tenant, bot)


async def resolve_bot(db: Database, tenant_id: str, bot_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Tenant and bot ids of an existing bot of the tenant; :class:`UnknownBot` otherwise (one query)."""
    scope = parse_scope(tenant_id, bot_id)
    if scope is not None:
        async with db.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM bots WHERE tenant_id = %s AND id = %s", scope)
            if await cur.fetchone() is not None:
                return scope
    raise UnknownBot(f"tenant {tenant_id} has no bot {bot_id}")
