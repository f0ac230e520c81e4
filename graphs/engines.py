"""Engines decide what a turn means and what the bot says.

The :class:`OfflineEngine` needs no model: it classifies by similarity to each
intent's examples with the local embedder, fills slots from the intents'
patterns, and answers from templates, tool results or the best knowledge
passage. The language-model engine (``botloom.graphs.llm``) has the same
interface and falls back to this one when the model fails.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from botloom.core.definitions import Intent
from botloom.core.embeddings import LocalEmbedder, normalize, tokens
from botloom.graphs.context import TurnContext
from botloom.graphs.state import ToolResult, TurnState, user_text

KNOWLEDGE_INTENT = "knowledge"
"""The intent name a turn gets when a knowledge passage, not an intent, answers it."""

DEFAULT_ESCALATION_NOTICE = "I'm connecting you with a person. Someone from our team will reply here shortly."


@dataclass
class Classification:
    """What the user wants, how sure the engine is, and the slots it found."""

    intent: str | None
    confidence: float
    slots: dict[str, str] = field(default_factory=dict)
    wants_human: bool = False


@dataclass
class Reply:
    """What ``respond`` produced."""

    text: str
    answered: bool
    """False when the bot fell back (it did not know)."""
    pending_intent: str | None = None
    tool_results: list[ToolResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Engine(Protocol):
    """Classifies a turn and writes its answer."""

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """Pick the intent of the user's message among ``ctx.intents``."""
        ...

    async def respond(self, state: TurnState, ctx: TurnContext) -> Reply:
        """Write the answer from the intent, the tool results and the passages in ``state``."""
        ...


def fill_slots(intent: Intent, text: str) -> dict[str, str]:
    """Values of the intent's slots found in ``text`` by their patterns."""
    found: dict[str, str] = {}
    for slot in intent.slots:
        if slot.pattern is None:
            continue
        match = re.search(slot.pattern, text, re.IGNORECASE)
        if match:
            found[slot.name] = (match.group(1) if match.groups() else match.group(0)).strip()
    return found


SMALL_TALK = 0
"""The :func:`specificity` of an intent answered from a template alone (greetings, thanks)."""


def specificity(intent: Intent) -> int:
    """How much an intent asks of the bot: a person (3), then slots (2), tools (1), small talk (0)."""
    if intent.escalate:
        return 3
    if intent.slots:
        return 2
    if intent.tools:
        return 1
    return SMALL_TALK


