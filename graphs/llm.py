"""The language-model engine: ``langchain-openai`` against any OpenAI-compatible endpoint.

It classifies with structured output, may call the bot's enabled tools for a
bounded number of steps, and writes the answer in the bot's persona from the
retrieved passages and tool results. When the model fails (after the client's
own retries) classification falls back to the offline engine and the answer to
the bot's fallback reply, so a model outage never takes a conversation down.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from botloom.core.domain import Bot, UsageEvent
from botloom.core.settings import Settings
from botloom.graphs.context import TurnContext
from botloom.graphs.engines import (
    KNOWLEDGE_INTENT,
    Classification,
    OfflineEngine,
    Reply,
    missing_slot,
    slot_question,
)
from botloom.graphs.state import ToolResult, TurnState
from botloom.graphs.tools import run_tool

logger = logging.getLogger(__name__)

NONE_INTENT = "none"
PROMPT_TEXT_LIMIT = 2000
"""Characters of each prompt message kept in a turn's ``model_calls`` (the debugger's view of a call)."""


def _cut(content: Any) -> str:
    """A prompt message's text as the debugger keeps it: a string, cut at :data:`PROMPT_TEXT_LIMIT`."""
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    return text if len(text) <= PROMPT_TEXT_LIMIT else text[:PROMPT_TEXT_LIMIT] + "…"


