"""The nodes of the ``turn`` graph and its routers.

Each node is a small ``async def node(state, runtime) -> dict`` returning a
partial update, plus one :class:`~botloom.graphs.state.TraceStep` so the turn's
checkpoint says what every step did and how long it took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from botloom.graphs.context import TurnContext
from botloom.graphs.engines import DEFAULT_ESCALATION_NOTICE, KNOWLEDGE_INTENT, missing_slot
from botloom.graphs.state import ChatMessage, PassageRef, ToolResult, TraceStep, TurnState, user_text
from botloom.graphs.tools import run_tool

logger = logging.getLogger(__name__)

Update = dict[str, Any]

KNOWLEDGE_PLUGIN = "knowledge"
"""The plugin a bot enables to have its knowledge base searched on every turn (and by its tools)."""


def _step(node: str, began: float, summary: str) -> list[TraceStep]:
    return [TraceStep(node=node, ms=round((time.perf_counter() - began) * 1000, 3), summary=summary)]


async def retrieve(state: TurnState, runtime: Runtime[TurnContext]) -> Update:
    """Search the bot's knowledge base for the user's message, if the bot enabled the knowledge plugin."""
    began = time.perf_counter()
    ctx = runtime.context
    if ctx.search is None:  # the runner gives a search only to a bot that enabled the knowledge plugin
        return {"passages": [], "trace": _step("retrieve", began, "no knowledge base enabled")}
    try:
        found = await asyncio.wait_for(ctx.search(user_text(state), ctx.passages), ctx.tool_timeout)
    except Exception as exc:  # noqa: BLE001 - retrieval failing must not fail the turn
        error = f"knowledge search failed: {type(exc).__name__}: {exc}"
        logger.warning(error)
        return {"passages": [], "errors": [error], "trace": _step("retrieve", began, error)}
    passages = [
        PassageRef(id=p.chunk_id, document=p.document, title=p.title, text=p.text, score=round(p.score, 4))
        for p in found
    ]
    summary = ", ".join(f"{p['document']} ({p['score']:.2f})" for p in passages) or "nothing found"
    return {"passages": passages, "trace": _step("retrieve", began, summary)}


async def classify(state: TurnState, runtime: Runtime[TurnContext]) -> Update:
    """Pick the intent, its confidence and slots; decide whether policy calls for a person."""
    began = time.perf_counter()
    ctx = runtime.context
    result = await ctx.engine.classify(state, ctx)
    update: Update = {"intent": result.intent, "confidence": result.confidence, "slots": result.slots}
    update["candidates"] = result.candidates
    update["model_calls"] = list(result.model_calls)
    if result.passages is not None:  # the engine chose another passage, or searched again (a follow-up)
        update["passages"] = result.passages
    settings = ctx.bot.settings
    if result.wants_human:
        update["escalation_reason"] = result.escalation_reason or "the user asked for a person"
    elif result.intent is None and state.get("failures", 0) + 1 >= settings.max_failures_before_escalation:
        update["escalation_reason"] = (
            f"no answer for {state.get('failures', 0) + 1} turns in a row "
            f"(confidence {result.confidence:.2f} < {settings.escalation_threshold:.2f})"
        )
    summary = f"intent={result.intent} confidence={result.confidence:.2f}"
    if result.slots:
        summary += " slots=" + ",".join(f"{k}={v}" for k, v in result.slots.items())
    if "escalation_reason" in update:
        summary += f" escalate: {update['escalation_reason']}"
    update["trace"] = _step("classify", began, summary)
    return update


async def after_classify(state: TurnState, runtime: Runtime[TurnContext]) -> Literal["act", "respond", "escalate"]:
    """Route to ``escalate`` for a person, ``act`` when the intent has tools to run, else ``respond``."""
    ctx = runtime.context
    intent = ctx.intents.get(state.get("intent") or "")
    if state.get("escalation_reason") or (intent is not None and intent.escalate):
        return "escalate"
    if intent is not None and intent.tools and missing_slot(intent, state.get("slots") or {}) is None:
        return "act"
    return "respond"


async def act(state: TurnState, runtime: Runtime[TurnContext]) -> Update:
    """Run the intent's tools with the filled slots as arguments."""
    began = time.perf_counter()
    ctx = runtime.context
    intent = ctx.intents[state.get("intent") or ""]
    slots = state.get("slots") or {}
    results: list[ToolResult] = []
    for index, name in enumerate(intent.tools):
        tool = ctx.tools.get(name)
        accepted = set(tool.arguments.__struct_fields__) if tool is not None else set()
        arguments = {k: v for k, v in slots.items() if k in accepted}
        results.append(await run_tool(ctx, name, arguments, f"{state.get('turn_id', '')}:act:{index}"))
    errors = [f"tool {r['tool']}: {r['error']}" for r in results if not r.get("ok")]
    summary = ", ".join(f"{r['tool']}={'ok' if r.get('ok') else 'failed'}" for r in results) or "no tools"
    return {"tool_results": results, "errors": errors, "trace": _step("act", began, summary)}


