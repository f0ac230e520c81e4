"""Runs: a LangGraph run is one turn of the ``langgraph`` channel, run by the same inbound path as any turn.

:func:`start` checks the run's input with the channel (a 4xx before anything is
stored), reads the thread's state before the turn, and runs the turn in a task of
this process through :meth:`Inbound.respond <botloom.runtime.inbound.Inbound.respond>`:
the conversation's lock, the bot's burst policy, storage and replies are those of
every channel. The task is shielded from the caller: a client that goes away does
not cancel a turn.

A stream of a run this process is running is told as the graph runs: the run's task
listens to the graph's callbacks (:mod:`botloom.server.langgraph_api.live`, nothing in
the runner changes), so each node's ``updates``, ``debug``/``tasks``, ``events`` and
replies (``messages``, ``messages-tuple``, whole: no tokens) are sent as the node ends,
and ``values`` after each node. What the checkpoint says (the final state, the
checkpoint, an interrupt) is told when the turn is over. A finished run, another
process's, or a turn the observer did not see is told from the states before and
after the turn and the turn's ``trace`` (each node in order with its summary) once it
is over, in the same shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from botloom.core.channels import ChannelRejected, ChannelRequest
from botloom.core.domain import Bot, Conversation
from botloom.graphs.registry import UnknownGraph
from botloom.runtime.inbound import ChannelBinding
from botloom.runtime.inspection import writers
from botloom.runtime.results import turn_id_for
from botloom.runtime.runner import thread_config
from botloom.runtime.services import Services
from botloom.server.langgraph_api.live import OBSERVING, Observed, TurnObserver, fold, reducers
from botloom.server.langgraph_api.shapes import (
    checkpoint_payload,
    has_checkpoint,
    interrupts_out,
    jsonable,
    now,
    values_out,
)

logger = logging.getLogger(__name__)

CHANNEL = "langgraph"
KEEP_RUNS = 1000
"""Finished runs this process remembers (older ones are read from their stored messages)."""
RECENT = 20
"""Checkpoints of a thread searched for a run's own turn when later turns ran after it."""
HEARTBEAT = 15.0
"""Seconds between two keep-alive comments of a stream waiting for its turn."""
STREAM_MODES = frozenset(
    {"values", "updates", "messages", "messages-tuple", "debug", "events", "custom", "checkpoints", "tasks"}
)
ERRORS = {
    "failed": "the turn failed: the bot answered with its fallback reply",
    "rejected": "a turn of this thread was running: the bot's burst policy (reject) answered with its busy reply",
}
RUN_STATUS = {
    "answered": "success",
    "refused": "success",
    "rejected": "error",
    "failed": "error",
    "for_agent": "interrupted",
}


class RunRefused(Exception):
    """A run the API refuses before anything is stored (the channel's 4xx, or a thread of another channel)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Run:
    """A run this process started."""

    run_id: str
    thread_id: str
    assistant_id: str
    tenant_id: str
    metadata: dict[str, Any]
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    status: str = "pending"
    before: Any = None
    """The thread's state before the turn."""
    after: Any = None
    """The thread's state after the turn."""
    answer: dict[str, Any] | None = None
    """The channel's rendering of the turn's answer."""
    turn_id: str | None = None
    """The id of the turn that answered the run's message."""
    writers: dict[str, str] | None = None
    """Which node wrote each state key last in the turn (read from the checkpoint's channel versions)."""
    error: str | None = None
    task: asyncio.Task[None] | None = None
    observer: TurnObserver | None = None
    """What the run's turn did so far, as its graph runs (streams tell it live)."""

    def out(self) -> dict[str, Any]:
        """As the API's ``Run``."""
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "metadata": self.metadata,
            "multitask_strategy": "enqueue",
            "kwargs": {},
        }

    @property
    def done(self) -> bool:
        """Whether its turn is over (or never ran)."""
        return self.task is None or self.task.done()


