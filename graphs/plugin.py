"""The built-in plugin that registers the ``turn`` graph and its state migrations, like any plugin.

Both hooks are ``trylast``: a plugin that registers its own graph named ``turn``
(and its own ``turn`` migrations) replaces the built-in one without a problem
being reported, because a name claimed twice goes to the implementation that
ranks first (see ``docs/plugins.md``, "Hook reference").
"""

from __future__ import annotations

from botloom.core.definitions import GraphDefinition, StateMigration
from botloom.core.markers import hookimpl
from botloom.graphs.state import migrate_v1
from botloom.graphs.turn import TURN_GRAPH, TURN_GRAPH_DEFINITION


@hookimpl(trylast=True)
def register_graphs() -> list[GraphDefinition]:
    """The default ``turn`` graph."""
    return [TURN_GRAPH_DEFINITION]


@hookimpl(trylast=True)
def register_state_migrations() -> list[StateMigration]:
    """Upgrades of the ``turn`` graph's state."""
    return [
        StateMigration(graph=TURN_GRAPH, from_version=1, migrate=migrate_v1, description="user_text → user: {text}")
    ]
