"""What LangGraph's machinery costs a superstep (#16 goal 1): CPU per ``ainvoke`` of chains of trivial nodes.

Chains of 1 to 4 async nodes that do nothing but return a small update (the turn
state's reducers: a list that grows, a trace step), compiled without a
checkpointer and with ``InMemorySaver`` at ``durability="exit"`` (the turn
graph's setting). The difference between chains is what one more superstep costs;
the 1-node chain is the cost of a run. Nothing asserts a timing.

Usage::

    python bench/supersteps.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/supersteps.py`` puts bench/ first on sys.path, where http.py would shadow the standard library's
# ``http``: drop it (nothing of bench/ is imported here).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import asyncio  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Annotated, Any, TypedDict  # noqa: E402

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402


def _append(old: list[Any] | None, new: list[Any] | None) -> list[Any]:
    return (old or []) + (new or [])


class ChainState(TypedDict, total=False):
    """A small state with the turn state's kinds of channels."""

    messages: Annotated[list[dict[str, str]], _append]
    trace: Annotated[list[dict[str, str]], _append]
    step: int


def chain(nodes: int, saver: Any = None) -> Any:
    """A compiled chain START -> n0 -> ... -> END of ``nodes`` trivial async nodes."""
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(ChainState)
    previous = START
    for index in range(nodes):

        async def node(state: ChainState, index: int = index) -> dict[str, Any]:
            return {"step": index, "trace": [{"node": str(index)}]}

        graph.add_node(f"n{index}", node)
        graph.add_edge(previous, f"n{index}")
        previous = f"n{index}"
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=saver)


async def cpu_per_run(graph: Any, runs: int = 400, threads: int = 50) -> float:
    """CPU milliseconds per ``ainvoke`` after a warm-up, cycling over ``threads`` threads."""
    message = {"messages": [{"role": "user", "content": "hi"}]}
    for index in range(threads):
        await graph.ainvoke(message, {"configurable": {"thread_id": f"warm-{index}"}}, durability="exit")
    began = time.process_time()
    for index in range(runs):
        await graph.ainvoke(message, {"configurable": {"thread_id": f"t-{index % threads}"}}, durability="exit")
    return (time.process_time() - began) / runs * 1000


async def main() -> None:
    """Print the CPU per run of each chain."""
    warnings.filterwarnings("ignore", message=".*durability.*")
    for nodes in (1, 2, 3, 4):
        print(f"{nodes} node(s), no checkpointer: {await cpu_per_run(chain(nodes)):.3f} ms CPU a run")
    for nodes in (1, 3):
        spent = await cpu_per_run(chain(nodes, InMemorySaver()))
        print(f"{nodes} node(s), InMemorySaver, durability=exit: {spent:.3f} ms CPU a run")


if __name__ == "__main__":
    asyncio.run(main())
