"""The state of the ``turn`` graph, with its reducers.

State holds plain dicts and lists, not LangChain message objects: they
serialize 20–28 times faster, and a checkpoint stays small. The conversation's
full transcript lives in the messages table; the state keeps only a window of
recent messages, so a turn costs the same at message 10 and message 10,000.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

STATE_VERSION = 2
"""The ``turn`` graph's state version: what its ``GraphDefinition.state_version`` is built with (``graphs/turn.py``).

Bumped when the shape of the state changes, with a migration from the previous version
(:func:`migrate_v1`). Nothing else reads it: the runner asks the bot's graph definition
(see ``docs/graphs.md#state-versions``)."""

HISTORY_WINDOW = 20
"""How many recent messages the state keeps for context."""


class ChatMessage(TypedDict):
    """One message of the recent history."""

    role: Literal["user", "assistant"]
    content: str


class PassageRef(TypedDict):
    """A knowledge passage the ``retrieve`` step found, as the debugger shows it."""

    id: str
    document: str
    title: str
    text: str
    score: float


class ToolResult(TypedDict, total=False):
    """One tool call of the turn: what was asked and what came back (or what went wrong)."""

    tool: str
    arguments: dict[str, Any]
    ok: bool
    result: Any
    error: str
    ms: float


class UserMessage(TypedDict):
    """The user's message of this turn.

    A dict, not a bare string, so that the Postgres checkpointer stores it through
    the (optionally encrypting) serializer instead of inline in its JSON column.
    """

    text: str


class TraceStep(TypedDict):
    """What one node did in the turn: the debugger reads these from the turn's checkpoint."""

    node: str
    ms: float
    summary: str


def keep_recent(old: list[ChatMessage] | None, new: list[ChatMessage] | None) -> list[ChatMessage]:
    """Append new messages and keep only the last :data:`HISTORY_WINDOW`."""
    merged = (old or []) + (new or [])
    return merged[-HISTORY_WINDOW:]


def trace_steps(old: list[TraceStep] | None, new: list[TraceStep] | None) -> list[TraceStep]:
    """Append trace steps; ``None`` (sent with each turn's input) starts a new turn's trace."""
    if new is None:
        return []
    return (old or []) + new


class TurnState(TypedDict, total=False):
    """Everything the ``turn`` graph knows about a conversation between two of its steps."""

    schema_version: int
    """The version of this state's shape, stamped by the runner from the graph's definition into every
    turn's input and after each migration: the version of the checkpoint it is stored in."""
    messages: Annotated[list[ChatMessage], keep_recent]
    """Recent history, user and assistant, oldest first (bounded)."""
    turn_id: str
    """Id of the turn in progress; the same id when a crashed turn is re-run."""
    user: UserMessage
    """The (moderated) message of this turn."""
    passages: list[PassageRef]
    """What ``retrieve`` found for this turn, best first."""
    intent: str | None
    confidence: float
    candidates: list[dict[str, Any]]
    """The engine's top few candidates of this turn, best first: ``{"intent", "confidence"}`` (and ``"document"``
    for a knowledge passage), for the debugger."""
    slots: dict[str, str]
    pending_intent: str | None
    """An intent waiting for a required slot the bot asked for in the previous turn."""
    tool_results: list[ToolResult]
    replies: list[str]
    """The bot's answers of this turn, in order."""
    escalated: bool
    """The graph's own routing: ``escalate`` pauses again while this is true. Not read outside the graph:
    whether a conversation is with a person is its row's status (``docs/graphs.md#handover``)."""
    escalation_reason: str | None
    """Why ``classify`` routed to ``escalate``; the pause hands it to the agent as the handover's reason."""
    failures: int
    """Consecutive turns the bot could not answer."""
    agent_note: str | None
    """The note of the agent who last handed the conversation back to the bot (the agent desk's release):
    the bot answers with it in context (the language-model engine puts it in its system prompt)."""
    errors: list[str]
    """Plugin and model failures of this turn (the end user got the fallback)."""
    model_calls: list[dict[str, Any]]
    """The language model's calls of this turn, in order, for the debugger: ``node``, ``model``, ``prompt``
    (the messages sent, each text cut at 2,000 characters), ``prompt_tokens``, ``completion_tokens``, ``ms``."""
    trace: Annotated[list[TraceStep], trace_steps]


class TurnInput(TypedDict, total=False):
    """What the runner passes in to start a turn: the per-turn fields, reset."""

    schema_version: int
    messages: list[ChatMessage]
    turn_id: str
    user: UserMessage
    passages: list[PassageRef]
    intent: str | None
    confidence: float
    candidates: list[dict[str, Any]]
    slots: dict[str, str]
    tool_results: list[ToolResult]
    replies: list[str]
    errors: list[str]
    model_calls: list[dict[str, Any]]
    escalation_reason: str | None
    trace: list[TraceStep] | None


def migrate_v1(values: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the user's text as a bare string, ``user_text``; version 2 keeps ``user: {"text"}``."""
    upgraded = {k: v for k, v in values.items() if k != "user_text"}
    upgraded["user"] = UserMessage(text=str(values.get("user_text") or ""))
    upgraded["schema_version"] = 2
    return upgraded


def user_text(state: TurnState) -> str:
    """The text of the turn's user message."""
    user = state.get("user")
    return user.get("text", "") if user else ""


def turn_input(turn_id: str, text: str, *, version: int = STATE_VERSION) -> TurnInput:
    """The input that starts a turn for the user's ``text``, stamped with the graph's state ``version``."""
    return TurnInput(
        schema_version=version,
        messages=[ChatMessage(role="user", content=text)],
        turn_id=turn_id,
        user=UserMessage(text=text),
        passages=[],
        intent=None,
        confidence=0.0,
        candidates=[],
        slots={},
        tool_results=[],
        replies=[],
        errors=[],
        model_calls=[],
        escalation_reason=None,
        trace=None,
    )
