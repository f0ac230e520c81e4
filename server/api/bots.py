"""``/api/v1/tenants/{tenant}/bots`` and ``/api/v1/bots/{bot}``: a tenant's chatbots and their settings."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import delete, get, patch, post
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody

from botloom.core.domain import BotSettings
from botloom.core.storage.repositories import Conflict
from botloom.runtime.audit import record
from botloom.runtime.erasure import REQUEST_THREADS, erase_threads
from botloom.server.api.audit import actor_of
from botloom.server.api.common import (
    READ_ERRORS,
    WRITE_ERRORS,
    ApiController,
    BotRef,
    ConflictException,
    TenantRef,
    invalid,
    visible_tenant,
)
from botloom.server.api.schemas import BotCreate, BotOut, BotPatch
from botloom.server.auth import visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep
from botloom.server.paths import bot_ref


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested objects merge, everything else is replaced."""
    out = dict(base)
    for key, value in changes.items():
        old = out.get(key)
        out[key] = merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def patched_settings(current: BotSettings, changes: dict[str, Any]) -> BotSettings:
    """``current`` with ``changes`` merged in, validated as a whole (400 naming the bad field)."""
    try:
        return msgspec.convert(merged(msgspec.to_builtins(current), changes), BotSettings)
    except msgspec.ValidationError as exc:
        raise invalid(exc, "settings") from None


def settings_changes(data: BotPatch) -> dict[str, Any]:
    """The settings a PATCH changes, whether given at the top level or under ``settings``."""
    given: dict[str, Any] = msgspec.to_builtins(data)
    nested: dict[str, Any] = given.pop("settings", {})
    given.pop("name", None)
    twice = sorted(set(nested) & set(given))
    if twice:
        raise ValidationException(
            f"{', '.join(twice)} given both at the top level and under settings",
            extra=[{"key": name, "message": "given twice", "source": "body"} for name in twice],
        )
    return {**nested, **given}


def changed_settings(before: BotSettings, after: BotSettings) -> list[str]:
    """The settings whose value differs, by dotted name (``model.max_tokens``), for the audit log."""
    return _changed(msgspec.to_builtins(before), msgspec.to_builtins(after), "settings.")


def _changed(before: Any, after: Any, prefix: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        names: list[str] = []
        for key in sorted(set(before) | set(after)):
            names += _changed(before.get(key), after.get(key), f"{prefix}{key}.")
        return names
    return [] if before == after else [prefix.rstrip(".")]


class TenantBotController(ApiController):
    """Bots of one tenant."""

    path = "/tenants/{tenant:str}/bots"
    tags = ("bots",)

    @post(summary="Create a bot", raises=[*WRITE_ERRORS, ConflictException])
    async def create_bot(
        self, tenant: TenantRef, data: JSONBody[BotCreate], principal: PrincipalDep, services: ServicesDep
    ) -> BotOut:
        """A new bot with default settings, changed by any ``settings`` given; 409 if the tenant has the slug."""
        found = await visible_tenant(services, principal, tenant)
        settings = patched_settings(BotSettings(), msgspec.to_builtins(data.settings))
        try:
            async with services.store.db.transaction():
                bot = await services.store.bots.create(found.id, data.slug, data.name, settings)
                await record(
                    services,
                    actor_of(principal),
                    "bot.created",
                    tenant_id=found.id,
                    target=("bot", bot.id),
                    details={"slug": bot.slug},
                )
        except Conflict as exc:
            raise ConflictException(f"tenant {found.slug!r} has a bot {data.slug!r}") from exc
        return BotOut.of(bot)

    @get(summary="List a tenant's bots", raises=READ_ERRORS)
    async def list_bots(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> list[BotOut]:
        """The tenant's bots, oldest first."""
        found = await visible_tenant(services, principal, tenant)
        return [BotOut.of(b) for b in await services.store.bots.list_all(found.id)]


class BotController(ApiController):
    """One bot, named by its id or by ``tenant-slug/bot-slug``."""

    path = "/bots/{bot:str}"
    tags = ("bots",)

    @get(summary="Get a bot", raises=READ_ERRORS)
    async def get_bot(self, bot: BotRef, principal: PrincipalDep, services: ServicesDep) -> BotOut:
        """The bot with its settings."""
        return BotOut.of(await visible_bot(services, principal, bot))

    @patch(summary="Change a bot", raises=WRITE_ERRORS)
    async def update_bot(
        self, bot: BotRef, data: JSONBody[BotPatch], principal: PrincipalDep, services: ServicesDep
    ) -> BotOut:
        """Change the name and any settings; fields left out keep their value, nested ``model`` fields merge."""
        found = await visible_bot(services, principal, bot)
        changes = settings_changes(data)
        settings = patched_settings(found.settings, changes) if changes else None
        name = data.name if isinstance(data.name, str) else None
        async with services.store.db.transaction():
            updated = await services.store.bots.update(found.tenant_id, found.id, name=name, settings=settings)
            if updated is None:
                raise NotFoundException(f"no bot {bot_ref(bot)!r}")
            fields = (["name"] if name is not None else []) + changed_settings(found.settings, updated.settings)
            await record(
                services,
                actor_of(principal),
                "bot.updated",
                tenant_id=found.tenant_id,
                target=("bot", found.id),
                details={"fields": fields},
            )
        return BotOut.of(updated)

    @delete(summary="Delete a bot", raises=READ_ERRORS)
    async def delete_bot(self, bot: BotRef, principal: PrincipalDep, services: ServicesDep) -> None:
        """Delete the bot with its plugin settings, conversations, messages, knowledge and checkpoint threads.

        The checkpoint threads of its conversations and their debug forks are deleted before
        this answers (up to 10,000; the hourly retention pass deletes any more), and once more
        by that pass after any turn still running for them has ended (docs/data-rights.md).
        """
        found = await visible_bot(services, principal, bot)
        async with services.store.db.transaction():
            if not await services.store.bots.delete(found.tenant_id, found.id):
                raise NotFoundException(f"no bot {bot_ref(bot)!r}")
            await record(
                services,
                actor_of(principal),
                "bot.deleted",
                tenant_id=found.tenant_id,
                target=("bot", found.id),
                details={"slug": found.slug},
            )
        await erase_threads(services, tenant_id=found.tenant_id, limit=REQUEST_THREADS)
