"""What a turn sees: the conversation's LangGraph thread, the bot's enabled plugins, the turn's context.

The context is rebuilt for every turn from the bot's current plugin settings (one
query), so a plugin disabled between two turns is gone from the next one. The
knowledge search is in it only when the bot enabled the ``knowledge`` plugin: a
node or a tool that finds ``search`` (``ToolContext.search_knowledge``) ``None``
knows the bot has no knowledge base to search.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from langchain_core.runnables import RunnableConfig

from botloom.core.domain import Bot, Conversation, PluginSetting, UsageEvent
from botloom.core.host import PluginHost
from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.graphs.context import SearchFn, TurnContext, UsageFn
from botloom.graphs.engines import Engine, OfflineEngine
from botloom.graphs.nodes import KNOWLEDGE_PLUGIN
from botloom.runtime.budgets import Budgets
from botloom.runtime.saver import REDACT_FLAG


def thread_id(tenant_id: str, bot_id: str, conversation_id: str) -> str:
    """The LangGraph thread of a conversation."""
    return f"{tenant_id}:{bot_id}:{conversation_id}"


def thread_config(bot: Bot, conversation_id: str) -> RunnableConfig:
    """The LangGraph config of a conversation's thread (with the bot's redaction flag)."""
    configurable: dict[str, Any] = {"thread_id": thread_id(bot.tenant_id, bot.id, conversation_id)}
    if bot.settings.redact_personal_data:
        configurable[REDACT_FLAG] = True
    return {"configurable": configurable}


@dataclass(frozen=True)
class BotView:
    """What a bot enabled: its plugins' configs, and the tools and intents they bring."""

    configs: Mapping[str, Mapping[str, Any]]
    tools: Mapping[str, Any]
    intents: Mapping[str, Any]

    @property
    def knowledge(self) -> bool:
        """Whether the bot enabled the ``knowledge`` plugin (its knowledge base is searched)."""
        return KNOWLEDGE_PLUGIN in self.configs


class TurnContexts:
    """Builds the :class:`~botloom.graphs.context.TurnContext` of a turn from the bot's enabled plugins."""

    def __init__(
        self, *, host: PluginHost, store: Store, engine: Engine, settings: Settings, knowledge: Any | None = None
    ) -> None:
        self.host = host
        self.store = store
        self.engine = engine
        self.settings = settings
        self.knowledge = knowledge
        self.budgets: Budgets | None = None
        """Cost control (``runtime/budgets.py``): the engine a tenant's turn gets, each call's cost; set by services."""

    async def bot_view(self, bot: Bot) -> BotView:
        """The bot's enabled, installed plugins with their configs and definitions."""
        return self._view(await self.store.plugin_settings.list_all(bot.tenant_id, bot.id))

    async def queue_bot_view(self, conn: Any, bot: Bot) -> Callable[[], Awaitable[BotView]]:
        """:meth:`bot_view` read on ``conn`` in pipeline mode (with the conversation's lock); how to get it."""
        read = await self.store.plugin_settings.queue_list_all(conn, bot.tenant_id, bot.id)

        async def view() -> BotView:
            return self._view(await read())

        return view

    def _view(self, settings: Sequence[PluginSetting]) -> BotView:
        configs = {s.plugin: s.config for s in settings if s.enabled and s.plugin in self.host.infos}
        return BotView(
            configs=configs,
            tools=self.host.owned("tool", configs),
            intents=self.host.owned("intent", configs),
        )

    def search(self, bot: Bot, view: BotView, *, best_text_match: bool = False) -> SearchFn | None:
        """The bot's knowledge search, or ``None`` when it did not enable the ``knowledge`` plugin.

        ``best_text_match``: a search nothing reaches the threshold of still returns its best full-text match
        (for the offline engine, which judges a passage's words itself: ``HybridSearch.search``).
        """
        if self.knowledge is None or not view.knowledge:
            return None
        knowledge = self.knowledge
        threshold = bot.settings.knowledge_threshold or None

        async def search(query: str, limit: int) -> list[Any]:
            result: list[Any] = await knowledge.search(
                bot.tenant_id, bot.id, query, limit=limit, threshold=threshold, best_text_match=best_text_match
            )
            return result

        return search

    async def context(self, bot: Bot, conversation: Conversation, view: BotView | None = None) -> TurnContext:
        """The runtime context of a turn of ``conversation``."""
        view = view or await self.bot_view(bot)
        engine = self.engine if self.budgets is None else await self.budgets.engine_for(bot.tenant_id, self.engine)
        return TurnContext(
            tenant_id=bot.tenant_id,
            bot=bot,
            conversation_id=conversation.id,
            channel=conversation.channel,
            engine=engine,
            tools=view.tools,
            tool_owners={name: self.host.registry.owner("tool", name) or "" for name in view.tools},
            intents=view.intents,
            plugin_configs=view.configs,
            search=self.search(bot, view, best_text_match=isinstance(engine, OfflineEngine)),
            passages=int(view.configs.get(KNOWLEDGE_PLUGIN, {}).get("passages", 3)),
            record_usage=self._record_usage(conversation),
            tool_timeout=self.settings.tool_timeout,
        )

    def _record_usage(self, conversation: Conversation) -> UsageFn:
        async def record(event: UsageEvent) -> None:
            event = msgspec.structs.replace(event, bot_id=conversation.bot_id, conversation_id=conversation.id)
            if self.budgets is not None:
                await self.budgets.record(event)  # with its cost, on the same statement (no extra round trip)
            else:
                await self.store.usage.record(event)

        return record


__all__ = ["BotView", "TurnContexts", "thread_config", "thread_id"]