class LLMEngine:
    """Classifies and answers with a chat model (see the module docstring)."""

    def __init__(self, settings: Settings, offline: OfflineEngine | None = None) -> None:
        self.settings = settings
        self.offline = offline or OfflineEngine()
        self._clients: dict[tuple[str, float, int], ChatOpenAI] = {}
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close the HTTP connections of every client made."""
        self._clients.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def client(self, bot: Bot, *, temperature: float | None = None) -> ChatOpenAI:
        """The chat client for the bot's model settings (one per distinct setting, reused)."""
        model = bot.settings.model
        key = (
            model.model or self.settings.llm_model,
            model.temperature if temperature is None else temperature,
            model.max_tokens,
        )
        client = self._clients.get(key)
        if client is None:
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
            client = ChatOpenAI(
                http_async_client=self._http,
                model=key[0],
                temperature=key[1],
                max_completion_tokens=key[2],
                api_key=SecretStr(self.settings.openai_api_key or ""),
                base_url=self.settings.openai_base_url,
                max_retries=2,
                timeout=30,
            )
            self._clients[key] = client
        return client

    async def _usage(
        self, ctx: TurnContext, message: BaseMessage, model: str, began: float, *, node: str, prompt: list[BaseMessage]
    ) -> dict[str, Any]:
        """Record one model call's usage; the call as the debugger shows it (``TurnState.model_calls``)."""
        usage = getattr(message, "usage_metadata", None) or {}
        latency_ms = (time.perf_counter() - began) * 1000
        prompt_tokens = int(usage.get("input_tokens", 0))
        completion_tokens = int(usage.get("output_tokens", 0))
        if ctx.record_usage is not None:
            await ctx.record_usage(
                UsageEvent(
                    tenant_id=ctx.tenant_id,
                    bot_id=ctx.bot.id,
                    conversation_id=ctx.conversation_id,
                    kind="chat",
                    model=model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    latency_ms=latency_ms,
                )
            )
        return {
            "node": node,
            "model": model,
            "prompt": [{"role": m.type, "content": _cut(m.content)} for m in prompt],
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "ms": round(latency_ms, 3),
        }

    @staticmethod
    def _history(state: TurnState) -> list[BaseMessage]:
        out: list[BaseMessage] = []
        for message in state.get("messages") or []:
            cls = HumanMessage if message["role"] == "user" else AIMessage
            out.append(cls(content=message["content"]))
        return out

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """Structured output: the intent among the enabled ones, a confidence, slots, and whether a person is wanted."""
        names = sorted(ctx.intents)
        lines = []
        for intent in ctx.intents.values():
            examples = "; ".join(intent.examples[:5])
            slots = ", ".join(f"{s.name} ({s.description or 'text'})" for s in intent.slots)
            lines.append(
                f"- {intent.name}: {intent.description}"
                + (f" Examples: {examples}." if examples else "")
                + (f" Slots: {slots}." if slots else "")
            )
        if state.get("passages"):
            lines.append(f"- {KNOWLEDGE_INTENT}: a question the knowledge base can answer.")
            names.append(KNOWLEDGE_INTENT)
        schema = {
            "title": "classification",
            "description": "What the user wants in their latest message.",
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": [*names, NONE_INTENT]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "slots": {"type": "object", "additionalProperties": {"type": "string"}},
                "wants_human": {"type": "boolean"},
            },
            "required": ["intent", "confidence", "slots", "wants_human"],
        }
        pending = state.get("pending_intent")
        system = (
            "Classify the user's latest message into one of these intents, or 'none'.\n"
            + "\n".join(lines)
            + (f"\nThe bot has just asked the user for details of the intent '{pending}'." if pending else "")
            + "\nSet wants_human when the user asks for a person. Fill slots only with values the user gave."
        )
        client = self.client(ctx.bot, temperature=0)
        began = time.perf_counter()
        try:
            structured = client.with_structured_output(schema, method="json_schema", include_raw=True)
            prompt = [SystemMessage(content=system), *self._history(state)[-6:]]
            out = await structured.ainvoke(prompt)
        except Exception as exc:  # noqa: BLE001 - degrade to the offline engine
            logger.warning("classification by model failed, using the offline engine: %s", exc)
            return await self.offline.classify(state, ctx)
        calls = [await self._usage(ctx, out["raw"], client.model_name, began, node="classify", prompt=prompt)]
        parsed = out.get("parsed") or {}
        if not isinstance(parsed, dict):
            return await self.offline.classify(state, ctx)
        chosen = parsed.get("intent")
        intent_name: str | None = chosen if isinstance(chosen, str) else None
        if intent_name not in ctx.intents and intent_name != KNOWLEDGE_INTENT:
            intent_name = None
        filled = {str(k): str(v) for k, v in (parsed.get("slots") or {}).items() if v not in (None, "")}
        confidence = float(parsed.get("confidence") or 0.0)
        wants_human = bool(parsed.get("wants_human"))
        if wants_human:
            handoff = next((i.name for i in ctx.intents.values() if i.escalate), None)
            if handoff is not None:
                return Classification(intent=handoff, confidence=max(confidence, 0.9), slots={}, model_calls=calls)
        return Classification(
            intent=intent_name,
            confidence=min(max(confidence, 0.0), 1.0),
            slots=filled,
            wants_human=wants_human,
            model_calls=calls,
        )

    def _system_prompt(self, state: TurnState, ctx: TurnContext) -> str:
        parts = [ctx.bot.settings.persona]
        passages = state.get("passages") or []
        if passages:
            parts.append("Answer from this knowledge when it is relevant; do not invent facts:")
            parts.extend(f"[{p['document']} — {p['title']}] {p['text']}" for p in passages)
        results = state.get("tool_results") or []
        if results:
            parts.append("Results of the tools run for this message:")
            parts.extend(
                f"{r['tool']}: "
                + (json.dumps(r.get("result"), default=str) if r.get("ok") else f"failed: {r.get('error')}")
                for r in results
            )
        note = state.get("agent_note")
        if note:  # the agent desk: the person who handed the conversation back left this for the bot
            parts.append(f"A human agent handled this conversation and handed it back to you with this note:\n{note}")
        parts.append("If you cannot help, say so briefly and offer to connect the user with a person.")
        return "\n\n".join(parts)

    async def respond(self, state: TurnState, ctx: TurnContext) -> Reply:
        """Write the answer, letting the model call enabled tools up to ``max_tool_steps`` rounds."""
        intent = ctx.intents.get(state.get("intent") or "")
        if intent is not None:
            missing = missing_slot(intent, state.get("slots") or {})
            if missing is not None:
                return Reply(text=slot_question(intent, missing), answered=True, pending_intent=intent.name)
        client = self.client(ctx.bot)
        tools = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters_schema()},
            }
            for t in ctx.tools.values()
        ]
        steps = ctx.bot.settings.model.max_tool_steps if tools else 0
        messages: list[BaseMessage] = [SystemMessage(content=self._system_prompt(state, ctx)), *self._history(state)]
        results: list[ToolResult] = []
        made: list[dict[str, Any]] = []
        for step in range(steps + 1):
            model: Any = client.bind_tools(tools) if tools and step < steps else client
            began = time.perf_counter()
            sent = list(messages)
            answer = await model.ainvoke(messages)
            made.append(await self._usage(ctx, answer, client.model_name, began, node="respond", prompt=sent))
            calls = getattr(answer, "tool_calls", None) or []
            if not calls:
                text = answer.content if isinstance(answer.content, str) else str(answer.content)
                if not text.strip():
                    return Reply(
                        text=ctx.bot.settings.fallback_reply, answered=False, tool_results=results, model_calls=made
                    )
                return Reply(text=text.strip(), answered=True, tool_results=results, model_calls=made)
            messages.append(answer)
            for index, call in enumerate(calls):
                result = await run_tool(
                    ctx, call["name"], dict(call.get("args") or {}), f"{state.get('turn_id', '')}:llm:{step}:{index}"
                )
                results.append(result)
                content = json.dumps(
                    result.get("result") if result.get("ok") else {"error": result.get("error")}, default=str
                )
                messages.append(ToolMessage(content=content, tool_call_id=call.get("id") or f"call_{step}_{index}"))
        return Reply(
            text=ctx.bot.settings.fallback_reply,
            answered=False,
            tool_results=results,
            errors=[f"the model asked for tools more than {steps} times"],
            model_calls=made,
        )
