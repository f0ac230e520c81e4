"""Watching a run's turn as its graph runs: the node updates a LangGraph stream tells live.

The runner runs a turn as it runs every turn (``graph.ainvoke`` under the conversation's
lock, checkpointed when it ends); nothing in it knows about streams. A run's task sets
:data:`OBSERVING` to its :class:`TurnObserver` before handing the run to the inbound
path: LangChain's callback manager adds the observer (a configure hook, as LangSmith's
tracer is added) to every runnable started in that task's context, so the observer hears
the graph start, each node start and end (with the update the node returned), and the
graph end. It only records them in memory, never awaits anything else and never raises:
the turn, its lock, its stored messages and its crash safety are the runner's, unchanged.

A stream reads the recorded events as they come (several streams of one run each read
them all), keeps only the graph run of its own turn (the one whose input's ``turn_id`` is
the run's turn; a burst that ran the run's message inside another message's turn is told
afterwards, from the checkpoint, as before) and folds each node's update into the state
with the graph's reducers, so ``values`` can be told after each node too.

The observer never makes the model stream tokens: a reply is told whole, when the node
that wrote it finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.tracers.context import register_configure_hook

logger = logging.getLogger(__name__)

MAX_EVENTS = 2000
"""Events one observer keeps (a turn runs a handful of nodes; a runaway graph is cut off, then told at its end)."""

OBSERVING: ContextVar[TurnObserver | None] = ContextVar("botloom_langgraph_observer", default=None)
"""The observer of the turn running in this context (set only in a LangGraph run's task)."""


@dataclass(frozen=True)
class Observed:
    """One thing the observer heard: ``graph_start``, ``node_start``, ``node_end``, ``graph_end`` or ``graph_error``."""

    kind: str
    graph: uuid.UUID
    """The LangChain run id of the graph run it belongs to."""
    node: str | None = None
    data: Any = None
    """The graph's input (``graph_start``), the node's update (``node_end``)."""
    at: float = field(default_factory=time.monotonic)


class TurnObserver(AsyncCallbackHandler):
    """Records the graph runs of one task's turns (see the module docstring)."""

    ignore_llm: bool = True
    ignore_retry: bool = True
    ignore_agent: bool = True
    ignore_retriever: bool = True
    ignore_chat_model: bool = True
    ignore_custom_event: bool = True
    raise_error: bool = False

    def __init__(
        self,
        turn_of: Callable[[], Awaitable[str | None]] | None = None,
        folds: Mapping[str, Callable[[Any, Any], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.folds: Mapping[str, Callable[[Any, Any], Any]] = folds or {}
        """The graph's reducers (:func:`reducers`), to fold each node's update into the state."""
        self.events: list[Observed] = []
        self.closed = False
        self._graphs: set[uuid.UUID] = set()
        self._nodes: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._turn_of = turn_of
        self._turn: str | None = None

    # -- what the callback manager calls (inside the turn: record, never block) -------

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A graph run starts (no parent, a turn's input) or one of its nodes does."""
        if parent_run_id is None:
            if isinstance(inputs, Mapping) and "turn_id" in inputs:
                self._graphs.add(run_id)
                self._push(Observed("graph_start", run_id, data=dict(inputs)))
            return
        node = (metadata or {}).get("langgraph_node")
        if parent_run_id in self._graphs and isinstance(node, str) and kwargs.get("name", node) == node:
            self._nodes[run_id] = (parent_run_id, node)
            self._push(Observed("node_start", parent_run_id, node=node))

    async def on_chain_end(
        self, outputs: dict[str, Any] | Any, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        """A node ended with its update, or the graph run ended."""
        if run_id in self._nodes:
            graph, node = self._nodes.pop(run_id)
            self._push(Observed("node_end", graph, node=node, data=outputs))
        elif run_id in self._graphs:
            self._graphs.discard(run_id)
            self._push(Observed("graph_end", run_id))

    async def on_chain_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        """A node or the graph run failed (or paused for a person: told from the checkpoint at the end)."""
        if run_id in self._nodes:
            graph, node = self._nodes.pop(run_id)
            self._push(Observed("node_error", graph, node=node))
        elif run_id in self._graphs:
            self._graphs.discard(run_id)
            self._push(Observed("graph_error", run_id))

    def _push(self, event: Observed) -> None:
        if self.closed or len(self.events) >= MAX_EVENTS:
            return
        self.events.append(event)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- what streams call ----------------------------------------------------------------

    def close(self) -> None:
        """The run's task is over: nothing more will be heard."""
        self.closed = True
        self._wake()

    async def wait(self, seen: int, patience: float) -> bool:
        """Wait until there are more than ``seen`` events or the observer closed; ``False`` after ``patience`` s."""
        if len(self.events) > seen or self.closed:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), patience)
        except TimeoutError:
            return False
        return True

    async def own_turn(self) -> str | None:
        """The id of the run's own turn (read once, when its graph started: its message is stored by then)."""
        if self._turn is None and self._turn_of is not None:
            try:
                self._turn = await self._turn_of()
            except Exception:  # noqa: BLE001 - the database away: the stream tells the run from its checkpoints
                logger.warning("a LangGraph stream could not read its run's message; told after the turn")
                self._turn_of = None
        return self._turn


register_configure_hook(OBSERVING, inheritable=True)


def reducers(channels: Mapping[str, Any]) -> dict[str, Callable[[Any, Any], Any]]:
    """The graph's reducers by state key (the channels that fold an update into the value)."""
    out: dict[str, Callable[[Any, Any], Any]] = {}
    for key, channel in channels.items():
        operator = getattr(channel, "operator", None)
        if callable(operator):
            out[key] = operator
    return out


def fold(values: Mapping[str, Any], update: Any, folds: Mapping[str, Callable[[Any, Any], Any]]) -> dict[str, Any]:
    """``values`` with a node's (or the input's) ``update`` applied as the graph applies it."""
    state = dict(values)
    if not isinstance(update, Mapping):
        return state
    for key, value in update.items():
        operator = folds.get(key)
        state[key] = operator(state[key], value) if operator is not None and key in state else value
    return state


__all__ = ["OBSERVING", "Observed", "TurnObserver", "fold", "reducers"]
