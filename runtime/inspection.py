"""What the graph debugger reads from a conversation's LangGraph checkpoints: its turns and their steps.

A turn runs its graph with ``durability="exit"`` (``runtime/turns.py``): one checkpoint
per run of the graph (a turn, or an agent's action resuming a paused one), so a
conversation of 10,000 turns has about 10,000 checkpoints. The debugger never reads
them all: :func:`turn_page` asks the checkpointer for one page,
``alist(config, before=cursor, limit=n)`` (an index range scan on Postgres), and
:func:`turn_detail` reads one checkpoint and its parent (``aget_tuple``).

**Steps of a turn.** The checkpoint's ``trace`` says which nodes ran, in order, how
long each took and what it did in a line. What each node *wrote* is read from the
checkpoint's channel versions: every step of a run stamps the channels it wrote
with one new version, and ``versions_seen[node]`` holds the version of the trigger
the node ran on, which the step before it wrote. So each state key is attributed to
the node that wrote it last. A node's diff is the state at the turn's start (the
parent checkpoint's values) with the earlier nodes' writes, before and after its own
writes: exact for keys one node writes in a turn; a key two nodes write (``errors``,
say) shows its final value under the last of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from botloom.core.pricing import ModelPrice, call_cost, total_cost

INPUT_STEP = "__input__"
"""Who wrote a key the turn's input set (and no node wrote after)."""
INTERNAL_PREFIXES = ("branch:", "__")
"""Channels that are LangGraph's bookkeeping, not the graph's state."""


def plain(value: Any) -> Any:
    """``value`` as plain JSON types; anything else becomes its ``repr``."""
    return msgspec.to_builtins(value, enc_hook=repr, str_keys=True)