async def respond(state: TurnState, runtime: Runtime[TurnContext]) -> Update:
    """Write the answer; count consecutive turns the bot could not answer."""
    began = time.perf_counter()
    ctx = runtime.context
    errors = list(state.get("errors") or [])
    calls: list[dict[str, Any]] = []
    try:
        reply = await ctx.engine.respond(state, ctx)
    except Exception as exc:  # noqa: BLE001 - a failing model or plugin gets the fallback
        logger.warning("respond failed: %s: %s", type(exc).__name__, exc)
        errors.append(f"respond failed: {type(exc).__name__}: {exc}")
        text, answered, pending, extra = ctx.bot.settings.fallback_reply, False, None, []
    else:
        text, answered, pending, extra = reply.text, reply.answered, reply.pending_intent, reply.tool_results
        errors.extend(reply.errors)
        calls = reply.model_calls
    update: Update = {
        "replies": [text],
        "messages": [ChatMessage(role="assistant", content=text)],
        "pending_intent": pending,
        "failures": 0 if answered else state.get("failures", 0) + 1,
        "errors": errors,
        "escalated": False,
        "trace": _step("respond", began, ("answered" if answered else "fallback") + f": {text[:80]}"),
    }
    if extra:
        update["tool_results"] = list(state.get("tool_results") or []) + extra
    if calls:
        update["model_calls"] = list(state.get("model_calls") or []) + calls
    return update


async def escalate(state: TurnState, runtime: Runtime[TurnContext]) -> Update:
    """Hand the conversation to a person: pause until an agent answers or hands it back.

    The pause is a LangGraph ``interrupt`` whose value carries the reason, the notice and a
    :func:`summary` for the agent; the agent's action resumes it with
    ``Command(resume={"action": "reply" | "handback", "text": ..., "agent": ..., "note": ...})``.
    A reply keeps the conversation with the agent (the graph pauses again); a hand-back
    returns it to the bot, keeping the agent's note in the state (``agent_note``) for the
    turns that follow.
    """
    began = time.perf_counter()
    ctx = runtime.context
    intent = ctx.intents.get(state.get("intent") or "")
    notice = (intent.answer if intent is not None and intent.escalate and intent.answer else None) or (
        DEFAULT_ESCALATION_NOTICE
    )
    reason = state.get("escalation_reason") or "the user asked for a person"
    decision = interrupt(
        {"reason": reason, "notice": notice, "conversation_id": ctx.conversation_id, "summary": summary(state, reason)}
    )
    action = decision.get("action", "reply") if isinstance(decision, dict) else "reply"
    text = str(decision.get("text") or "") if isinstance(decision, dict) else str(decision)
    agent = decision.get("agent", "agent") if isinstance(decision, dict) else "agent"
    note = decision.get("note") if isinstance(decision, dict) else None
    update: Update = {
        "replies": [text] if text else [],
        "escalated": action != "handback",
        "failures": 0,
        "pending_intent": None,
        "trace": _step("escalate", began, f"{agent}: {action}" + (f": {text[:80]}" if text else "")),
    }
    if text:
        update["messages"] = [ChatMessage(role="assistant", content=text)]
    if action == "handback":
        update["escalation_reason"] = None
        update["intent"] = state.get("intent") if state.get("intent") != KNOWLEDGE_INTENT else None
        update["agent_note"] = str(note)[:NOTE_LIMIT] if note else None
    return update


NOTE_LIMIT = 4000
"""The longest agent's note the state keeps (the desk's API refuses longer ones)."""
SUMMARY_MESSAGES = 10
"""How many of the last messages the handover's summary carries."""


def summary(state: TurnState, reason: str) -> dict[str, Any]:
    """What the agent who takes the conversation is told: why, what the user wants, what the bot knew."""
    return {
        "reason": reason,
        "intent": state.get("intent"),
        "confidence": round(float(state.get("confidence") or 0.0), 3),
        "slots": dict(state.get("slots") or {}),
        "last_messages": [dict(m) for m in (state.get("messages") or [])[-SUMMARY_MESSAGES:]],
        "knowledge": [
            {"document": p["document"], "title": p["title"], "score": p["score"], "text": p["text"][:500]}
            for p in state.get("passages") or []
        ],
        "tool_results": [
            {"tool": r.get("tool"), "ok": r.get("ok"), "error": r.get("error")} for r in state.get("tool_results") or []
        ],
    }


async def after_escalate(state: TurnState) -> Literal["escalate", "__end__"]:
    """Wait for the agent's next action while the conversation is with a person."""
    return "escalate" if state.get("escalated") else "__end__"
