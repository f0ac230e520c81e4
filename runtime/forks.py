"""Time travel and forks: re-run one turn of a conversation from its checkpoint, on a thread of its own, never sent.

A fork names a turn by one of its checkpoints (as ``GET /api/v1/conversations/{id}/checkpoints``
lists them). It starts from the state the conversation had *before* that turn (the
checkpoint's ancestor of the previous turn, copied into the fork's own thread
``fork:{conversation}:{fork}``), optionally edited, and runs the bot's current graph
for the turn's message or a different one:

* nothing is delivered and nothing is stored in the conversation: the fork never
  calls the channel layer, never writes a message row, never touches the
  conversation's thread; its tools get ``ToolContext.dry_run = True``;
* moderation hooks and ``on_turn_end`` observers are not called (a debug run is not a turn
  of the conversation); model calls are real, and recorded as usage like any other;
* breakpoints are LangGraph's ``interrupt_before`` / ``interrupt_after`` at invoke
  time; a paused fork's state may be edited (``aupdate_state``, as the node that ran
  last, so conditional edges are taken again) and the run continued (``ainvoke(None)``);
* each step of a fork is checkpointed (``durability="sync"``) so the debugger can show it.

The fork's row (:class:`~botloom.core.storage.repositories.forks.ForkRepository`) ties
its thread to its tenant: a fork is reachable only by its tenant (and the operator).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_RUNTIME
from langgraph.checkpoint.base import CheckpointTuple, copy_checkpoint, empty_checkpoint
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from botloom.core.domain import Bot, Conversation
from botloom.core.storage.repositories.forks import Fork
from botloom.graphs.registry import UnknownGraph
from botloom.graphs.state import turn_input
from botloom.runtime.debug_runs import (
    MAX_BREAKPOINTS,
    DebugInputError,
    DebugNotFound,
    check_nodes,
    check_state_edits,
    dry_context,
    jsonable,
    state_diff,
    turn_summary,
)
from botloom.runtime.saver import REDACT_FLAG
from botloom.runtime.services import Services
from botloom.runtime.turn_context import thread_config

FORK_THREAD_PREFIX = "fork:"


class ForkNotPaused(RuntimeError):
    """``continue`` on a fork that is not paused at a breakpoint (the API answers 409)."""


@dataclass
class ForkOutcome:
    """What a fork did so far, beside what the original turn did."""

    fork_id: str
    conversation_id: str
    checkpoint_id: str
    """The original turn's checkpoint the fork re-runs."""
    fork_checkpoint_id: str | None
    """The fork thread's newest checkpoint."""
    replies: list[str]
    intent: str | None
    path: list[str]
    """The nodes the fork ran, in order."""
    paused_at: str | None
    """The node a breakpoint paused the fork at (``None`` when it ran to its end)."""
    pause: str | None
    """``"before"`` or ``"after"`` that node."""
    next: list[str]
    escalated: bool
    state: dict[str, Any]
    original: dict[str, Any] | None
    """The original turn's ``replies``, ``intent``, ``path`` (``None`` when its checkpoint is gone)."""
    diff: dict[str, Any]
    """Every field that differs from the original turn: ``{"field": {"original": ..., "fork": ...}}``."""
    break_before: list[str] = field(default_factory=list)
    break_after: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Origin:
    """The original turn: its first checkpoint (the bot's run) and the one before the turn."""

    turn: CheckpointTuple
    before: CheckpointTuple | None


