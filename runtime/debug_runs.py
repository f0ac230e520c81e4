"""What forks and replays share: a turn's outcome as the debugger compares it, state edits, dry-run contexts.

A *debug run* (a fork of a turn, a replay of a conversation) runs a bot's graph on a
thread of its own with a :class:`~botloom.graphs.context.TurnContext` whose ``dry_run``
is set: nothing it produces is stored as a message or delivered, and tools see
``ToolContext.dry_run``. See ``docs/debugger-actions.md``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from langgraph.graph.state import CompiledStateGraph

from botloom.core.domain import Bot, Conversation
from botloom.graphs.context import TurnContext
from botloom.graphs.state import TurnInput
from botloom.runtime.services import Services

MAX_STATE_BYTES = 64 * 1024
"""The largest state edit a fork accepts, as JSON."""

MAX_BREAKPOINTS = 20
"""How many nodes one fork may pause at, before and after together."""

HIDDEN_KEYS = frozenset({"turn_id", "trace", "schema_version"})
"""State keys a diff leaves out: they differ between any two runs (the path says what ``trace`` says)."""


class DebugInputError(ValueError):
    """A fork or replay request that cannot be run as asked (the API answers 400 with this message)."""


class DebugNotFound(LookupError):
    """A checkpoint, fork, conversation or bot that does not exist for the caller (the API answers 404)."""


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; anything else becomes its ``repr``."""
    return msgspec.to_builtins(value, enc_hook=repr, str_keys=True)


def graph_nodes(graph: CompiledStateGraph[Any, Any, Any, Any]) -> list[str]:
    """The nodes of a compiled graph a breakpoint may name (every node but LangGraph's ``__start__``)."""
    return [name for name in graph.nodes if not name.startswith("__")]


def check_nodes(graph: CompiledStateGraph[Any, Any, Any, Any], field: str, names: Sequence[str]) -> list[str]:
    """``names`` if each is a node of ``graph``; else :class:`DebugInputError` naming the unknown ones."""
    known = graph_nodes(graph)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DebugInputError(
            f"{field}: unknown node(s) {', '.join(repr(n) for n in unknown)}; the graph's nodes are {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def state_keys(graph: CompiledStateGraph[Any, Any, Any, Any]) -> dict[str, Any]:
    """The fields of the graph's state schema with their types."""
    schema = graph.builder.state_schema
    try:
        return typing.get_type_hints(schema, include_extras=True)
    except Exception:  # noqa: BLE001 - a plugin's schema we cannot introspect: its channels, untyped
        return {name: Any for name in graph.channels if not name.startswith(("__", "branch:"))}


def check_state_edits(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    edits: Mapping[str, Any],
    *,
    field: str = "state",
    reset_by_turn: bool = False,
) -> dict[str, Any]:
    """``edits`` if they fit the graph's state schema; else :class:`DebugInputError` saying what is wrong.

    With ``reset_by_turn``, keys the turn's input sets afresh (``intent``, ``replies``, ...) are
    refused: an edit of them before the turn would be overwritten at once. Edit them at a breakpoint.
    """
    size = len(msgspec.json.encode(edits))
    if size > MAX_STATE_BYTES:
        raise DebugInputError(f"{field}: {size} bytes of JSON, more than the {MAX_STATE_BYTES} a state edit may have")
    keys = state_keys(graph)
    unknown = sorted(k for k in edits if k not in keys)
    if unknown:
        raise DebugInputError(
            f"{field}: unknown state field(s) {', '.join(unknown)}; the state's fields are {', '.join(sorted(keys))}"
        )
    if reset_by_turn:
        reset = sorted(k for k in edits if k in TurnInput.__annotations__)
        if reset:
            raise DebugInputError(
                f"{field}: {', '.join(reset)} are set afresh by the turn's input, so an edit before the turn is lost; "
                "pause at a breakpoint (break_after) and send the edit with continue"
            )
    schema = graph.builder.state_schema
    try:
        msgspec.convert(dict(edits), schema, strict=True)
    except msgspec.ValidationError as exc:
        raise DebugInputError(f"{field}: {exc}".replace(" - at `$.", " - at `")) from None
    except TypeError:
        pass  # a plugin's state schema msgspec cannot check: LangGraph's reducers see the values as sent
    return dict(edits)


async def dry_context(services: Services, bot: Bot, conversation: Conversation) -> TurnContext:
    """The context of a debug turn of ``conversation`` by ``bot``: its current plugins, ``dry_run`` set."""
    ctx = await services.runner.context(bot, conversation)
    return dataclasses.replace(ctx, dry_run=True)


def interrupt_notice(interrupts: Iterable[Any]) -> str | None:
    """The handover notice of an ``escalate`` pause (what the runner sends the end user), if any."""
    for item in interrupts:
        value = getattr(item, "value", None)
        if isinstance(value, dict) and isinstance(value.get("notice"), str):
            return str(value["notice"])
    return None


def turn_summary(values: Mapping[str, Any], interrupts: Sequence[Any] = ()) -> dict[str, Any]:
    """What a turn did, as forks and replays compare it: ``replies``, ``intent``, ``path`` (nodes run), ``escalated``.

    A turn that paused in ``escalate`` for a person has that node at the end of its path and the
    handover notice (what the end user got) after its replies, as the runner sends them.
    """
    replies = [str(t) for t in values.get("replies") or [] if t]
    path = [str(step.get("node")) for step in values.get("trace") or [] if isinstance(step, dict)]
    notice = interrupt_notice(interrupts)
    escalated = notice is not None
    if escalated:
        replies.append(notice or "")
        if not path or path[-1] != "escalate":
            path.append("escalate")
    return {"replies": replies, "intent": values.get("intent"), "path": path, "escalated": escalated}


TIMINGS = frozenset({"ms"})
"""Fields of recorded steps that measure time (a tool result's ``ms``): never the same twice, left out of diffs."""


def _comparable(value: Any) -> Any:
    """``value`` as JSON, without timings in the dicts of a list (tool results)."""
    plain = jsonable(value)
    if isinstance(plain, list):
        return [{k: v for k, v in i.items() if k not in TIMINGS} if isinstance(i, dict) else i for i in plain]
    return plain


def state_diff(original: Mapping[str, Any] | None, changed: Mapping[str, Any]) -> dict[str, Any]:
    """Every state field whose value differs, as ``{"field": {"original": ..., "fork": ...}}``."""
    before = original or {}
    out: dict[str, Any] = {}
    for key in sorted(set(before) | set(changed)):
        if key in HIDDEN_KEYS:
            continue
        a, b = _comparable(before.get(key)), _comparable(changed.get(key))
        if a != b:
            out[key] = {"original": a, "fork": b}
    return out


__all__ = [
    "MAX_BREAKPOINTS",
    "MAX_STATE_BYTES",
    "DebugInputError",
    "DebugNotFound",
    "check_nodes",
    "check_state_edits",
    "dry_context",
    "graph_nodes",
    "jsonable",
    "state_diff",
    "turn_summary",
]
