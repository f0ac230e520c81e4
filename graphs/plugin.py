"""The built-in plugin that registers the ``turn`` graph, through the same hook as any plugin."""

from __future__ import annotations

from botloom.core.definitions import GraphDefinition
from botloom.core.markers import hookimpl
from botloom.graphs.turn import TURN_GRAPH_DEFINITION


@hookimpl(trylast=True)
def register_graphs() -> list[GraphDefinition]:
    """The default ``turn`` graph."""
    return [TURN_GRAPH_DEFINITION]