class Runs:
    """The runs this process started, newest last (bounded)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, Run] = OrderedDict()

    def add(self, run: Run) -> None:
        """Remember a run, forgetting the oldest finished ones past :data:`KEEP_RUNS`."""
        self._runs[run.run_id] = run
        while len(self._runs) > KEEP_RUNS:
            oldest = next((key for key, r in self._runs.items() if r.done), None)
            if oldest is None:
                break
            del self._runs[oldest]

    def get(self, run_id: str, thread_id: str) -> Run | None:
        """The run with this id on this thread, if this process started it."""
        run = self._runs.get(run_id)
        return run if run is not None and run.thread_id == thread_id else None

    def of_thread(self, thread_id: str) -> list[Run]:
        """The thread's runs this process remembers, newest first."""
        return [r for r in reversed(self._runs.values()) if r.thread_id == thread_id]

    def busy(self, thread_id: str) -> bool:
        """Whether a run of the thread is running here."""
        return any(not r.done for r in self._runs.values() if r.thread_id == thread_id)

    async def close(self) -> None:
        """Wait for the runs still running (a cancelled turn runs again from its stored message)."""
        pending = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)


def registry(services: Services) -> Runs:
    """The runs of this process's services."""
    runs: Runs | None = getattr(services, "_langgraph_runs", None)
    if runs is None:
        runs = Runs()
        services._langgraph_runs = runs  # type: ignore[attr-defined]
    return runs


async def binding_of(services: Services, bot: Bot) -> ChannelBinding:
    """The bot's enabled ``langgraph`` channel; :class:`RunRefused` (403, 404) when it has none."""
    try:
        return await services.inbound.bindings.find(bot.id, CHANNEL)
    except ChannelRejected as exc:
        raise RunRefused(exc.status, exc.detail) from None


def run_request(bot: Bot, thread_id: str, run_id: str, run_input: Any, user: str | None) -> ChannelRequest:
    """The request the channel reads a run from."""
    body = msgspec.json.encode({"thread_id": thread_id, "run_id": run_id, "input": run_input, "user": user})
    return ChannelRequest(
        method="POST", url=f"/langgraph/threads/{thread_id}/runs", headers={}, body=body, bot=bot, bot_ref=bot.id
    )


async def start(
    services: Services,
    bot: Bot,
    conversation: Conversation,
    run_input: Any,
    *,
    metadata: dict[str, Any] | None = None,
    user: str | None = None,
) -> Run:
    """Check the run's input with the channel, then run its turn in a task; the run.

    Raises :class:`RunRefused` for a thread of another channel (its runs would reach
    an end user), a bot that has not enabled the ``langgraph`` channel, or input the
    channel refuses.
    """
    if conversation.channel != CHANNEL:
        raise RunRefused(
            409,
            f"thread {conversation.id} is a conversation of the {conversation.channel} channel: runs go to threads"
            " created through this API (its state and history can be read)",
        )
    binding = await binding_of(services, bot)
    run_id = str(uuid.uuid4())
    request = run_request(bot, conversation.id, run_id, run_input, user)
    try:
        services.inbound.read(binding, request)
    except ChannelRejected as exc:
        raise RunRefused(exc.status, exc.detail) from None
    try:
        graph = services.graphs.get(bot.graph)
    except UnknownGraph as exc:
        raise RunRefused(404, str(exc)) from None
    run = Run(
        run_id=run_id,
        thread_id=conversation.id,
        assistant_id=bot.id,
        tenant_id=bot.tenant_id,
        metadata=jsonable(metadata or {}),
        before=await graph.aget_state(thread_config(bot, conversation.id)),
    )
    registry(services).add(run)

    async def turn_of() -> str | None:
        stored = await services.store.messages.find(bot.tenant_id, bot.id, CHANNEL, "inbound", run_id)
        return turn_id_for(stored.id) if stored is not None else None

    observer = run.observer = TurnObserver(turn_of, reducers(graph.channels))
    run.task = asyncio.create_task(_turn(services, binding, bot, request, run))
    run.task.add_done_callback(lambda _: observer.close())
    return run


