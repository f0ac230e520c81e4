"""Replay: re-run a stored conversation's user messages against a bot's current graph, plugins and settings.

The messages are run in order on a throwaway thread (an in-memory checkpointer, so
nothing of the replay is stored), with a dry-run context (nothing is delivered,
tools see ``ToolContext.dry_run``). Each turn's outcome (``replies``, ``intent``,
``path``) is set beside the original's, read from the turn's first checkpoint (what
the bot did before any person took over).

Two modes:

* ``deterministic``: what was recorded in the original turns' checkpoints is used
  again instead of calling out: the passages ``retrieve`` found, the results of the
  tools ``act`` and the model ran, and, when the deployment answers with a language
  model, the model's classification (intent, confidence, slots) and its reply. What
  can still change is botloom's own logic and the bot's: routing, thresholds, slot
  questions, templates, the offline engine's classification. The recorded outputs go
  in through the :class:`~botloom.graphs.context.TurnContext` the nodes already read
  (:class:`RecordedEngine`, :func:`recorded_tools`, :func:`recorded_search`), so the
  graph runs unchanged.
* ``live``: the model and the tools are called again (tools with ``dry_run`` set).

The same loop (:func:`replay_turns`) runs the golden tests exported by
:mod:`botloom.runtime.golden`, with no database at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from botloom.core.definitions import Tool
from botloom.core.domain import Bot, Conversation
from botloom.core.host import PluginHost
from botloom.graphs.context import SearchFn, TurnContext
from botloom.graphs.engines import Classification, Engine, OfflineEngine, Reply, missing_slot, slot_question
from botloom.graphs.state import TurnState, turn_input
from botloom.runtime.debug_runs import DebugNotFound, dry_context, jsonable, turn_summary
from botloom.runtime.services import Services
from botloom.runtime.turn_context import thread_config

ReplayMode = Literal["deterministic", "live"]

MAX_REPLAY_TURNS = 200
"""How many turns one replay runs at most (the first ones); the answer says when it stopped short."""

ANSWERED_INBOUND = frozenset({"answered", "failed", "merged"})
"""Inbound statuses of messages a turn of the graph answered (held, refused and rejected ones had none)."""

ASKED_FOR_PERSON = "the user asked for a person"


@dataclass
class RecordedTurn:
    """One turn of a stored conversation: its user message and what the bot's run of it recorded."""

    index: int
    input: str
    turn_id: str | None = None
    recorded: bool = False
    """Whether the turn's checkpoint was found (else only its stored replies are known)."""
    intent: str | None = None
    confidence: float = 0.0
    slots: dict[str, str] = field(default_factory=dict)
    escalation_reason: str | None = None
    passages: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    """The turn's replies as the graph wrote them (and the handover notice, when it escalated)."""
    path: list[str] | None = None
    escalated: bool = False
    answered: bool = True
    """False when the bot fell back (``respond`` counted a failure)."""

    def summary(self) -> dict[str, Any]:
        """``replies``, ``intent``, ``path`` as the replay compares them."""
        return {"replies": list(self.replies), "intent": self.intent, "path": self.path}

    def to_dict(self) -> dict[str, Any]:
        """The turn as plain JSON (what a golden test file embeds)."""
        out: dict[str, Any] = jsonable(
            {
                "index": self.index,
                "input": self.input,
                "turn_id": self.turn_id,
                "recorded": self.recorded,
                "intent": self.intent,
                "confidence": self.confidence,
                "slots": self.slots,
                "escalation_reason": self.escalation_reason,
                "passages": self.passages,
                "tool_results": self.tool_results,
                "replies": self.replies,
                "path": self.path,
                "escalated": self.escalated,
                "answered": self.answered,
            }
        )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedTurn:
        """A turn from :meth:`to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def recorded_turn(
    index: int, text: str, turn_id: str | None, values: Mapping[str, Any], interrupts: Sequence[Any]
) -> RecordedTurn:
    """A turn from the channel values of its first checkpoint (and the ``escalate`` pause's interrupts)."""
    summary = turn_summary(values, interrupts)
    return RecordedTurn(
        index=index,
        input=text,
        turn_id=turn_id,
        recorded=True,
        intent=values.get("intent"),
        confidence=float(values.get("confidence") or 0.0),
        slots={str(k): str(v) for k, v in (values.get("slots") or {}).items()},
        escalation_reason=values.get("escalation_reason"),
        passages=jsonable(list(values.get("passages") or [])),
        tool_results=jsonable(list(values.get("tool_results") or [])),
        replies=summary["replies"],
        path=summary["path"],
        escalated=summary["escalated"],
        answered=int(values.get("failures") or 0) == 0,
    )


async def record_conversation(
    services: Services, bot: Bot, conversation: Conversation, *, limit: int = MAX_REPLAY_TURNS
) -> tuple[list[RecordedTurn], bool]:
    """The conversation's turns in order (at most ``limit``), and whether there were more.

    The user messages come from the messages table (a burst merged into one turn is one
    input, its lines joined as the runner joins them); what each turn did from its first
    checkpoint in the conversation's thread, when retention kept it.
    """
    messages = await services.store.messages.list_all(conversation.tenant_id, conversation.id, limit=limit * 8 + 8)
    order: list[str] = []
    texts: dict[str, list[str]] = {}
    replies: dict[str, list[str]] = {}
    for message in messages:
        if message.turn_id is None:
            continue
        if message.direction == "inbound" and message.status in ANSWERED_INBOUND:
            if message.turn_id not in texts:
                order.append(message.turn_id)
                texts[message.turn_id] = []
            texts[message.turn_id].append(message.text)
        elif message.direction == "outbound":
            replies.setdefault(message.turn_id, []).append(message.text)
    truncated = len(order) > limit
    order = order[:limit]
    firsts: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    saver = services.graphs.checkpointer
    if saver is not None:
        config: Any = {"configurable": {**thread_config(bot, conversation.id)["configurable"], "checkpoint_ns": ""}}
        wanted = set(order)
        async for item in saver.alist(config):  # newest first: the first turns come last
            values = item.checkpoint["channel_values"]
            turn = values.get("turn_id")
            if turn in wanted:  # newest first: the last one seen of a turn is its first
                writes = item.pending_writes or []
                interrupts = [v for _, channel, value in writes if channel == "__interrupt__" for v in _listed(value)]
                firsts[str(turn)] = (dict(values), interrupts)
    turns: list[RecordedTurn] = []
    for index, turn_id in enumerate(order):
        text = "\n".join(texts[turn_id])
        if turn_id in firsts:
            values, interrupts = firsts[turn_id]
            turns.append(recorded_turn(index, text, turn_id, values, interrupts))
        else:
            turns.append(RecordedTurn(index=index, input=text, turn_id=turn_id, replies=replies.get(turn_id, [])))
    return turns, truncated


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# -- the recorded outputs, through the turn context ---------------------------------


class RecordedToolError(RuntimeError):
    """A tool's recorded failure, or a call the recording has no result for."""


class UnrecordedToolCall(RecordedToolError):
    """A call the recording has no result for (the original turn did not make it, or its checkpoint is gone)."""

    def __init__(self, tool: str, arguments: Mapping[str, Any]) -> None:
        super().__init__(f"deterministic replay: no recorded result of {tool} with arguments {jsonable(arguments)}")
        self.tool = tool


class RecordedEngine:
    """An engine that answers with a turn's recorded model outputs (see the module docstring).

    With ``model=False`` (the deployment answers without a model) it is the ``inner``
    engine itself: the offline engine is botloom's own logic, replayed for real.
    With ``model=True`` the recorded classification and reply are given back, with
    botloom's own slot questions asked as the model engine asks them.
    """

    def __init__(self, inner: Engine, turn: RecordedTurn, *, model: bool) -> None:
        self.inner = inner
        self.turn = turn
        self.model = model and turn.recorded

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """The recorded classification (or the inner engine's, without a model)."""
        if not self.model:
            return await self.inner.classify(state, ctx)
        return Classification(
            intent=self.turn.intent,
            confidence=self.turn.confidence,
            slots=dict(self.turn.slots),
            wants_human=self.turn.escalation_reason == ASKED_FOR_PERSON,
        )

    async def respond(self, state: TurnState, ctx: TurnContext) -> Reply:
        """The recorded reply (or the inner engine's, without a model)."""
        if not self.model:
            return await self.inner.respond(state, ctx)
        intent = ctx.intents.get(state.get("intent") or "")
        if intent is not None:
            missing = missing_slot(intent, state.get("slots") or {})
            if missing is not None:
                return Reply(text=slot_question(intent, missing), answered=True, pending_intent=intent.name)
        ran = len(state.get("tool_results") or [])
        extra: list[Any] = [dict(r) for r in self.turn.tool_results[ran:]]
        replies = [r for r in self.turn.replies if r]
        if self.turn.escalated and replies:
            replies = replies[:-1]  # the handover notice is escalate's, not respond's
        text = replies[0] if replies else ctx.bot.settings.fallback_reply
        return Reply(text=text, answered=self.turn.answered and bool(replies), tool_results=extra)


def recorded_tools(tools: Mapping[str, Tool], results: Sequence[Mapping[str, Any]]) -> dict[str, Tool]:
    """``tools`` whose handlers give back the recorded ``results`` (each once, matched by name and arguments)."""
    pool = [dict(r) for r in results]

    def shim(tool: Tool) -> Tool:
        def normal(arguments: Any) -> Any:
            try:
                return msgspec.structs.asdict(msgspec.convert(dict(arguments or {}), tool.arguments, strict=False))
            except (msgspec.ValidationError, TypeError):
                return arguments

        async def handler(**arguments: Any) -> Any:
            for position, result in enumerate(pool):
                if result.get("tool") == tool.name and normal(result.get("arguments")) == arguments:
                    pool.pop(position)
                    if result.get("ok"):
                        return result.get("result")
                    raise RecordedToolError(str(result.get("error") or "failed"))
            raise UnrecordedToolCall(tool.name, arguments)

        return msgspec.structs.replace(tool, handler=handler, wants_context=False)

    return {name: shim(tool) for name, tool in tools.items()}


@dataclass(frozen=True)
class RecordedPassage:
    """A recorded knowledge passage, with the attributes the ``retrieve`` node reads."""

    chunk_id: str
    document: str
    title: str
    text: str
    score: float


def recorded_search(passages: Sequence[Mapping[str, Any]]) -> SearchFn:
    """A knowledge search that finds the recorded ``passages`` whatever it is asked."""
    found = [
        RecordedPassage(
            chunk_id=str(p.get("id", "")),
            document=str(p.get("document", "")),
            title=str(p.get("title", "")),
            text=str(p.get("text", "")),
            score=float(p.get("score", 0.0)),
        )
        for p in passages
    ]

    async def search(query: str, limit: int) -> list[Any]:
        return list(found[:limit])

    return search


def deterministic_context(ctx: TurnContext, turn: RecordedTurn, *, model: bool) -> TurnContext:
    """``ctx`` with the turn's recorded outputs in place of the model, the tools and the knowledge search."""
    import dataclasses

    return dataclasses.replace(
        ctx,
        engine=RecordedEngine(ctx.engine, turn, model=model),
        tools=recorded_tools(ctx.tools, turn.tool_results),
        search=recorded_search(turn.passages) if ctx.search is not None else None,
        record_usage=None,
        dry_run=True,
    )


# -- the loop -----------------------------------------------------------------------


def throwaway_graph(host: PluginHost, graph_name: str) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph ``graph_name`` compiled afresh with an in-memory checkpointer (nothing of a replay is stored)."""
    definition = host.registry.graphs.get(graph_name)
    if definition is None:
        known = ", ".join(sorted(host.registry.graphs)) or "none"
        raise DebugNotFound(f"no graph named {graph_name!r} is registered (known: {known})")
    compiled: CompiledStateGraph[Any, Any, Any, Any] = definition.build().compile(
        checkpointer=InMemorySaver(), name=graph_name
    )
    return compiled


def compare(index: int, turn: RecordedTurn, replayed: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    """One turn of a replay's answer: the original's and the replay's outcome, and which of them differ."""
    original = turn.summary()
    differs = [k for k in ("replies", "intent", "path") if original[k] is not None and original[k] != replayed[k]]
    if not turn.recorded:  # only the stored replies are known: the intent is not compared
        differs = [key for key in differs if key == "replies"]
    out: dict[str, Any] = {
        "index": index,
        "input": turn.input,
        "recorded": turn.recorded,
        "original": original,
        "replayed": {k: replayed[k] for k in ("replies", "intent", "path")},
        "same": not differs and error is None,
        "differs": differs,
    }
    if error is not None:
        out["error"] = error
    return out


async def replay_turns(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    turns: Sequence[RecordedTurn],
    context_for: Callable[[RecordedTurn], Awaitable[TurnContext]],
    *,
    version: int,
) -> list[dict[str, Any]]:
    """Run each turn's input in order on a fresh thread of ``graph``; each turn compared (:func:`compare`).

    A replay paused in ``escalate`` (the conversation went to a person) is handed back
    to the bot before the next turn, as the agent did when the conversation went on.
    """
    config: Any = {"configurable": {"thread_id": f"replay:{uuid.uuid4()}"}}
    results: list[dict[str, Any]] = []
    for turn in turns:
        ctx = await context_for(turn)
        error: str | None = None
        try:
            snapshot = await graph.aget_state(config)
            if snapshot.interrupts:
                await graph.ainvoke(Command(resume={"action": "handback", "agent": "replay"}), config, context=ctx)
            turn_id = turn.turn_id or f"replay:{turn.index}"
            await graph.ainvoke(turn_input(turn_id, turn.input, version=version), config, context=ctx)
            snapshot = await graph.aget_state(config)
            replayed = turn_summary(dict(snapshot.values), list(snapshot.interrupts or ()))
        except Exception as exc:  # noqa: BLE001 - a failing turn is a difference to show, not a crash
            error = f"{type(exc).__name__}: {exc}"
            replayed = {"replies": [], "intent": None, "path": [], "escalated": False}
        results.append(compare(turn.index, turn, replayed, error))
    return results


@dataclass
class ReplayReport:
    """A replay's answer: each turn beside the original, and how many differ."""

    conversation_id: str
    bot_id: str
    mode: ReplayMode
    turns: list[dict[str, Any]]
    truncated: bool = False

    @property
    def differences(self) -> int:
        """How many turns differ."""
        return sum(1 for t in self.turns if not t["same"])


def uses_model(engine: Engine) -> bool:
    """Whether the deployment's engine calls a language model (whose outputs a deterministic replay reuses)."""
    return not isinstance(engine, OfflineEngine)


async def replay_conversation(
    services: Services,
    bot: Bot,
    conversation: Conversation,
    *,
    mode: ReplayMode = "deterministic",
    target: Bot | None = None,
) -> ReplayReport:
    """Replay ``conversation`` (of ``bot``) against ``target`` (by default ``bot`` itself) in ``mode``."""
    target = target or bot
    graph = throwaway_graph(services.host, target.graph)
    turns, truncated = await record_conversation(services, bot, conversation)
    base = await dry_context(services, target, conversation)
    model = uses_model(services.engine)

    async def context_for(turn: RecordedTurn) -> TurnContext:
        if mode == "live":
            return base
        return deterministic_context(base, turn, model=model)

    results = await replay_turns(graph, turns, context_for, version=services.runner.state_version(target))
    return ReplayReport(
        conversation_id=conversation.id, bot_id=target.id, mode=mode, turns=results, truncated=truncated
    )


__all__ = [
    "MAX_REPLAY_TURNS",
    "RecordedEngine",
    "RecordedTurn",
    "ReplayMode",
    "ReplayReport",
    "UnrecordedToolCall",
    "deterministic_context",
    "record_conversation",
    "recorded_search",
    "recorded_tools",
    "replay_conversation",
    "replay_turns",
    "throwaway_graph",
]
