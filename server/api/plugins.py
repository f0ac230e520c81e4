"""``/api/v1/bots/{bot}/plugins``: which installed plugins a bot uses, and their configs.

Secret config fields (annotated ``botloom.Secret``) are write-only: stored
encrypted, answered as ``"********"``, and kept when a PUT leaves them out or
sends the mask back, so a client can re-save a config it read.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from typing import Any

import msgspec
from litestar import get, put
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody

from botloom.core.config import MASK, ConfigError, mask_secrets, secret_fields, split_secrets, validate_config
from botloom.core.domain import Bot, PluginSetting
from botloom.core.host import ENTRY_POINT_GROUP
from botloom.core.netguard import endpoint_errors
from botloom.runtime.audit import Actor, record
from botloom.runtime.services import Services
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, BotRef, NameRef
from botloom.server.api.schemas import PluginOut, PluginPut
from botloom.server.auth import visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep


@cache
def json_schema(schema: type[msgspec.Struct] | None) -> dict[str, Any] | None:
    """The JSON schema of a config Struct."""
    return msgspec.json.schema(schema) if schema is not None else None


def plugin_out(services: Services, name: str, setting: PluginSetting | None) -> PluginOut:
    """How plugin ``name`` looks to a bot with ``setting`` stored; secrets masked."""
    info = services.host.infos[name]
    schema = services.host.config_schema(name)
    return PluginOut(
        name=name,
        version=info.version,
        source=info.source,
        enabled=setting.enabled if setting else False,
        kinds=list(info.kinds),
        channels=list(info.channels),
        tools=list(info.tools),
        intents=list(info.intents),
        graphs=list(info.graphs),
        configurable=schema is not None,
        config_schema=json_schema(schema),
        config=mask_secrets(schema, dict(setting.config)) if setting else {},
    )


def with_kept_secrets(
    schema: type[msgspec.Struct] | None, config: dict[str, Any], stored: dict[str, Any]
) -> dict[str, Any]:
    """``config`` with each secret it leaves out (or sends as the mask) taken from ``stored``."""
    out = dict(config)
    for name in secret_fields(schema):
        if name in out and out[name] != MASK:
            continue
        if stored.get(name):
            out[name] = stored[name]
        else:
            out.pop(name, None)
    return out


def has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere (PostgreSQL cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def config_key(field: str) -> str:
    """Where a bad config field is in the request body."""
    return "config" if field == "config" else f"config.{field}"


def installed(services: Services, plugin: str) -> str:
    """``plugin`` if this server loaded it; otherwise a 404 saying why (see :func:`not_loaded`)."""
    if plugin not in services.host.infos:
        raise NotFoundException(not_loaded(services, plugin))
    return plugin


def not_loaded(services: Services, plugin: str) -> str:
    """Why ``plugin`` is not among the server's plugins: not installed, failed to load, excluded, or new.

    Plugins are loaded once, when the process starts; one installed later (its
    entry point of group ``botloom`` is there now) needs a restart.
    """
    failed = [p for p in services.host.problems if p.plugin == plugin]
    if failed:
        return (
            f"plugin {plugin!r} is installed but failed to load ({failed[0].stage}: {failed[0].message}); "
            "'botloom plugins list' shows its problems"
        )
    if plugin not in {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}:
        return f"no plugin {plugin!r} is installed"
    settings = services.settings
    if plugin in settings.plugin_block_list:
        return f"plugin {plugin!r} is installed but not loaded: BOTLOOM_BLOCK_PLUGINS names it"
    allowed = settings.plugin_allow_list
    if allowed is not None and plugin not in allowed:
        return f"plugin {plugin!r} is installed but not loaded: BOTLOOM_PLUGINS does not name it"
    return (
        f"plugin {plugin!r} is installed but not loaded: it was installed after the server started; "
        "restart the server (and any 'botloom worker') to load it"
    )


class PluginController(ApiController):
    """The installed plugins as one bot uses them."""

    path = "/bots/{bot:str}/plugins"
    tags = ("plugins",)

    @get(summary="List plugins for a bot", raises=READ_ERRORS)
    async def list_plugins(self, bot: BotRef, principal: PrincipalDep, services: ServicesDep) -> list[PluginOut]:
        """Every installed plugin: whether the bot enabled it, what it brings, its config schema and stored config."""
        found = await visible_bot(services, principal, bot)
        stored = {s.plugin: s for s in await services.store.plugin_settings.list_all(found.tenant_id, found.id)}
        return [plugin_out(services, name, stored.get(name)) for name in sorted(services.host.infos)]

    @get("/{plugin:str}", summary="Get a plugin for a bot", raises=READ_ERRORS)
    async def get_plugin(
        self, bot: BotRef, plugin: NameRef, principal: PrincipalDep, services: ServicesDep
    ) -> PluginOut:
        """One installed plugin as the bot uses it; 404 for a plugin that is not installed."""
        found = await visible_bot(services, principal, bot)
        name = installed(services, plugin)
        return plugin_out(services, name, await services.store.plugin_settings.get(found.tenant_id, found.id, name))

    @put("/{plugin:str}", summary="Enable or configure a plugin for a bot", raises=WRITE_ERRORS)
    async def put_plugin(
        self, bot: BotRef, plugin: NameRef, data: JSONBody[PluginPut], principal: PrincipalDep, services: ServicesDep
    ) -> PluginOut:
        """Store ``enabled`` and ``config``, validated against the plugin's schema: 400 lists each bad field.

        Answers the stored config with secrets masked.
        """
        found = await visible_bot(services, principal, bot)
        name = installed(services, plugin)
        setting = await store_setting(services, found, name, data, actor=actor_of(principal))
        return plugin_out(services, name, setting)


def checked_config(plugin: str, schema: type[msgspec.Struct] | None, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` validated against the plugin's schema; a 400 listing every bad field otherwise."""
    try:
        nul = [{"field": k, "message": "contains a NUL character"} for k, v in config.items() if has_nul({k: v})]
        if nul:
            raise ConfigError(plugin, nul)
        return validate_config(plugin, schema, config)
    except ConfigError as exc:
        raise ValidationException(
            str(exc),
            extra=[{"key": config_key(e["field"]), "field": e["field"], "message": e["message"]} for e in exc.errors],
        ) from None


