"""State versions: a conversation's checkpointed state brought up to its graph's version before a turn.

Where each version comes from (one source each, see ``docs/graphs.md#state-versions``):

* **the graph's version** is its :class:`~botloom.core.definitions.GraphDefinition`'s
  ``state_version``: what :meth:`StateMigrator.target` reads, what a new
  conversation is created with, what every turn stamps into its input
  (``schema_version``) and what migrations lead to. ``STATE_VERSION`` in
  ``graphs/state.py`` is only the number the ``turn`` graph's definition is built with;
* **the version of a conversation's checkpoint** is the ``schema_version`` its state
  carries, written in the same checkpoint as the values it describes;
* the conversation row's ``state_version`` is derived from it: the runner sets it
  once the checkpoint is at the graph's version, so a turn whose row already says so
  (every turn but the first after an upgrade) reads no checkpoint for it.
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.types import Overwrite

from botloom.core.domain import Bot, Conversation
from botloom.core.host import PluginHost
from botloom.core.storage.repositories import Store
from botloom.graphs.registry import GraphRegistry

logger = logging.getLogger(__name__)

VERSION_FIELD = "schema_version"
"""The state field that says which version a checkpointed state has."""


def replacing(graph: Any, values: dict[str, Any]) -> dict[str, Any]:
    """An update that replaces the graph's channels with ``values`` (bypassing reducers)."""
    channels = graph.channels
    return {
        key: Overwrite(value) if isinstance(channels[key], BinaryOperatorAggregate) else value
        for key, value in values.items()
        if key in channels
    }


class StateMigrator:
    """Upgrades a conversation's checkpointed state to its graph's version (see the module docstring)."""

    def __init__(self, *, host: PluginHost, store: Store, graphs: GraphRegistry) -> None:
        self.host = host
        self.store = store
        self.graphs = graphs

    def target(self, bot: Bot) -> int:
        """The version of the state the bot's graph checkpoints: its definition's ``state_version``."""
        definition = self.host.registry.graphs.get(bot.graph)
        return definition.state_version if definition is not None else 1

    async def upgrade(self, bot: Bot, conversation: Conversation, graph: Any, config: RunnableConfig) -> list[str]:
        """Bring the conversation's checkpoint up to its graph's version; the errors to record with the turn.

        Registered migrations run one version at a time on the raw values; the
        result, stamped with the graph's version, overwrites the state in a new
        checkpoint, so the history stays. A state that cannot be migrated is
        dropped (an error is returned) and the conversation starts afresh.
        """
        target = self.target(bot)
        if conversation.state_version == target:
            return []
        errors: list[str] = []
        checkpointer = self.graphs.checkpointer
        saved = await checkpointer.aget_tuple(config) if checkpointer is not None else None
        values = dict(saved.checkpoint["channel_values"]) if saved is not None else {}
        if values:
            version = int(values.get(VERSION_FIELD) or conversation.state_version or 1)
            if version != target:
                try:
                    values = self._migrate(bot, values, version, target)
                    await graph.aupdate_state(config, replacing(graph, values), as_node=_last_node(graph))
                except Exception as exc:
                    logger.exception("conversation %s: state migration failed; starting afresh", conversation.id)
                    errors.append(f"state migration failed, conversation restarted: {type(exc).__name__}: {exc}")
                    await self.graphs.checkpointer_delete_thread(config["configurable"]["thread_id"])
        await self.store.conversations.set_state_version(bot.tenant_id, conversation.id, target)
        return errors

    def _migrate(self, bot: Bot, values: dict[str, Any], version: int, target: int) -> dict[str, Any]:
        """``values`` of state version ``version`` through each registered migration up to ``target``."""
        if version > target:
            raise ValueError(f"state version {version} is newer than the graph's {target}")
        while version < target:
            migration = self.host.registry.migrations.get(f"{bot.graph}-v{version}")
            if migration is None:
                raise LookupError(f"no migration of graph {bot.graph!r} from state version {version}")
            values = migration.migrate(values)
            version += 1
        return {**values, VERSION_FIELD: target}


def _last_node(graph: Any) -> str:
    """The node a migrated state is written as: ``respond`` for the ``turn`` graph, else the last one added."""
    nodes = [name for name in graph.nodes if not name.startswith("__")]
    return "respond" if "respond" in nodes else nodes[-1]


__all__ = ["VERSION_FIELD", "StateMigrator", "replacing"]