def thread_of(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    """The config naming a thread's root namespace (and one of its checkpoints)."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def state_of(item: CheckpointTuple | None) -> dict[str, Any]:
    """The graph state a checkpoint holds (LangGraph's own channels left out)."""
    if item is None:
        return {}
    values = item.checkpoint.get("channel_values") or {}
    return {k: v for k, v in values.items() if not k.startswith(INTERNAL_PREFIXES)}


def _trace(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    trace = state.get("trace")
    return [s for s in trace if isinstance(s, Mapping)] if isinstance(trace, list) else []


def _user_text(state: Mapping[str, Any]) -> str | None:
    user = state.get("user")
    if isinstance(user, Mapping):
        return str(user.get("text", ""))
    text = state.get("user_text")
    return text if isinstance(text, str) else None


@dataclass(frozen=True)
class TurnRow:
    """One run of a conversation's graph, as the turn list shows it."""

    checkpoint_id: str
    parent_id: str | None
    created_at: str | None
    source: str | None
    turn_id: str | None
    user_text: str | None
    replies: list[str]
    intent: str | None
    path: list[str]
    """The nodes that ran, in order (from the trace)."""
    next: list[str]
    """Nodes still to run: a turn paused for a person names ``escalate``."""
    errors: list[str]
    interrupts: list[Any] = field(default_factory=list)
    """What a paused run waits with (the handover's reason and notice)."""
    model_calls: list[dict[str, Any]] = field(default_factory=list)
    """The run's model calls as ``graphs/llm.py`` recorded them (``model``, ``node``, tokens, ``ms``)."""

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON types."""
        return plain(self.__dict__)  # type: ignore[no-any-return]


def turn_row(item: CheckpointTuple) -> TurnRow:
    """The summary of the run a checkpoint ends."""
    state = state_of(item)
    configurable = item.config.get("configurable", {})
    parent = (item.parent_config or {}).get("configurable", {})
    replies = state.get("replies")
    errors = state.get("errors")
    intent = state.get("intent")
    turn_id = state.get("turn_id")
    return TurnRow(
        checkpoint_id=str(configurable.get("checkpoint_id")),
        parent_id=parent.get("checkpoint_id"),
        created_at=item.checkpoint.get("ts"),
        source=(item.metadata or {}).get("source"),
        turn_id=turn_id if isinstance(turn_id, str) else None,
        user_text=_user_text(state),
        replies=[str(r) for r in replies] if isinstance(replies, list) else [],
        intent=intent if isinstance(intent, str) else None,
        path=[str(s.get("node")) for s in _trace(state)],
        next=_next_nodes(item),
        errors=[str(e) for e in errors] if isinstance(errors, list) else [],
        interrupts=[
            plain(getattr(i, "value", i))
            for channel_name, value in _pending(item)
            if channel_name == "__interrupt__"
            for i in (value if isinstance(value, (list, tuple)) else [value])
        ],
        model_calls=recorded_calls(state),
    )


def recorded_calls(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model calls a state recorded (``TurnState.model_calls``), as JSON types."""
    calls = state.get("model_calls")
    return [plain(c) for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []


@dataclass(frozen=True)
class Costed:
    """A run's model calls with their cost, by the operator's price table (``botloom.core.pricing``)."""

    calls: list[dict[str, Any]]
    """Each call: ``node``, ``model``, ``prompt_tokens``, ``completion_tokens``, ``ms`` and ``cost_usd``
    (``None`` for a model the table does not price)."""
    tokens: int
    cost_usd: float | None
    """The run's cost; ``None`` when a call's model has no price (never a guess)."""
    unpriced_models: list[str]


def cost_of(calls: Sequence[Mapping[str, Any]], table: Mapping[str, ModelPrice]) -> Costed:
    """The cost of each recorded model call and of them all."""
    out: list[dict[str, Any]] = []
    costs: list[float | None] = []
    tokens = 0
    unpriced: set[str] = set()
    for call in calls:
        prompt, completion, ms = call.get("prompt_tokens"), call.get("completion_tokens"), call.get("ms")
        prompt_tokens = prompt if isinstance(prompt, int) else 0
        completion_tokens = completion if isinstance(completion, int) else 0
        cost = call_cost(call, table)
        model = str(call["model"]) if call.get("model") is not None else None
        if cost is None:
            unpriced.add(model or "")
        costs.append(cost)
        tokens += prompt_tokens + completion_tokens
        out.append(
            {
                "node": str(call["node"]) if call.get("node") is not None else None,
                "model": model,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "ms": float(ms) if isinstance(ms, (int, float)) else None,
                "cost_usd": cost,
            }
        )
    return Costed(out, tokens, total_cost(costs), sorted(unpriced))


def _pending(item: CheckpointTuple) -> list[tuple[str, Any]]:
    return [(str(w[1]), w[2]) for w in item.pending_writes or () if len(w) >= 3]


def _next_nodes(item: CheckpointTuple) -> list[str]:
    """Nodes the checkpoint waits to run: its pending ``branch:to:NODE`` triggers."""
    checkpoint = item.checkpoint
    versions = checkpoint.get("channel_versions") or {}
    seen = checkpoint.get("versions_seen") or {}
    waiting = []
    for channel, version in versions.items():
        if channel.startswith("branch:to:"):
            node = channel.removeprefix("branch:to:")
            if seen.get(node, {}).get(channel) != version and channel in (checkpoint.get("channel_values") or {}):
                waiting.append(node)
    return sorted(waiting)


async def turn_page(
    saver: BaseCheckpointSaver[Any], thread_id: str, *, before: str | None = None, limit: int = 20
) -> tuple[list[TurnRow], str | None]:
    """One page of a thread's runs, newest first, and the cursor of the next page (``None`` at the first run)."""
    rows: list[TurnRow] = []
    before_config = thread_of(thread_id, before) if before else None
    async for item in saver.alist(thread_of(thread_id), before=before_config, limit=limit + 1):
        rows.append(turn_row(item))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].checkpoint_id if more and rows else None)


@dataclass
class Step:
    """One node of a run: what the trace says, what it wrote, its state before and after."""

    index: int
    node: str
    ms: float | None
    summary: str
    wrote: dict[str, Any] = field(default_factory=dict)
    diff: list[dict[str, Any]] = field(default_factory=list)


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The keys whose values differ: ``added``, ``removed`` or ``changed``, with both values."""
    changes = []
    for key in sorted(set(before) | set(after)):
        if key in before and key in after and plain(before[key]) == plain(after[key]):
            continue
        change = "added" if key not in before else "removed" if key not in after else "changed"
        changes.append({"key": key, "change": change, "before": plain(before.get(key)), "after": plain(after.get(key))})
    return changes


def writers(item: CheckpointTuple, path: Sequence[str]) -> dict[str, str]:
    """Which step wrote each state key last: a node of ``path``, or :data:`INPUT_STEP` (see the module docstring)."""
    checkpoint = item.checkpoint
    versions: dict[str, Any] = dict(checkpoint.get("channel_versions") or {})
    seen: dict[str, dict[str, Any]] = dict(checkpoint.get("versions_seen") or {})
    by_version: dict[str, str] = {}
    for position, node in enumerate(path):
        trigger = seen.get(node, {}).get(f"branch:to:{node}")
        if trigger is None:
            continue
        earlier = path[position - 1] if position > 0 else INPUT_STEP
        by_version.setdefault(str(trigger), earlier)
    state_versions = {k: v for k, v in versions.items() if not k.startswith(INTERNAL_PREFIXES)}
    known = set(by_version)
    newest = str(max(state_versions.values(), key=_version_key)) if state_versions else None
    result: dict[str, str] = {}
    for key, version in state_versions.items():
        if str(version) in known:
            result[key] = by_version[str(version)]
        elif path and str(version) == newest and str(version) not in known:
            result[key] = path[-1]
    return result


def _version_key(version: Any) -> tuple[int, float, str]:
    """Channel versions in order: LangGraph's savers use ints or zero-padded strings."""
    if isinstance(version, (int, float)):
        return (0, float(version), "")
    return (1, 0.0, str(version))


@dataclass
class TurnDetail:
    """A run of the graph, node by node."""

    row: TurnRow
    before: dict[str, Any]
    after: dict[str, Any]
    steps: list[Step]
    diff: list[dict[str, Any]]
    input_keys: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The detail as JSON types."""
        return {
            "turn": self.row.as_dict(),
            "before": plain(self.before),
            "after": plain(self.after),
            "diff": self.diff,
            "input_keys": self.input_keys,
            "steps": [plain(step.__dict__) for step in self.steps],
        }


async def turn_detail(saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str) -> TurnDetail | None:
    """The run a checkpoint ends, node by node; ``None`` if the thread has no such checkpoint."""
    item = await saver.aget_tuple(thread_of(thread_id, checkpoint_id))
    if item is None or item.config.get("configurable", {}).get("checkpoint_id") != checkpoint_id:
        return None
    parent_id = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    parent = await saver.aget_tuple(thread_of(thread_id, parent_id)) if parent_id else None
    before, after = state_of(parent), state_of(item)
    row = turn_row(item)
    trace = _trace(after)
    resumed = after.get("turn_id") is not None and before.get("turn_id") == after.get("turn_id")
    earlier = _trace(before) if resumed else []  # a resumed run goes on with its turn's trace
    ran = trace[len(earlier) :]
    wrote_by = writers(item, [str(s.get("node")) for s in ran])
    input_keys = sorted(k for k, w in wrote_by.items() if w == INPUT_STEP)
    steps: list[Step] = []
    current = {**before, **{k: after[k] for k in input_keys if k in after}, "trace": earlier}
    for index, entry in enumerate(ran):
        node = str(entry.get("node"))
        ms = entry.get("ms")
        last = all(str(t.get("node")) != node for t in ran[index + 1 :])
        keys = [k for k, w in wrote_by.items() if w == node and k != "trace"] if last else []
        wrote = {k: after[k] for k in sorted(keys) if k in after}
        node_after = {**current, **wrote}
        node_after["trace"] = trace[: len(earlier) + index + 1]
        steps.append(
            Step(
                index=index,
                node=node,
                ms=float(ms) if isinstance(ms, (int, float)) else None,
                summary=str(entry.get("summary", "")),
                wrote=wrote,
                diff=diff(current, node_after),
            )
        )
        current = node_after
    return TurnDetail(row=row, before=before, after=after, steps=steps, diff=diff(before, after), input_keys=input_keys)
