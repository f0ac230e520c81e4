"""Compiled graphs, once per process and graph name."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from botloom.core.host import PluginHost


class UnknownGraph(LookupError):
    """A bot names a graph no loaded plugin registered."""


class GraphRegistry:
    """Compiles each registered graph with the checkpointer on first use and keeps it."""

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