async def _turn(services: Services, binding: ChannelBinding, bot: Bot, request: ChannelRequest, run: Run) -> None:
    """The run's turn, through the inbound path of response channels; settles the run's status."""
    OBSERVING.set(run.observer)  # this task's context only: the graph's callbacks tell the run's streams
    run.status = "running"
    try:
        response = await services.inbound.respond(binding, request)
        answer = msgspec.json.decode(response.body) if response.status == 200 else None
        run.answer = answer if isinstance(answer, dict) else None
        status = RUN_STATUS.get(str((run.answer or {}).get("status")), "success")
        if run.answer is not None and run.answer.get("escalated") and status == "success":
            status = "interrupted"
        run.status = status
        if status == "error":
            run.error = ERRORS.get(str((run.answer or {}).get("status")), "the run failed")
    except asyncio.CancelledError:
        run.status = "interrupted"
        run.error = "cancelled"
        raise
    except Exception as exc:
        logger.exception("LangGraph run %s of thread %s failed", run.run_id, run.thread_id)
        run.status, run.error = "error", f"{type(exc).__name__}: the turn could not run"
    finally:
        run.updated_at = now()
    with contextlib.suppress(Exception):
        await _states(services, bot, run)
        run.writers = await _writers(services, run)


async def _states(services: Services, bot: Bot, run: Run) -> None:
    """The states before and after the run's own turn.

    Another run's turn of the thread may have run after it (the bot's burst policy runs
    every waiting message of a conversation in one go): the state after this run is the
    checkpoint of its own turn, and the state before is that checkpoint's parent.
    """
    graph, config = services.graphs.get(bot.graph), thread_config(bot, run.thread_id)
    message_id = (run.answer or {}).get("message_id")
    run.turn_id = turn_id_for(message_id) if isinstance(message_id, str) else None
    after = await graph.aget_state(config)
    if run.turn_id is not None and after.values.get("turn_id") != run.turn_id:
        async for snapshot in graph.aget_state_history(config, limit=RECENT):
            if snapshot.values.get("turn_id") == run.turn_id:
                after = snapshot
                break
    run.after = after
    own = after.values.get("turn_id") == run.turn_id
    if own and after.parent_config is not None and after.parent_config != getattr(run.before, "config", None):
        run.before = await graph.aget_state(after.parent_config)


async def _writers(services: Services, run: Run) -> dict[str, str] | None:
    """The node that wrote each state key of the turn's checkpoint (see :func:`botloom.runtime.inspection.writers`)."""
    saver, path = services.graphs.checkpointer, [s["node"] for s in _trace(run)]
    if saver is None or not path or run.after is None:
        return None
    item = await saver.aget_tuple(run.after.config)
    return writers(item, path) if item is not None else None


async def finished(run: Run) -> None:
    """Wait until the run's turn is over (without cancelling it when the caller goes away)."""
    if run.task is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.shield(run.task)


async def cancel(services: Services, run: Run) -> None:
    """Cancel a run still running here; its stored user message is settled ``failed`` (it is not run again)."""
    if run.task is None or run.task.done():
        return
    run.task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await run.task
    stored = await services.store.messages.find(run.tenant_id, run.assistant_id, CHANNEL, "inbound", run.run_id)
    if stored is not None and stored.status in ("received", "processing"):
        await services.store.messages.set_status(run.tenant_id, stored.id, "failed")
    run.status, run.updated_at = "interrupted", now()


def final_values(run: Run) -> dict[str, Any]:
    """The thread's values after the run (with ``__interrupt__`` when the graph paused, ``__error__`` if it failed)."""
    snapshot = run.after if run.after is not None else run.before
    values = values_out(snapshot.values, run.thread_id) if snapshot is not None else {}
    interrupts = interrupts_out(snapshot) if snapshot is not None else []
    if interrupts:
        values["__interrupt__"] = interrupts
    if run.status == "error" and run.answer is None:
        values["__error__"] = {"error": "RunError", "message": run.error or "the run failed"}
    return values


# -- streams ---------------------------------------------------------------------------


def stream_modes(requested: str | Sequence[str] | None) -> list[str]:
    """The requested stream modes (``values`` by default); ``ValueError`` for one that does not exist."""
    modes = [requested] if isinstance(requested, str) else list(requested or ["values"])
    unknown = [m for m in modes if m not in STREAM_MODES]
    if unknown:
        raise ValueError(f"unknown stream mode {unknown[0]!r}: one of {', '.join(sorted(STREAM_MODES))}")
    return modes or ["values"]


