"""Loading the plugin under test the way botloom does: every installed plugin, plus the one given."""

from __future__ import annotations

import types
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botloom.core.definitions import Intent, Tool
    from botloom.core.host import PluginHost
    from botloom.graphs.context import TurnContext

__all__ = ["PluginUnderTest", "load_plugin", "turn_context"]

DEFAULT_NAME = "plugin_under_test"


class PluginUnderTest:
    """The collected host and the name the plugin under test has in it."""

    __test__ = False

    def __init__(self, host: PluginHost, name: str) -> None:
        self.host = host
        self.name = name

    def problems(self) -> list[str]:
        """What the host found wrong with the plugin (import, registration, definitions)."""
        return [f"{p.stage}: {p.message}" for p in self.host.problems if p.plugin == self.name]


async def load_plugin(plugin: object | str, name: str | None = None) -> PluginUnderTest:
    """Collect a host with every installed plugin and ``plugin``.

    ``plugin`` is an installed plugin's name (its entry point's name) or a plugin object
    (a module or any object with ``@hookimpl`` functions). An object that is installed
    already (the module an entry point names) keeps its installed name; another is
    registered as ``name`` (default ``plugin_under_test``).
    """
    from botloom.core.host import PluginHost

    host = PluginHost.discover()
    if isinstance(plugin, str):
        if plugin not in host.infos:
            await host.collect()
            found = [f"{p.stage}: {p.message}" for p in host.problems if p.plugin == plugin]
            raise LookupError(
                f"plugin {plugin!r} is not installed (botloom loads {', '.join(sorted(host.infos))})"
                + (f"; problems: {'; '.join(found)}" if found else "")
            )
        await host.collect()
        return PluginUnderTest(host, plugin)
    installed = None
    if isinstance(plugin, types.ModuleType):
        installed = next((n for n, info in host.infos.items() if info.module == plugin.__name__), None)
    if installed is None:
        installed = name or DEFAULT_NAME
        if not host.register(plugin, installed):
            problems = "; ".join(p.message for p in host.problems if p.plugin == installed)
            raise ValueError(f"botloom refuses the plugin: {problems}")
    await host.collect()
    return PluginUnderTest(host, installed)


def turn_context(
    *,
    tools: Mapping[str, Tool] | None = None,
    tool_owners: Mapping[str, str] | None = None,
    intents: Mapping[str, Intent] | None = None,
    plugin_configs: Mapping[str, Mapping[str, Any]] | None = None,
    engine: Any = None,
    tool_timeout: float = 10.0,
) -> TurnContext:
    """The context a turn's nodes read, for a bot with default settings and the given definitions."""
    from botloom.core.domain import Bot, BotSettings
    from botloom.graphs.context import TurnContext

    now = datetime.now(UTC)
    bot = Bot(
        id="00000000-0000-0000-0000-000000000001",
        tenant_id="00000000-0000-0000-0000-000000000002",
        slug="bot",
        name="Bot",
        settings=BotSettings(),
        created_at=now,
        updated_at=now,
    )
    return TurnContext(
        tenant_id=bot.tenant_id,
        bot=bot,
        conversation_id="00000000-0000-0000-0000-000000000003",
        channel="test",
        engine=engine,
        tools=dict(tools or {}),
        tool_owners=dict(tool_owners or {}),
        intents=dict(intents or {}),
        plugin_configs={k: dict(v) for k, v in (plugin_configs or {}).items()},
        tool_timeout=tool_timeout,
    )