def message_lines(text: str) -> list[str]:
    """The non-empty lines of a message, each stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def missing_slot(intent: Intent, slots: dict[str, str]) -> str | None:
    """The first required slot of ``intent`` not in ``slots``."""
    for slot in intent.slots:
        if slot.required and not slots.get(slot.name):
            return slot.name
    return None


def slot_question(intent: Intent, name: str) -> str:
    """What the bot asks to fill the slot ``name``."""
    slot = next(s for s in intent.slots if s.name == name)
    return slot.prompt or f"Could you tell me the {slot.description or slot.name.replace('_', ' ')}?"


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, values: dict[str, Any]) -> str:
    """Fill ``{name}`` placeholders of a plugin's template; unknown names become empty."""
    try:
        return string.Formatter().vformat(template, (), _Blank(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


def tool_reply(result: ToolResult) -> str | None:
    """The text a tool's result offers as a reply: its ``reply`` field, or the result if it is text."""
    value = result.get("result")
    if isinstance(value, dict) and isinstance(value.get("reply"), str):
        return str(value["reply"])
    if isinstance(value, str) and value.strip():
        return value
    return None


def extract_answer(question: str, text: str, max_chars: int = 480) -> str:
    """The sentences of ``text`` that best answer ``question``, in their original order."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    sentences = [s for s in sentences if not s.startswith("#")] or sentences
    if len(" ".join(sentences)) <= max_chars:
        return " ".join(sentences)
    wanted = set(tokens(question))
    scored = sorted(range(len(sentences)), key=lambda i: (-len(wanted & set(tokens(sentences[i]))), i))
    chosen: list[int] = []
    size = 0
    for i in scored:
        if size + len(sentences[i]) > max_chars and chosen:
            break
        chosen.append(i)
        size += len(sentences[i]) + 1
    return " ".join(sentences[i] for i in sorted(chosen))


class OfflineEngine:
    """The engine that needs no language model (see the module docstring)."""

    def __init__(self, embedder: LocalEmbedder | None = None, knowledge_min_score: float = 0.3) -> None:
        self.embedder = embedder or LocalEmbedder()
        self.knowledge_min_score = knowledge_min_score
        self._examples: dict[tuple[str, tuple[str, ...]], tuple[frozenset[str], npt.NDArray[np.float64]]] = {}

    def _example_vectors(self, intent: Intent) -> tuple[frozenset[str], npt.NDArray[np.float64]]:
        """The intent's examples, normalised, and their unit vectors as the rows of one matrix (cached)."""
        key = (intent.name, intent.examples)
        cached = self._examples.get(key)
        if cached is None:
            plain = frozenset(normalize(e).strip(" ?!.,") for e in intent.examples)
            rows = [self.embedder.embed_one(e) for e in intent.examples]
            matrix = np.array(rows, dtype=np.float64).reshape(len(rows), self.embedder.dimension)
            cached = self._examples[key] = (plain, matrix)
        return cached

    def score(self, intent: Intent, text: str, vector: Sequence[float] | npt.NDArray[np.float64]) -> float:
        """How well ``text`` matches the intent's examples, from 0 to 1 (an example itself scores 1).

        The embedder's vectors are unit vectors (or zero), so the cosine is the dot
        product: one matrix product per intent.
        """
        examples, matrix = self._example_vectors(intent)
        if normalize(text).strip(" ?!.,") in examples:
            return 1.0
        if not len(matrix):
            return 0.0
        return max(0.0, float((matrix @ np.asarray(vector, dtype=np.float64)).max()))

    def best_intent(self, text: str, intents: Iterable[Intent]) -> tuple[float, Intent | None]:
        """The intent whose examples are most like ``text``, with its score."""
        vector = np.asarray(self.embedder.embed_one(text), dtype=np.float64)
        best: tuple[float, Intent | None] = (0.0, None)
        for candidate in intents:
            value = self.score(candidate, text, vector)
            if value > best[0]:
                best = (value, candidate)
        return best

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """The intent whose examples are most like the message, or the pending one if it fills a slot.

        A message of several lines (a burst merged into one turn, an e-mail) is read
        line by line: the most specific intent any line asks for wins (see
        :func:`specificity`), the latest line breaking ties, so "hi" followed by
        "where is my order 1234?" is about the order, not a greeting; small talk
        around a line no intent explains gives way to a knowledge answer.
        """
        text = user_text(state)
        pending = ctx.intents.get(state.get("pending_intent") or "")
        if pending is not None:
            slots = fill_slots(pending, text)
            if slots:
                return Classification(intent=pending.name, confidence=1.0, slots=slots)
        threshold = ctx.bot.settings.escalation_threshold
        confidence, intent = self.best_intent(text, ctx.intents.values())
        small_talk_around_a_question = False
        lines = message_lines(text)
        if len(lines) > 1:
            matches: list[tuple[int, int, float, Intent]] = []
            unexplained = False
            for position, line in enumerate(lines):
                score, found = self.best_intent(line, ctx.intents.values())
                if found is not None and score >= threshold:
                    matches.append((specificity(found), position, score, found))
                else:
                    unexplained = True
            if matches:
                rank, _, confidence, intent = max(matches, key=lambda m: (m[0], m[1]))
                small_talk_around_a_question = unexplained and rank == SMALL_TALK
        passages = state.get("passages") or []
        floor = ctx.bot.settings.knowledge_threshold or self.knowledge_min_score
        knowledge = bool(passages) and passages[0]["score"] >= floor
        if intent is not None and confidence >= threshold and not (small_talk_around_a_question and knowledge):
            return Classification(intent=intent.name, confidence=round(confidence, 4), slots=fill_slots(intent, text))
        if knowledge:
            return Classification(intent=KNOWLEDGE_INTENT, confidence=round(passages[0]["score"], 4))
        return Classification(intent=None, confidence=round(confidence, 4))

    async def respond(self, state: TurnState, ctx: TurnContext) -> Reply:
        """Answer from the intent's template, its tool's reply, or the best passage; else the fallback."""
        name = state.get("intent")
        fallback = Reply(text=ctx.bot.settings.fallback_reply, answered=False)
        if name == KNOWLEDGE_INTENT:
            passages = state.get("passages") or []
            if not passages:
                return fallback
            return Reply(text=extract_answer(user_text(state), passages[0]["text"]), answered=True)
        intent = ctx.intents.get(name or "")
        if intent is None:
            return fallback
        slots = state.get("slots") or {}
        missing = missing_slot(intent, slots)
        if missing is not None:
            return Reply(text=slot_question(intent, missing), answered=True, pending_intent=intent.name)
        results = state.get("tool_results") or []
        failed = [r for r in results if not r.get("ok")]
        if failed:
            return Reply(text=ctx.bot.settings.fallback_reply, answered=False)
        values: dict[str, Any] = dict(slots)
        if results:
            values["result"] = results[0].get("result")
        if intent.answer:
            return Reply(text=render(intent.answer, values), answered=True)
        for result in results:
            text = tool_reply(result)
            if text:
                return Reply(text=text, answered=True)
        return fallback