class Forks:
    """Creates, continues and reads forks (see the module docstring)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.repo = services.store.forks

    # -- look-ups -----------------------------------------------------------------

    def _graph(self, bot: Bot) -> CompiledStateGraph[Any, Any, Any, Any]:
        if self.services.graphs.checkpointer is None:
            raise DebugInputError("forks need a checkpointer (BOTLOOM_CHECKPOINTER is not set)")
        try:
            return self.services.graphs.get(bot.graph)
        except UnknownGraph as exc:
            raise DebugNotFound(str(exc)) from None

    async def _tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        saver = self.services.graphs.checkpointer
        assert saver is not None
        return await saver.aget_tuple(config)

    async def _origin(self, bot: Bot, conversation: Conversation, checkpoint_id: str) -> _Origin:
        """The turn ``checkpoint_id`` belongs to, walking back to its first checkpoint and the one before."""
        base = thread_config(bot, conversation.id)
        config: RunnableConfig = {"configurable": {**base["configurable"], "checkpoint_ns": ""}}
        config["configurable"]["checkpoint_id"] = checkpoint_id
        found = await self._tuple(config)
        if found is None:
            raise DebugNotFound(f"no checkpoint {checkpoint_id!r} in conversation {conversation.id}")
        turn = found.checkpoint["channel_values"].get("turn_id")
        before: CheckpointTuple | None = None
        while found.parent_config is not None:
            parent = await self._tuple(found.parent_config)
            if parent is None:
                break
            if parent.checkpoint["channel_values"].get("turn_id") != turn:
                before = parent
                break
            found = parent
        return _Origin(turn=found, before=before)

    def _config(self, bot: Bot, thread: str) -> RunnableConfig:
        configurable: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
        if bot.settings.redact_personal_data:
            configurable[REDACT_FLAG] = True
        return {"configurable": configurable}

    async def get_fork(self, tenant_id: str | None, fork_id: str) -> Fork:
        """The fork ``fork_id`` if ``tenant_id`` (``None``: the operator) may see it; else :class:`DebugNotFound`."""
        owner = tenant_id if tenant_id is not None else await self.repo.tenant_of(fork_id)
        fork = await self.repo.get(owner, fork_id) if owner is not None else None
        if fork is None:
            raise DebugNotFound(f"no fork {fork_id!r}")
        return fork

    async def _parts(self, fork: Fork) -> tuple[Bot, Conversation]:
        bot = await self.services.store.bots.get(fork.tenant_id, fork.bot_id)
        conversation = await self.services.store.conversations.get(fork.tenant_id, fork.conversation_id)
        if bot is None or conversation is None:
            raise DebugNotFound(f"no fork {fork.id!r}")
        return bot, conversation

    # -- the actions --------------------------------------------------------------

    async def create(
        self,
        bot: Bot,
        conversation: Conversation,
        checkpoint_id: str,
        *,
        text: str | None = None,
        state: Mapping[str, Any] | None = None,
        break_before: Sequence[str] = (),
        break_after: Sequence[str] = (),
    ) -> ForkOutcome:
        """Fork the turn of ``checkpoint_id`` and run it (with ``text``, else the turn's own message)."""
        graph = self._graph(bot)
        before_nodes = check_nodes(graph, "break_before", break_before)
        after_nodes = check_nodes(graph, "break_after", break_after)
        if len(before_nodes) + len(after_nodes) > MAX_BREAKPOINTS:
            raise DebugInputError(f"at most {MAX_BREAKPOINTS} breakpoints")
        edits = check_state_edits(graph, state or {}, reset_by_turn=True)
        origin = await self._origin(bot, conversation, checkpoint_id)
        if text is None:
            user = origin.turn.checkpoint["channel_values"].get("user") or {}
            text = str(user.get("text") or "") if isinstance(user, dict) else ""
        fork_id = str(uuid.uuid4())
        thread = f"{FORK_THREAD_PREFIX}{conversation.id}:{fork_id}"
        config = self._config(bot, thread)
        # The row first, then the thread: a thread is never left without the row that erasure finds it by.
        fork = await self.repo.create(
            bot.tenant_id,
            fork_id=fork_id,
            bot_id=bot.id,
            conversation_id=conversation.id,
            checkpoint_id=checkpoint_id,
            thread_id=thread,
            break_before=before_nodes,
            break_after=after_nodes,
            edited=bool(edits),
        )
        await self._seed(config, origin.before, edits)
        version = self.services.runner.state_version(bot)
        payload = turn_input(f"fork:{fork_id}", text, version=version)
        errors = await self._run(graph, bot, conversation, fork, payload=payload, config=config)
        return await self._outcome(graph, bot, fork, origin, errors)

    async def continue_fork(
        self, tenant_id: str | None, fork_id: str, *, state: Mapping[str, Any] | None = None
    ) -> ForkOutcome:
        """Continue a fork paused at a breakpoint, after applying ``state`` edits (as the node that ran last)."""
        fork = await self.get_fork(tenant_id, fork_id)
        bot, conversation = await self._parts(fork)
        graph = self._graph(bot)
        edits = check_state_edits(graph, state or {})
        config = self._config(bot, fork.thread_id)
        snapshot = await graph.aget_state(config)
        if not snapshot.next or snapshot.interrupts:
            where = "paused for a person in escalate" if snapshot.interrupts else "finished"
            raise ForkNotPaused(f"fork {fork_id} is not paused at a breakpoint: it {where}")
        ctx = await dry_context(self.services, bot, conversation)
        if edits:
            with_runtime: RunnableConfig = {
                "configurable": {**config["configurable"], CONFIG_KEY_RUNTIME: Runtime(context=ctx)}
            }
            await graph.aupdate_state(with_runtime, edits)
        await self.repo.touch(fork.tenant_id, fork.id, edited=bool(edits))
        errors = await self._run(graph, bot, conversation, fork, payload=None, config=config)
        origin = await self._origin_or_none(bot, conversation, fork.checkpoint_id)
        return await self._outcome(graph, bot, fork, origin, errors)

    async def read(self, tenant_id: str | None, fork_id: str) -> ForkOutcome:
        """A fork as it stands, beside its original turn."""
        fork = await self.get_fork(tenant_id, fork_id)
        bot, conversation = await self._parts(fork)
        graph = self._graph(bot)
        origin = await self._origin_or_none(bot, conversation, fork.checkpoint_id)
        return await self._outcome(graph, bot, fork, origin, [])

    async def turn_of(self, tenant_id: str | None, fork_id: str) -> tuple[Fork, str | None, dict[str, Any], list[Any]]:
        """A fork, the id of the original turn it re-ran, and the fork's state values and interrupts."""
        fork = await self.get_fork(tenant_id, fork_id)
        bot, conversation = await self._parts(fork)
        graph = self._graph(bot)
        origin = await self._origin_or_none(bot, conversation, fork.checkpoint_id)
        turn = origin.turn.checkpoint["channel_values"].get("turn_id") if origin is not None else None
        snapshot = await graph.aget_state(self._config(bot, fork.thread_id))
        if snapshot.next and not snapshot.interrupts:
            raise ForkNotPaused(f"fork {fork_id} is paused at {snapshot.next[0]}: continue it to its end first")
        values = dict(snapshot.values) if isinstance(snapshot.values, dict) else {}
        return fork, (str(turn) if turn else None), values, list(snapshot.interrupts or ())

    async def delete(self, tenant_id: str | None, fork_id: str) -> None:
        """Forget a fork and delete its thread's checkpoints."""
        fork = await self.get_fork(tenant_id, fork_id)
        await self.services.graphs.checkpointer_delete_thread(fork.thread_id)
        await self.repo.delete(fork.tenant_id, fork.id)

    async def list_forks(self, conversation: Conversation, limit: int = 50) -> list[Fork]:
        """The conversation's forks, newest first."""
        return await self.repo.of_conversation(conversation.tenant_id, conversation.id, limit)

    # -- inside -------------------------------------------------------------------

    async def _origin_or_none(self, bot: Bot, conversation: Conversation, checkpoint_id: str) -> _Origin | None:
        try:
            return await self._origin(bot, conversation, checkpoint_id)
        except DebugNotFound:
            return None  # pruned since the fork was made: the fork still reads

    async def _seed(self, config: RunnableConfig, before: CheckpointTuple | None, edits: Mapping[str, Any]) -> None:
        """Write the state before the turn (with ``edits`` set) as the fork thread's first checkpoint."""
        if before is None and not edits:
            return  # the turn was the conversation's first: the fork starts from nothing too
        saver = self.services.graphs.checkpointer
        assert saver is not None
        checkpoint = copy_checkpoint(before.checkpoint) if before is not None else empty_checkpoint()
        metadata: Any = dict(before.metadata) if before is not None else {"source": "update", "step": -1}
        metadata["source"] = "fork"
        for key, value in edits.items():
            checkpoint["channel_values"][key] = value
            checkpoint["channel_versions"][key] = saver.get_next_version(checkpoint["channel_versions"].get(key), None)
        await saver.aput(config, checkpoint, metadata, dict(checkpoint["channel_versions"]))

    async def _run(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        bot: Bot,
        conversation: Conversation,
        fork: Fork,
        *,
        payload: Any,
        config: RunnableConfig,
    ) -> list[str]:
        """Run (or continue) the fork's graph with its breakpoints; errors of the run, if it failed."""
        ctx = await dry_context(self.services, bot, conversation)
        try:
            await asyncio.wait_for(
                graph.ainvoke(
                    payload,
                    config,
                    context=ctx,
                    interrupt_before=fork.break_before or None,
                    interrupt_after=fork.break_after or None,
                    durability="sync",
                ),
                self.services.settings.turn_timeout,
            )
        except Exception as exc:  # noqa: BLE001 - a failing debug run is shown, not raised
            return [f"fork run failed: {type(exc).__name__}: {exc}"]
        return []

    async def _outcome(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        bot: Bot,
        fork: Fork,
        origin: _Origin | None,
        errors: list[str],
    ) -> ForkOutcome:
        config = self._config(bot, fork.thread_id)
        snapshot = await graph.aget_state(config)
        values = dict(snapshot.values) if isinstance(snapshot.values, dict) else {}
        interrupts = list(snapshot.interrupts or ())
        summary = turn_summary(values, interrupts)
        nexts = list(snapshot.next or ())
        paused_at: str | None = None
        pause: str | None = None
        if nexts and not interrupts:
            if nexts[0] in fork.break_before:
                paused_at, pause = nexts[0], "before"
            elif summary["path"] and summary["path"][-1] in fork.break_after:
                paused_at, pause = summary["path"][-1], "after"
            else:
                paused_at, pause = nexts[0], "before"
        original: dict[str, Any] | None = None
        original_values: dict[str, Any] | None = None
        if origin is not None:
            original_values = dict(origin.turn.checkpoint["channel_values"])
            pending = [w for w in origin.turn.pending_writes or [] if w[1] == "__interrupt__"]
            original = turn_summary(original_values, [v for _, _, value in pending for v in _as_list(value)])
        diff = state_diff(original_values, values) if original_values is not None else {}
        if original is not None and original["path"] != summary["path"]:
            diff["path"] = {"original": original["path"], "fork": summary["path"]}
        if original is not None and original["replies"] != summary["replies"]:
            diff["replies"] = {"original": original["replies"], "fork": summary["replies"]}
        configurable = (snapshot.config or {}).get("configurable", {})
        return ForkOutcome(
            fork_id=fork.id,
            conversation_id=fork.conversation_id,
            checkpoint_id=fork.checkpoint_id,
            fork_checkpoint_id=configurable.get("checkpoint_id"),
            replies=summary["replies"],
            intent=summary["intent"],
            path=summary["path"],
            paused_at=paused_at,
            pause=pause,
            next=nexts,
            escalated=summary["escalated"],
            state=jsonable(values),
            original=original,
            diff=diff,
            break_before=list(fork.break_before),
            break_after=list(fork.break_after),
            errors=errors + [str(e) for e in values.get("errors") or []],
        )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["FORK_THREAD_PREFIX", "ForkNotPaused", "ForkOutcome", "Forks"]
