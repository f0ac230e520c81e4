"""The demo: tenant ``acme`` with bot ``support``, its plugins and a small knowledge base.

``botloom demo`` and ``botloom serve --demo`` call :func:`ensure_demo`; it is safe to
run again (it creates only what is missing, and a new API key each time, since
keys are stored hashed and cannot be shown twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from botloom.core.config import split_secrets, validate_config
from botloom.core.domain import Bot, BotSettings, Tenant
from botloom.runtime.services import Services

DEMO_TENANT = "acme"
DEMO_BOT = "support"
DEMO_PLUGINS = ("smalltalk", "handoff", "demo_shop", "knowledge", "webchat", "rest")
DEMO_CONFIGS: dict[str, dict[str, object]] = {"webchat": {"title": "Acme Support"}}
DEMO_DATA = Path(str(resources.files("botloom.server") / "demo_data"))


@dataclass
class DemoInfo:
    """What :func:`ensure_demo` made or found."""

    tenant: Tenant
    bot: Bot
    api_key: str
    created: bool


async def ensure_demo(services: Services, progress: Callable[[str], None] | None = None) -> DemoInfo:
    """Create the demo tenant, bot, plugin settings and knowledge where missing; return a fresh API key."""
    say = progress or (lambda _line: None)
    store = services.store
    tenant = await store.tenants.get_by_slug(DEMO_TENANT)
    created = tenant is None
    if tenant is None:
        say(f"creating tenant {DEMO_TENANT}")
        tenant = await store.tenants.create(DEMO_TENANT, "Acme Inc.")
    bot = await store.bots.get_by_slug(tenant.id, DEMO_BOT)
    if bot is None:
        say(f"creating bot {DEMO_TENANT}/{DEMO_BOT}")
        bot = await store.bots.create(
            tenant.id,
            DEMO_BOT,
            "Acme Support",
            BotSettings(persona="You are Acme's friendly support assistant. Answer briefly and precisely."),
        )
        for plugin in DEMO_PLUGINS:
            if plugin in services.host.infos:
                schema = services.host.config_schema(plugin)
                config = validate_config(plugin, schema, DEMO_CONFIGS.get(plugin, {}))
                public, secret = split_secrets(schema, config)
                await store.plugin_settings.put(tenant.id, bot.id, plugin, enabled=True, config=public, secrets=secret)
    paths = await asyncio.to_thread(lambda: sorted(DEMO_DATA.glob("*.md")))
    await services.knowledge.ingest_paths(tenant.id, bot.id, paths, progress=progress)
    _, key = await store.api_keys.create(tenant.id, "demo")
    return DemoInfo(tenant=tenant, bot=bot, api_key=key, created=created)
