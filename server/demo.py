"""The demo: tenant ``acme`` with bot ``support``, its plugins and a small knowledge base.

``botloom demo`` and ``botloom serve --demo`` call :func:`ensure_demo`; it is safe to
run again (it creates only what is missing, and a new API key each time, since
keys are stored hashed and cannot be shown twice). With ``agent=True`` (both commands)
the tenant also has a desk agent, :data:`DEMO_AGENT_EMAIL`, with a new password each
time, so a conversation handed to a person can be answered at ``/desk`` from the start.
"""

from __future__ import annotations

import asyncio
import secrets
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
DEMO_AGENT_EMAIL = "agent@acme.example"
DEMO_AGENT_NAME = "Ada (demo agent)"
DEMO_DATA = Path(str(resources.files("botloom.server") / "demo_data"))


@dataclass
class DemoInfo:
    """What :func:`ensure_demo` made or found."""

    tenant: Tenant
    bot: Bot
    api_key: str
    created: bool
    agent_email: str | None = None
    """The demo's desk agent (with ``agent=True``), who signs in at ``/desk`` with tenant ``acme``."""
    agent_password: str | None = None
    """Its password, new with each call (shown once, like the API key)."""


async def ensure_demo(
    services: Services, progress: Callable[[str], None] | None = None, *, agent: bool = False
) -> DemoInfo:
    """Create the demo tenant, bot, plugin settings and knowledge where missing; return a fresh API key.

    ``agent``: the tenant's desk agent too (created when missing), with a fresh password.
    """
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
    info = DemoInfo(tenant=tenant, bot=bot, api_key=key, created=created)
    if agent:
        info.agent_email, info.agent_password = DEMO_AGENT_EMAIL, await ensure_demo_agent(services, tenant, say)
    return info


async def ensure_demo_agent(services: Services, tenant: Tenant, say: Callable[[str], None]) -> str:
    """Create the demo's desk agent where missing, else give it a new password; the password."""
    password = secrets.token_urlsafe(12)
    agents = services.store.agents
    found = next((a for a in await agents.list_all(tenant.id) if a.email.lower() == DEMO_AGENT_EMAIL), None)
    if found is None:
        say(f"creating desk agent {DEMO_AGENT_EMAIL}")
        await agents.create(tenant.id, email=DEMO_AGENT_EMAIL, name=DEMO_AGENT_NAME, password=password)
    else:
        await agents.update(tenant.id, found.id, {"password": password})
    return password


def demo_agent_lines(info: DemoInfo, base: str) -> list[str]:
    """What ``botloom demo`` and ``botloom serve --demo`` print about the demo's desk agent (nothing without one)."""
    if not info.agent_email or not info.agent_password:
        return []
    return [
        f"agent desk: {base}/desk (tenant {info.tenant.slug}, e-mail {info.agent_email}, "
        f"password {info.agent_password}; shown once, 'botloom demo' sets a new one)"
    ]