def sse(event: str, data: Any) -> bytes:
    """One server-sent event as the LangGraph clients parse it (``event: NAME`` and ``data: JSON``)."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


async def stream(run: Run, modes: Sequence[str]) -> AsyncIterator[bytes]:
    """The run's events in the requested modes: ``metadata`` at once, each node's as it finishes, the rest at the end.

    A run this process is running is told live from its :class:`~.live.TurnObserver`
    (several streams of one run each get every event); a finished run, a run of another
    process, or a turn the observer did not see (another message's burst ran it) is told
    from its checkpoints once it is over.
    """
    yield sse("metadata", {"run_id": run.run_id, "attempt": 1})
    told = _Events(run, modes)
    live = _Live(run, told) if run.observer is not None and run.task is not None else None
    if live is not None:
        async for chunk in live.follow():
            yield chunk
    elif run.task is not None and not run.task.done():
        waiter = asyncio.ensure_future(finished(run))
        try:
            while not waiter.done():
                done, _ = await asyncio.wait({waiter}, timeout=HEARTBEAT)
                if not done:
                    yield b": heartbeat\n\n"
        finally:
            waiter.cancel()
    await finished(run)
    rest = told.rest() if live is not None and live.followed else told.all()
    for event, data in rest:
        yield sse(event, data)


class _Live:
    """A stream of a run running here: its turn's graph events as the observer hears them."""

    def __init__(self, run: Run, told: _Events) -> None:
        assert run.observer is not None
        self.run, self.told, self.observer = run, told, run.observer
        self.graph: uuid.UUID | None = None
        self.values: dict[str, Any] = {}
        self.index = 0
        self.pending: dict[str, Any] | None = None
        """The state after the last node, told as ``values`` when the next node starts (the last one's is the
        checkpoint's, told at the end)."""

    @property
    def followed(self) -> bool:
        """Whether the run's own graph run was heard (its head and nodes were told)."""
        return self.graph is not None

    async def follow(self) -> AsyncIterator[bytes]:
        """Every event heard, as stream chunks, until the run's task is over (keep-alive comments meanwhile)."""
        seen = 0
        while True:
            for item in self.observer.events[seen:]:
                seen += 1
                await self.feed(item)
                for event, data in self.told.take():
                    yield sse(event, data)
            if self.observer.closed and seen >= len(self.observer.events):
                return
            if not await self.observer.wait(seen, HEARTBEAT):
                yield b": heartbeat\n\n"

    async def feed(self, item: Observed) -> None:
        """Tell one observed event (only those of the run's own graph run)."""
        run, told = self.run, self.told
        if item.kind == "graph_start" and self.graph is None:
            own = await self.observer.own_turn()
            if own is None or not isinstance(item.data, dict) or item.data.get("turn_id") != own:
                return
            self.graph = item.graph
            before = run.before.values if run.before is not None and isinstance(run.before.values, dict) else {}
            known = {m["id"] for m in values_out(before, run.thread_id).get("messages", [])} if before else set()
            self.values = fold(before, item.data, self.observer.folds)
            first = values_out(self.values, run.thread_id)
            human = [m for m in first.get("messages", []) if m["type"] == "human" and m["id"] not in known]
            told.head(first, human, has_checkpoint(run.before) if run.before is not None else False)
        elif item.graph != self.graph or self.graph is None:
            return
        elif item.kind == "node_start" and item.node is not None:
            if self.pending is not None:
                told.emit("values", self.pending)
                self.pending = None
            told.task(self.index, item.node)
        elif item.kind == "node_end" and item.node is not None:
            known = {m["id"] for m in values_out(self.values, run.thread_id).get("messages", [])}
            self.values = fold(self.values, item.data, self.observer.folds)
            now_values = values_out(self.values, run.thread_id)
            update: dict[str, Any] = {}
            if isinstance(item.data, dict):
                update = {str(k): jsonable(v) for k, v in item.data.items() if k != "messages"}
                if "messages" in item.data:
                    update["messages"] = [m for m in now_values.get("messages", []) if m["id"] not in known]
            replies = [m for m in update.get("messages", []) if m["type"] == "ai"]
            told.result(self.index, item.node, update, replies)
            self.pending = now_values
            self.index += 1


def _trace(run: Run) -> list[dict[str, Any]]:
    """The nodes the run's turn went through, in order (empty when the graph did not run)."""
    after, before = run.after, run.before
    if after is None or not isinstance(after.values, dict):
        return []
    if before is not None and getattr(before, "config", None) == getattr(after, "config", None):
        return []  # no new checkpoint: the graph did not run (a person has the conversation, or it failed)
    if run.turn_id is not None and after.values.get("turn_id") != run.turn_id:
        return []  # the newest checkpoint is another run's turn: this run's graph did not run
    steps = after.values.get("trace") or []
    return [s for s in steps if isinstance(s, dict) and isinstance(s.get("node"), str)]


def _changes(run: Run) -> dict[str, Any]:
    """The state fields the turn changed (besides its trace), as the API shows them."""
    before = values_out(run.before.values, run.thread_id) if run.before is not None else {}
    after = values_out(run.after.values, run.thread_id) if run.after is not None else {}
    return {k: v for k, v in after.items() if k != "trace" and before.get(k) != v}


def _new_messages(run: Run) -> list[dict[str, Any]]:
    """The messages the turn added to the state's window (the user's, then the replies)."""
    before = values_out(run.before.values, run.thread_id).get("messages", []) if run.before is not None else []
    after = values_out(run.after.values, run.thread_id).get("messages", []) if run.after is not None else []
    known = {m["id"] for m in before}
    return [m for m in after if m["id"] not in known]


def _first_values(run: Run, added: list[dict[str, Any]]) -> dict[str, Any]:
    """The state as the turn started: the state before it, with the user's message."""
    values = values_out(run.before.values, run.thread_id) if run.before is not None else {"messages": []}
    values["messages"] = values.get("messages", []) + [m for m in added if m["type"] == "human"][:1]
    return values


def events(run: Run, modes: Sequence[str]) -> list[tuple[str, Any]]:
    """The events of a finished run in the requested modes, in the order a LangGraph server sends them."""
    return _Events(run, modes).all()


class _Events:
    """Builds a run's events: from its checkpoints once it is over (:meth:`all`), or piece by piece as it runs."""

    def __init__(self, run: Run, modes: Sequence[str]) -> None:
        self.run, self.modes = run, set(modes)
        self.out: list[tuple[str, Any]] = []
        before = getattr(run.before, "metadata", None) or {}
        self.step0 = int(before.get("step", -1)) if isinstance(before.get("step", -1), int) else -1

    def take(self) -> list[tuple[str, Any]]:
        """The events built since the last call."""
        out, self.out = self.out, []
        return out

    def emit(self, mode: str, data: Any, *, event: str | None = None) -> None:
        """Add an event of ``mode`` if it was asked for (named ``event`` when that differs from the mode)."""
        if mode in self.modes:
            self.out.append((event or mode, data))

    def debug(self, kind: str, step: int, payload: Any) -> None:
        """A ``debug`` event (and its ``checkpoints`` or ``tasks`` twin)."""
        self.emit("debug", {"type": kind, "timestamp": now(), "step": step, "payload": payload})
        self.emit("checkpoints" if kind == "checkpoint" else "tasks", payload)

    def graph_event(self, kind: str, data: dict[str, Any]) -> None:
        """An ``events``-mode event of the whole graph."""
        run = self.run
        self.emit(
            "events",
            {
                "event": kind,
                "name": "LangGraph",
                "run_id": run.run_id,
                "data": data,
                "metadata": {"thread_id": run.thread_id},
                "tags": [],
                "parent_ids": [],
            },
        )

    def all(self) -> list[tuple[str, Any]]:
        """Every event of a finished run, in order, told from its checkpoints and its turn's trace."""
        run, trace, added = self.run, _trace(self.run), _new_messages(self.run)
        human = [m for m in added if m["type"] == "human"]
        self.head(_first_values(run, added) if trace else None, human, bool(trace) and run.before is not None)
        changes = _changes(run) if trace else {}
        replies = [m for m in added if m["type"] == "ai"]
        for index, step in enumerate(trace):
            last = index == len(trace) - 1
            node = step["node"]
            self.task(index, node)
            update: dict[str, Any] = {"trace": [jsonable(step)], **self.written(node, changes if last else {}, added)}
            self.result(index, node, update, replies if last else [])
        return self.rest()

    def head(self, first: dict[str, Any] | None, human: list[dict[str, Any]], checkpoint: bool) -> None:
        """The graph starts: the state with the user's message, and the checkpoint it starts from."""
        run = self.run
        if first is not None:
            self.emit("values", first)
        self.graph_event("on_chain_start", {"input": {"messages": human}})
        if first is not None and checkpoint and run.before is not None and has_checkpoint(run.before):
            self.debug("checkpoint", self.step0, checkpoint_payload(run.before, run.thread_id))

    def rest(self) -> list[tuple[str, Any]]:
        """The end of a finished run: its interrupt, its checkpoint, its final values, its error."""
        run, ran = self.run, bool(_trace(self.run))
        interrupts = interrupts_out(run.after) if run.after is not None and ran else []
        if interrupts:
            self.emit("updates", {"__interrupt__": interrupts})
        if run.after is not None and ran:
            written = (getattr(run.after, "metadata", None) or {}).get("step")
            at = written if isinstance(written, int) else self.step0 + 1
            self.debug("checkpoint", at, checkpoint_payload(run.after, run.thread_id))
        values = final_values(run)
        self.emit("values", {k: v for k, v in values.items() if k != "__error__"})
        self.graph_event("on_chain_end", {"output": values})
        if run.status == "error":
            self.out.append(("error", {"error": "RunError", "message": run.error or "the run failed"}))
        return self.take()

    def written(self, node: str, changes: dict[str, Any], added: list[dict[str, Any]]) -> dict[str, Any]:
        """What ``node`` wrote: the keys the checkpoint says it wrote last (its new messages for ``messages``).

        Without that record, the turn's changes go with its last node.
        """
        run = self.run
        if run.writers is None or run.after is None:
            return changes
        values = values_out(run.after.values, run.thread_id)
        out = {k: values[k] for k, w in run.writers.items() if w == node and k in values and k != "trace"}
        if "messages" in out:
            out["messages"] = [m for m in added if m["type"] == "ai"]
        return out

    def _task_id(self, index: int, node: str) -> str:
        return str(uuid.uuid5(uuid.UUID(self.run.run_id), f"{index}:{node}"))

    def task(self, index: int, node: str) -> None:
        """A node starts: its task and its chain start."""
        at = self.step0 + 1 + index
        task = {"id": self._task_id(index, node), "name": node, "input": None, "triggers": [f"branch:to:{node}"]}
        self.debug("task", at, task)
        self.emit("events", _chain_event("on_chain_start", node, self.run, at, {"input": None}))

    def result(self, index: int, node: str, update: dict[str, Any], replies: list[dict[str, Any]]) -> None:
        """A node ended: its update, the replies it wrote, its chain end and its task's result."""
        run, at = self.run, self.step0 + 1 + index
        self.emit("updates", {node: update})
        meta = {"run_id": run.run_id, "thread_id": run.thread_id, "langgraph_node": node, "langgraph_step": at}
        for reply in replies:
            self.emit("messages-tuple", [{**reply, "type": "AIMessageChunk"}, meta], event="messages")
            self.emit("messages", {reply["id"]: {"metadata": meta}}, event="messages/metadata")
            self.emit("messages", [reply], event="messages/complete")
        self.emit("events", _chain_event("on_chain_end", node, run, at, {"output": update}))
        result: dict[str, Any] = {
            "id": self._task_id(index, node),
            "name": node,
            "error": None,
            "interrupts": [],
            "result": update,
        }
        self.debug("task_result", at, result)


def _chain_event(kind: str, node: str, run: Run, step: int, data: dict[str, Any]) -> dict[str, Any]:
    """An ``events``-mode event of one node."""
    return {
        "event": kind,
        "name": node,
        "run_id": str(uuid.uuid5(uuid.UUID(run.run_id), node)),
        "data": data,
        "metadata": {"thread_id": run.thread_id, "langgraph_node": node, "langgraph_step": step},
        "tags": [f"graph:step:{step}"],
        "parent_ids": [run.run_id],
    }
