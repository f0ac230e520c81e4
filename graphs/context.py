"""The read-only context of one turn, passed to every node through LangGraph's runtime.

Nothing here is checkpointed: it is rebuilt for each turn from the bot's
current settings and enabled plugins, so a plugin disabled between two turns is
gone from the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botloom.core.definitions import Intent, Tool
from botloom.core.domain import Bot, UsageEvent

if TYPE_CHECKING:
    from botloom.graphs.engines import Engine

SearchFn = Callable[[str, int], Awaitable[list[Any]]]
UsageFn = Callable[[UsageEvent], Awaitable[None]]


@dataclass(frozen=True)
class TurnContext:
    """What the nodes of a turn may read: the bot, what it enabled, and the services to call."""

    tenant_id: str
    bot: Bot
    conversation_id: str
    channel: str
    engine: Engine
    tools: Mapping[str, Tool] = field(default_factory=dict)
    """Only the tools of the plugins this bot enabled."""
    tool_owners: Mapping[str, str] = field(default_factory=dict)
    intents: Mapping[str, Intent] = field(default_factory=dict)
    """Only the intents of the plugins this bot enabled."""
    plugin_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    search: SearchFn | None = None
    """Searches this bot's knowledge base; ``None`` when the bot did not enable the ``knowledge`` plugin
    (the runner gives no search then, so ``retrieve`` and every tool's ``ToolContext.search_knowledge``
    find ``None``)."""
    passages: int = 3
    record_usage: UsageFn | None = None
    tool_timeout: float = 10.0
    dry_run: bool = False
    """A debug run (a fork or a replay): nothing reaches the end user, and tools see ``ToolContext.dry_run``."""

    def config_for_tool(self, tool: str) -> Mapping[str, Any]:
        """The bot's config of the plugin that registered ``tool``."""
        return self.plugin_configs.get(self.tool_owners.get(tool, ""), {})