async def store_setting(
    services: Services, bot: Bot, plugin: str, data: PluginPut, *, actor: Actor | None = None
) -> PluginSetting:
    """Validate and store a bot's setting of ``plugin``, secrets encrypted.

    With ``actor``, a ``plugin.configured`` audit row (the names of the fields that changed, never a value)
    is written in the same transaction.
    """
    schema = services.host.config_schema(plugin)
    stored = await services.store.plugin_settings.get(bot.tenant_id, bot.id, plugin)
    previous = dict(stored.config) if stored else {}
    config = previous if data.config is None else with_kept_secrets(schema, data.config, previous)
    validated = checked_config(plugin, schema, config)
    refused = await endpoint_errors(schema, validated, policy=services.settings.endpoint_policy) if data.enabled else []
    if refused:  # an endpoint the tenant may not make botloom connect to
        error = ConfigError(plugin, refused)
        raise ValidationException(
            str(error),
            extra=[{"key": config_key(e["field"]), "field": e["field"], "message": e["message"]} for e in refused],
        )
    public, hidden = split_secrets(schema, validated)
    async with services.store.db.transaction():
        setting = await services.store.plugin_settings.put(
            bot.tenant_id, bot.id, plugin, enabled=data.enabled, config=public, secrets=hidden
        )
        if setting is None:
            raise NotFoundException("the bot was deleted")
        if actor is not None:
            given = set(data.config or ())  # a default filled in for a field never set is no change
            changed = sorted(
                k
                for k in set(previous) | set(validated)
                if previous.get(k) != validated.get(k) and (k in previous or k in given)
            )
            await record(
                services,
                actor,
                "plugin.configured",
                tenant_id=bot.tenant_id,
                target=("plugin", plugin),
                details={
                    "bot_id": bot.id,
                    "enabled": data.enabled,
                    "was_enabled": stored.enabled if stored else False,
                    "fields": changed,
                },
            )
    return setting
