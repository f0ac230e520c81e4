"""The ``turn`` graph: retrieve → classify → act → respond, or escalate to a person.

```
START → retrieve → classify ─┬→ act → respond → END
                             ├→ respond → END
                             └→ escalate ⟲ (until an agent hands back) → END
```
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from botloom.core.definitions import GraphDefinition
from botloom.graphs import nodes
from botloom.graphs.context import TurnContext
from botloom.graphs.state import STATE_VERSION, TurnInput, TurnState

TURN_GRAPH = "turn"


def build_turn_graph() -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled ``turn`` graph; the host compiles it once per process."""
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(TurnState, context_schema=TurnContext, input_schema=TurnInput)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node("classify", nodes.classify)
    graph.add_node("act", nodes.act)
    graph.add_node("respond", nodes.respond)
    graph.add_node("escalate", nodes.escalate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "classify")
    graph.add_conditional_edges("classify", nodes.after_classify, ["act", "respond", "escalate"])
    graph.add_edge("act", "respond")
    graph.add_edge("respond", END)
    graph.add_conditional_edges("escalate", nodes.after_escalate, ["escalate", END])
    return graph


TURN_GRAPH_DEFINITION = GraphDefinition(
    name=TURN_GRAPH,
    description="retrieve → classify → act → respond, or escalate to a person",
    build=build_turn_graph,
    state_version=STATE_VERSION,
)
