"""Compiled graphs, once per process and graph name."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from botloom.core.host import PluginHost


class UnknownGraph(LookupError):
    """A bot names a graph no loaded plugin registered."""


class GraphRegistry:
    """Compiles each registered graph with the checkpointer on first use and keeps it.

    Which plugin's graph a name means is settled by the host when it collects the
    ``register_graphs`` results (``PluginHost.collect``): a name returned twice goes
    to the implementation that ranks first in pluggy's terms (``tryfirst``, plain,
    ``trylast``), between equals to the plugin loaded first. The built-in ``turn``
    graph is ``trylast``, so a plugin's own ``turn`` graph is the one compiled here.
    """

    def __init__(self, host: PluginHost, checkpointer: BaseCheckpointSaver[Any] | None) -> None:
        self.host = host
        self.checkpointer = checkpointer
        self._compiled: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = {}

    def get(self, name: str) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The compiled graph ``name``; raises :class:`UnknownGraph` if no plugin registered it."""
        compiled = self._compiled.get(name)
        if compiled is None:
            definition = self.host.registry.graphs.get(name)
            if definition is None:
                known = ", ".join(sorted(self.host.registry.graphs)) or "none"
                raise UnknownGraph(f"no graph named {name!r} is registered (known: {known})")
            compiled = definition.build().compile(checkpointer=self.checkpointer, name=name)
            self._compiled[name] = compiled
        return compiled

    async def checkpointer_delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint of a thread (a conversation archived or started afresh)."""
        if self.checkpointer is not None:
            await self.checkpointer.adelete_thread(thread_id)

    def names(self) -> list[str]:
        """Names of every registered graph."""
        return sorted(self.host.registry.graphs)

    def owner(self, name: str) -> str | None:
        """The plugin whose graph ``name`` is (``None`` if no plugin registered one)."""
        return self.host.registry.owner("graph", name)
