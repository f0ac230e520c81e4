"""Engines decide what a turn means and what the bot says.

The :class:`OfflineEngine` needs no model: it classifies by similarity to each
intent's examples with the local embedder, fills slots from the intents'
patterns, and answers from templates, tool results or the best knowledge
passage. The language-model engine (``botloom.graphs.llm``) has the same
interface and falls back to this one when the model fails.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from botloom.core.definitions import Intent
from botloom.core.embeddings import LocalEmbedder, tokens
from botloom.core.language import (
    NUMBER,
    NUMBER_WEIGHT,
    Analyzer,
    Teaching,
    coverage,
    default_analyzer,
    term_map,
    words,
)
from botloom.graphs.context import TurnContext
from botloom.graphs.state import PassageRef, ToolResult, TurnState, user_text

logger = logging.getLogger(__name__)

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
    escalation_reason: str | None = None
    """Why a person is wanted, when not because the user asked (``wants_human``; cost control's budget)."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """The top few candidates with their confidences, best first (for the debugger)."""
    passages: list[PassageRef] | None = None
    """The passages the answer uses, the chosen one first, when they differ from the turn's ``passages``."""
    model_calls: list[dict[str, Any]] = field(default_factory=list)
    """The language model's calls that made this classification (none for the offline engine)."""


@dataclass
class Reply:
    """What ``respond`` produced."""

    text: str
    answered: bool
    """False when the bot fell back (it did not know)."""
    pending_intent: str | None = None
    tool_results: list[ToolResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    model_calls: list[dict[str, Any]] = field(default_factory=list)
    """The language model's calls that wrote this reply (none for the offline engine)."""


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


TEMPLATE = 1
"""The :func:`specificity` of an intent answered from a template whose examples are about something."""
SMALL_TALK_INFORMATION = 1.35
"""An intent answered from a template alone is small talk when its examples' terms weigh less than this on
average (``hi``, ``thanks a lot``, ``see you``: 0.4-1.3); one whose examples name a topic (``I lost my key
fob``: 2 or more) is a specific answer that competes with passages on confidence."""


def specificity(intent: Intent) -> int:
    """How much an intent asks of the bot: a person (3), then slots (2), tools or a topic (1), small talk (0)."""
    if intent.escalate:
        return 3
    if intent.slots:
        return 2
    if intent.tools:
        return 1
    return SMALL_TALK if _social(intent.examples) else TEMPLATE


@lru_cache(maxsize=4096)
def _social(examples: tuple[str, ...]) -> bool:
    """Whether examples say little about a topic: their terms weigh under :data:`SMALL_TALK_INFORMATION`."""
    if not examples:
        return True
    analyzer = default_analyzer()
    total = sum(sum(t.weight for t in analyzer.terms(e, spell=False)) for e in examples)
    return total / len(examples) < SMALL_TALK_INFORMATION


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


CandidateScore = dict[str, Any]
"""One of the top candidates of a turn, as the state records it: ``{"intent", "confidence"}``
(and ``"document"`` for a knowledge answer)."""

TeachingLoader = Callable[[str, str], Awaitable[Teaching]]
"""Loads what a tenant taught a bot: ``(tenant_id, bot_id) -> Teaching``."""

FOLLOW_UP_WORDS = 6
"""A message of at most this many words may lean on the previous one (``and to the UK?``)."""
FOLLOW_UP_DISCOUNT = 0.9
"""A follow-up's confidence is that of the two messages read together, times this."""
CANDIDATES = 3
"""How many candidates a turn records for the debugger."""
CLAUSE = re.compile(
    r"(?<=[.!?;])\s+|,?\s+(?:and also|also|and then|and|but|oh wait|btw)\s+"
    r"|,?\s+or\s+(?=(?:is|are|can|could|do|does|should|will|would)\b)"
    r"|,\s+(?=(?:can|could|may)\s+(?:i|we)\s)",
    re.IGNORECASE,
)
"""Where a line splits into clauses: sentence ends, ``and``/``but``/``btw``, and ``or`` or a comma before a new
question (``I bought a jacket, can I return it``)."""


MAX_PARTS = 12
"""A message is read in at most this many parts (an e-mail's first ones): each costs a scoring pass."""
LEADING = re.compile(r"^(?:and|also|but|so|oh wait|btw)\b[\s,]*", re.IGNORECASE)


def message_parts(text: str) -> list[str]:
    """The lines of a message, then their sentences and clauses (``thanks! and how much is express?``)."""
    parts: list[str] = []
    for line in message_lines(text):
        for piece in CLAUSE.split(line):
            part = LEADING.sub("", piece.strip(" ,")) if piece else ""
            if part:
                parts.append(part)
    return parts[:MAX_PARTS]


@dataclass
class _Scored:
    """A candidate answer to (a part of) a message, on the engine's one confidence scale."""

    confidence: float
    intent: Intent | None = None
    passage: PassageRef | None = None
    position: int = 0
    explains: float = 0.0
    """The share of the message's weight the intent's best example explains (1: all of it)."""
    filled: bool = False
    """One of the intent's slots takes a value from the message (an order number): evidence for the intent."""
    terms: frozenset[str] = frozenset()
    """The message's terms the candidate answers to (its intent's examples' or its passage's words)."""

    @property
    def name(self) -> str:
        return self.intent.name if self.intent is not None else KNOWLEDGE_INTENT

    @property
    def rank(self) -> int:
        """A person first, then anything specific (slots, tools, knowledge), then small talk."""
        if self.intent is None:
            return 1
        return 2 if self.intent.escalate else (1 if specificity(self.intent) > SMALL_TALK else 0)

    def record(self) -> CandidateScore:
        out: CandidateScore = {"intent": self.name, "confidence": round(self.confidence, 4)}
        if self.passage is not None:
            out["document"] = self.passage["document"]
        return out


class _BotModel:
    """What the engine derives from one bot's intents and teaching: its analyzer and example terms."""

    def __init__(self, intents: Sequence[Intent], teaching: Teaching) -> None:
        self.intents = {i.name: i for i in intents}
        self.examples: dict[str, tuple[str, ...]] = {
            i.name: tuple(i.examples) + tuple(teaching.examples.get(i.name, ())) for i in intents
        }
        vocabulary = [e for examples in self.examples.values() for e in examples]
        vocabulary += [*teaching.synonyms.keys(), *teaching.synonyms.values()]
        self.analyzer = Analyzer(vocabulary, teaching.synonyms)
        self.exact: dict[str, frozenset[str]] = {
            name: frozenset(" ".join(words(e)) for e in examples) for name, examples in self.examples.items()
        }
        self.example_terms: dict[str, list[tuple[dict[str, float], float]]] = {
            name: [(m, sum(m.values())) for m in (term_map(self.analyzer.terms(e, spell=False)) for e in examples) if m]
            for name, examples in self.examples.items()
        }
        self.union: dict[str, set[str]] = {
            name: {t for m, _ in maps for t in m} for name, maps in self.example_terms.items()
        }
        self.passage_terms: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self.passage_vocabulary: dict[str, frozenset[str]] = {}
        self.taught = bool(teaching.synonyms)
        """Whether the tenant taught this bot synonyms (its knowledge searches need them too)."""
        self._matrices()

    def _matrices(self) -> None:
        """The examples' terms as arrays, for :meth:`intent_matches` (one row per example, one column per stem)."""
        self.order = list(self.intents)
        columns: dict[str, int] = {}
        rows: list[dict[str, float]] = []
        starts: list[int] = []
        for name in self.order:
            starts.append(len(rows))
            rows += [example for example, _ in self.example_terms[name]]
        for example in rows:
            for stem_ in example:
                columns.setdefault(stem_, len(columns))
        self.columns = columns
        self.weights = np.zeros((len(rows), max(1, len(columns))))
        for r, example in enumerate(rows):
            for stem_, value in example.items():
                self.weights[r, columns[stem_]] = value
        self.present = (self.weights > 0).astype(np.float64)
        self.sizes = self.weights.sum(axis=1)
        self.bounds = [*zip(starts, [*starts[1:], len(rows)], strict=True)]
        number = columns.get(NUMBER)
        self.row_number = self.present[:, number] > 0 if number is not None else np.zeros(len(rows), dtype=bool)
        self.union_present = np.zeros((len(self.order), max(1, len(columns))))
        for i, name in enumerate(self.order):
            for stem_ in self.union[name]:
                self.union_present[i, columns[stem_]] = 1.0
        self.with_slots = [bool(self.intents[name].slots) for name in self.order]
        nonempty = [i for i, (start, end) in enumerate(self.bounds) if end > start]
        self.nonempty = np.array(nonempty, dtype=np.intp)
        """The intents that have examples with terms, in order; their rows are consecutive."""
        self.row_starts = np.array([self.bounds[i][0] for i in nonempty], dtype=np.intp)
        self.row_group = np.repeat(
            np.arange(len(nonempty)), [self.bounds[i][1] - self.bounds[i][0] for i in nonempty]
        ).astype(np.intp)
        """For each example row, the index (among :attr:`nonempty`) of its intent."""

    def intent_matches(self, query: dict[str, float], text: str, plain: str) -> list[tuple[float, float]]:
        """:meth:`intent_match` of every intent (in :attr:`order`) at once, with arrays: the same scores."""
        out: list[tuple[float, float]] = [(0.0, 0.0)] * len(self.order)
        if not query:
            return [(1.0, 1.0) if plain in self.exact[name] else (0.0, 0.0) for name in self.order]
        total = sum(query.values())
        known = [(self.columns[t], w) for t, w in query.items() if t in self.columns]
        cols = [c for c, _ in known]
        weights = np.array([w for _, w in known])
        mine = self.present[:, cols] @ weights if cols else np.zeros(len(self.sizes))
        theirs = self.weights[:, cols].sum(axis=1) if cols else np.zeros(len(self.sizes))
        size = self.sizes
        together = self.union_present[:, cols] @ weights if cols else np.zeros(len(self.order))
        has_number = NUMBER in query
        numbered = [
            has_number and slots and bool(fill_slots(self.intents[name], text))
            for name, slots in zip(self.order, self.with_slots, strict=True)
        ]
        if any(numbered):
            rows = np.zeros(len(self.sizes), dtype=bool)
            for i, flag in enumerate(numbered):
                if flag:
                    start, end = self.bounds[i]
                    rows[start:end] = True
            add = rows & ~self.row_number
            mine = mine + add * query[NUMBER]
            theirs = theirs + add * NUMBER_WEIGHT
            size = size + add * NUMBER_WEIGHT
            number = self.columns.get(NUMBER)
            for i, flag in enumerate(numbered):
                if flag and (number is None or not self.union_present[i, number]):
                    together[i] += query[NUMBER]
        covered = mine / total
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(
                mine > 0, covered**QUERY_SHARE * (theirs / np.where(size > 0, size, 1.0)) ** (1 - QUERY_SHARE), 0.0
            )
        info = information(query)
        # Each intent's best example (the first of equals, as a loop would pick) and the share it explains.
        best = np.zeros(len(self.order))
        explains = np.zeros(len(self.order))
        if len(value):
            group = self.row_group
            peak = np.maximum.reduceat(value, self.row_starts)
            at_peak = np.flatnonzero(value == peak[group])
            first_groups, first = np.unique(group[at_peak], return_index=True)
            rows_at = at_peak[first]
            targets = self.nonempty[first_groups]
            best[targets] = value[rows_at]
            explains[targets] = np.where(value[rows_at] > 0, covered[rows_at], 0.0)
        scores = (0.8 * best + 0.2 * together / total) * info
        for i, name in enumerate(self.order):
            out[i] = (1.0, 1.0) if plain in self.exact[name] else (float(scores[i]), float(explains[i]))
        return out

    def intent_score(self, name: str, query: dict[str, float], text: str) -> float:
        """How well the query matches the intent, before :func:`calibrate`; an example itself scores 1.

        Per example, the query's coverage by the example (what of the message it
        explains) times the example's coverage by the query, square-rooted (a
        weighted cosine of term sets); the best example counts 0.8, the query's
        coverage by all the intent's examples together 0.2. A number that one of
        the intent's slot patterns takes (an order number) counts as covered.
        """
        return self.intent_match(name, query, text)[0]

    def intent_match(
        self, name: str, query: dict[str, float], text: str, plain: str | None = None
    ) -> tuple[float, float]:
        """:meth:`intent_score` and the share of the query the best example explains.

        ``plain``: the message's words joined by spaces, when the caller has them already.
        """
        if (" ".join(words(text)) if plain is None else plain) in self.exact[name]:
            return 1.0, 1.0
        if not query:
            return 0.0, 0.0
        total = sum(query.values())
        number = NUMBER in query and bool(fill_slots(self.intents[name], text))
        best = explains = 0.0
        for example, example_total in self.example_terms[name]:
            # The query's weight the example has, and the example's weight the query has (one pass).
            mine = theirs = 0.0
            for stem_, value in query.items():
                other = example.get(stem_)
                if other is not None:
                    mine += value
                    theirs += other
            size = example_total
            if number and NUMBER not in example:
                mine += query[NUMBER]
                theirs += NUMBER_WEIGHT
                size += NUMBER_WEIGHT
            if mine:
                covered = mine / total
                value = covered**QUERY_SHARE * (theirs / size) ** (1 - QUERY_SHARE)
                if value > best:
                    best, explains = value, covered
        union = self.union[name]
        together = sum(w for t, w in query.items() if t in union or (number and t == NUMBER)) / total
        return (0.8 * best + 0.2 * together) * information(query), explains

    def words_of(self, passages: Sequence[PassageRef]) -> frozenset[str]:
        """:func:`passage_words` of ``passages``, each passage's words computed once."""
        found: set[str] = set()
        for p in passages:
            vocabulary = self.passage_vocabulary.get(p["id"])
            if vocabulary is None:
                if len(self.passage_vocabulary) > 20_000:
                    self.passage_vocabulary.clear()
                vocabulary = self.passage_vocabulary[p["id"]] = passage_words([p])
            found |= vocabulary
        return frozenset(found)

    def covered_terms(self, candidate: _Scored) -> frozenset[str] | set[str]:
        """The terms a candidate answers to: its passage's (scored before), or all its intent's examples'."""
        if candidate.passage is not None:
            terms = self.passage_terms.get(candidate.passage["id"])
            return terms[0] if terms is not None else frozenset()
        return self.union.get(candidate.name, set())

    def passage_score(self, passage: PassageRef, query: dict[str, float]) -> float:
        """How much of the query's weight the passage covers (its heading's words count extra), before calibration."""
        key = passage["id"]
        terms = self.passage_terms.get(key)
        if terms is None:
            if len(self.passage_terms) > 20_000:
                self.passage_terms.clear()
            title = frozenset(term_map(self.analyzer.terms(passage["title"], spell=False)))
            body = frozenset(term_map(self.analyzer.terms(passage["text"], spell=False)))
            terms = self.passage_terms[key] = (body | title, title)
        everything, title = terms
        return (0.85 * coverage(query, everything) + 0.15 * coverage(query, title)) * information(query)


CALIBRATION = 1.5
"""Raw scores are raised to this power: partial matches fall below the default threshold of 0.35 (raw 0.5)."""
INFORMATION = 0.6
"""A query whose terms weigh less than this in all (``and how long is it?``) is too vague to be sure of."""
PERSON_MARGIN = 0.5
"""A call for a person wins over other answers unless it scores this much below the best one: a faint echo
(``this is Barbara speaking`` of ``I want to speak to a human``) never overrides a clear answer."""
INTENT_BONUS = 0.15
"""An intent whose example explains the whole message, or one of whose slots the message fills (``card 2222``),
beats a passage scoring up to this much higher: its examples were written for it, while a passage's many words
cover short messages easily."""
FILLED_BONUS = 0.35
"""An intent one of whose slots the message fills (``when can I collect my bike? ticket 12876``) beats a passage
scoring up to this much higher: a value its slot's pattern takes is evidence no passage has."""
TOPIC_BONUS = 0.2
"""An intent whose examples cover every word of the message the best passage covers (``can I book a service for
my bike``: the booking intent and the passage on booking) beats it when it scores up to this much lower: the
passage has no evidence the intent lacks, and the intent does what the passage only describes."""


CONTESTED_TERM = 0.7
"""A word of a message weighing this much (``return``, ``package``; not ``pay``, ``number``) says what it is
about: an answer that misses it while another answer covers it is contested (:meth:`OfflineEngine.contested`)."""
CONTESTED_FLOOR = 0.2
"""A rival answer counts against the chosen one from this confidence (below it, it is noise)..."""
CONTESTED_MARGIN = 0.15
"""... and only when it scores at most this much below the chosen one: a close second that answers what the
chosen one misses makes the engine unsure; a far second does not."""


MAX_PART_SEARCHES = 3
"""At most this many parts of one message get a knowledge search of their own."""
SMALL_TALK_COVER = 0.35
"""Small talk answers a message of several parts only if each part that says something scores this much."""
FOLLOW_UP_OPENINGS = ("and ", "what about", "how about", "also ", "same for", "what if", "and?")


def looks_like_follow_up(text: str) -> bool:
    """Whether a message opens like a follow-up of the previous one (``and to the UK?``, ``what about amex?``)."""
    plain = " ".join(words(text)) + " "
    return len(plain) < 60 and plain.startswith(FOLLOW_UP_OPENINGS)


ANAPHORA = frozenset(["that", "it", "this", "those", "them", "there"])
EXPLAINED = 0.9
"""An intent example explaining this share of a message matches it as written: a word like ``this`` in it
(``this is Barbara speaking``) does not make it a follow-up of the previous turn."""


def refers_back(text: str) -> bool:
    """Whether a short message points at what was said before (``how long does that take?``)."""
    found = words(text)
    return len(found) <= FOLLOW_UP_WORDS and any(w in ANAPHORA for w in found)


QUERY_SHARE = 0.7
"""In an intent example's score, the weight of the share of the message it explains (the rest: of itself)."""
MERGE_MARGIN = 0.3
"""A passage of the same document scoring this close to the chosen one (and at least :data:`MERGE_FLOOR`)
is answered from too: the answer's sentences are picked from both."""
MERGE_FLOOR = 0.35


def merged(chosen: _Scored, scored: Sequence[_Scored]) -> PassageRef:
    """The chosen passage, joined by the next passage of its document that scored about as well.

    Two sections of one document often share the question's words ("return" in
    both the return policy and how to return): the answer is picked from the
    sentences of both.
    """
    assert chosen.passage is not None
    first = chosen.passage
    for s in sorted(scored, key=lambda c: -c.confidence):
        p = s.passage
        if p is None or p["id"] == first["id"] or p["document"] != first["document"]:
            continue
        if s.confidence >= chosen.confidence - MERGE_MARGIN and s.confidence >= MERGE_FLOOR:
            return PassageRef(
                id=first["id"],
                document=first["document"],
                title=first["title"],
                text=f"{first['text']}\n{p['text']}",
                score=first["score"],
            )
        break
    return first


def passage_words(passages: Sequence[PassageRef]) -> frozenset[str]:
    """The words of passages: what spelling correction leaves alone in the user's message."""
    return frozenset(w for p in passages for w in words(p["title"] + " " + p["text"]))


def information(query: dict[str, float]) -> float:
    """How much the query says, in [0, 1]: the weight of its terms over :data:`INFORMATION`, at most 1."""
    return min(1.0, sum(query.values()) / INFORMATION)


def calibrate(raw: float) -> float:
    """A candidate's confidence from its raw score: intents and passages on one scale (see docs/graphs.md)."""
    return raw if raw >= 1.0 else raw**CALIBRATION


def passage_candidate(model: _BotModel, passage: PassageRef, query: dict[str, float], position: int) -> _Scored:
    """A passage scored for a message's (or a part's) query, with the query's terms it covers."""
    confidence = calibrate(model.passage_score(passage, query))
    covered = model.covered_terms(_Scored(confidence, None, passage))
    return _Scored(confidence, None, passage, position, terms=frozenset(t for t in query if t in covered))


def _key(s: _Scored) -> str:
    """A candidate's answer: its intent, or its passage's document (two passages of one document agree)."""
    return s.name if s.passage is None else f"{KNOWLEDGE_INTENT}:{s.passage['document']}"


def _top(scored: Sequence[_Scored]) -> list[CandidateScore]:
    """The best :data:`CANDIDATES` distinct candidates (an intent or a document once each)."""
    best: dict[str, _Scored] = {}
    for s in scored:
        key = s.name if s.passage is None else f"{KNOWLEDGE_INTENT}:{s.passage['document']}"
        if key not in best or s.confidence > best[key].confidence:
            best[key] = s
    return [s.record() for s in sorted(best.values(), key=lambda c: -c.confidence)[:CANDIDATES]]


class OfflineEngine:
    """The engine that needs no language model (see the module docstring)."""

    def __init__(
        self,
        embedder: LocalEmbedder | None = None,
        knowledge_min_score: float = 0.0,
        teaching: TeachingLoader | None = None,
    ) -> None:
        """``teaching`` loads a bot's taught synonyms and examples (read on every turn; cheap when unchanged)."""
        self.embedder = embedder or LocalEmbedder()
        self.knowledge_min_score = knowledge_min_score
        self.teaching = teaching
        self._models: dict[tuple[str, int, tuple[tuple[str, tuple[str, ...]], ...]], _BotModel] = {}

    async def model(self, ctx: TurnContext) -> _BotModel:
        """The bot's derived model for its enabled intents and current teaching (cached)."""
        taught = Teaching()
        if self.teaching is not None:
            try:
                taught = await self.teaching(ctx.tenant_id, ctx.bot.id)
            except Exception as exc:  # noqa: BLE001 - teaching failing to load must not fail the turn
                logger.warning("loading the bot's teaching failed: %s: %s", type(exc).__name__, exc)
        key = (ctx.bot.id, taught.revision, tuple((i.name, i.examples) for i in ctx.intents.values()))
        model = self._models.get(key)
        if model is None:
            if len(self._models) > 256:
                self._models.clear()
            model = self._models[key] = _BotModel(list(ctx.intents.values()), taught)
        return model

    def candidates(
        self, model: _BotModel, text: str, passages: Sequence[PassageRef], position: int = 0
    ) -> list[_Scored]:
        """Every intent and passage scored for ``text``, best first."""
        query = term_map(model.analyzer.terms(text, keep=model.words_of(passages)))
        plain = " ".join(words(text))
        scored = []
        for (score, explains), intent in zip(
            model.intent_matches(query, text, plain), model.intents.values(), strict=True
        ):
            filled = bool(intent.slots) and score > 0 and bool(fill_slots(intent, text))
            terms = frozenset(t for t in query if t in model.union[intent.name]) if score > 0 else frozenset()
            scored.append(_Scored(calibrate(score), intent, None, position, explains, filled, terms))
        scored += [passage_candidate(model, p, query, position) for p in passages]
        scored.sort(key=lambda s: -s.confidence)
        return scored

    def choose(self, scored: Sequence[_Scored], threshold: float, topic: bool = True) -> _Scored | None:
        """The answer among candidates at or above ``threshold``: a person, then specific, then small talk.

        ``topic``: whether an intent covering all the best passage covers gets :data:`TOPIC_BONUS` (not for a
        message that points back, ``how do I book it?``: its topic is the previous message's).
        """
        eligible = [s for s in scored if s.confidence >= threshold]
        if not eligible:
            return None
        best = max(s.confidence for s in eligible)

        def rank(s: _Scored) -> int:
            return 1 if s.rank == 2 and s.confidence < best - PERSON_MARGIN else s.rank

        passages = [s for s in scored if s.passage is not None]
        top = max(passages, key=lambda s: s.confidence) if passages else None

        def bonus(s: _Scored) -> float:
            if s.intent is None:
                return 0.0
            value = INTENT_BONUS if s.explains >= 0.9 or s.filled else 0.0
            if s.filled:
                value = max(value, FILLED_BONUS)
            own = topic and top is not None and top.position == s.position and s.terms and top.terms <= s.terms
            if own and specificity(s.intent) > SMALL_TALK:
                value = max(value, TOPIC_BONUS)
            return value

        return max(eligible, key=lambda s: (rank(s), s.confidence + bonus(s), s.position))

    async def classify(self, state: TurnState, ctx: TurnContext) -> Classification:
        """The intent or knowledge passage that best answers the message, on one confidence scale.

        The message is read whole and part by part (lines, sentences, clauses): a
        part asking for a person wins, then the most confident specific answer
        (an intent with slots or tools, or a knowledge passage), then small talk,
        so "thanks! and how much is express shipping?" is about shipping. A short
        message nothing answers is read together with the previous user message
        (``and to the UK?``), with a new knowledge search for the two.
        """
        text = user_text(state)
        pending = ctx.intents.get(state.get("pending_intent") or "")
        if pending is not None:
            slots = fill_slots(pending, text)
            if slots:
                return Classification(intent=pending.name, confidence=1.0, slots=slots)
        model = await self.model(ctx)
        threshold = ctx.bot.settings.escalation_threshold
        passages = await self.passages(state, ctx, model, text)
        scored = self.candidates(model, text, passages)
        parts = message_parts(text)
        if len(parts) > 1:
            for position, part in enumerate(parts, start=1):
                scored += self.candidates(model, part, passages, position)
        topic = not (looks_like_follow_up(text) or refers_back(text))
        chosen = self.choose(scored, threshold, topic)
        if len(parts) > 1 and (chosen is None or chosen.rank == 0) and ctx.search is not None:
            # Small talk around a question: the search for the whole message is diluted, so search its parts.
            extra = await self.search_parts(ctx, model, parts, scored)
            if extra:
                passages = passages + [p for p in extra if p["id"] not in {q["id"] for q in passages}]
                chosen = self.choose(scored, threshold, topic)
        if chosen is not None and chosen.rank == 0 and len(parts) > 1 and self.unexplained(model, parts, scored):
            chosen = None  # "hello / I ordered a lamp ... when does it ship? / thanks": not a greeting
        if chosen is not None and self.contested(model, chosen, scored, text, passages):
            chosen = None  # another answer covers what the message is about and this one misses: not sure
        used_passages: list[PassageRef] | None = None
        slot_text = text
        if chosen is None or looks_like_follow_up(text) or refers_back(text):
            follow = await self.follow_up(state, ctx, model, text, threshold)
            # "and on parts?" after "how long is the warranty on repairs": the two read together, not "parts" alone.
            pointing = (refers_back(text) or looks_like_follow_up(text)) and (
                chosen is None or chosen.explains < EXPLAINED
            )
            if follow is not None and (chosen is None or follow[0].confidence > chosen.confidence or pointing):
                chosen, used_passages, slot_text = follow
                scored = [chosen, *scored]
        return self.result(chosen, scored, used_passages or passages, text, slot_text)

    def contested(
        self, model: _BotModel, chosen: _Scored, scored: Sequence[_Scored], text: str, passages: Sequence[PassageRef]
    ) -> bool:
        """Whether a close second answer to the whole message covers an informative word that ``chosen`` misses.

        Evidence against the chosen answer, not a rule about words: ``returns accepted after 30 days?``
        answered by the payments passage (it covers ``accept``) while the returns passage covers ``return``;
        ``a package deal for several trainer sessions`` answered by the trainer request while a passage about
        packs of sessions covers ``package``. The engine cannot tell which the user meant: an honest fallback
        beats a wrong answer. An intent whose slot the message fills (an order number) is not contested.
        """
        if chosen.position != 0 or chosen.filled:
            return False
        query = term_map(model.analyzer.terms(text, keep=model.words_of(passages)))
        mine = model.covered_terms(chosen)
        missed = {t: w for t, w in query.items() if w >= CONTESTED_TERM and t not in mine and t != NUMBER}
        if not missed:
            return False
        for rival in scored:
            close = rival.confidence >= max(CONTESTED_FLOOR, chosen.confidence - CONTESTED_MARGIN)
            if rival.position != 0 or not close or _key(rival) == _key(chosen):
                continue
            if rival.intent is not None and specificity(rival.intent) == SMALL_TALK:
                continue
            if any(t in model.covered_terms(rival) for t in missed):
                return True
        return False

    def result(
        self, chosen: _Scored | None, scored: Sequence[_Scored], passages: list[PassageRef], text: str, slot_text: str
    ) -> Classification:
        """The classification of the chosen candidate (none: the fallback), with the top candidates."""
        top = _top(scored)
        if chosen is None:
            best = top[0]["confidence"] if top else 0.0
            return Classification(intent=None, confidence=round(best, 4), candidates=top)
        if chosen.intent is None:
            assert chosen.passage is not None
            rest = [p for p in passages if p["id"] != chosen.passage["id"]]
            return Classification(
                intent=KNOWLEDGE_INTENT,
                confidence=round(chosen.confidence, 4),
                candidates=top,
                passages=[merged(chosen, scored), *rest],
            )
        slots = fill_slots(chosen.intent, text) or fill_slots(chosen.intent, slot_text)
        return Classification(
            intent=chosen.intent.name, confidence=round(chosen.confidence, 4), slots=slots, candidates=top
        )

    async def passages(self, state: TurnState, ctx: TurnContext, model: _BotModel, text: str) -> list[PassageRef]:
        """The turn's passages above the floor, and those a search with the tenant's synonyms adds."""
        passages = [p for p in state.get("passages") or [] if p["score"] >= self.knowledge_floor(ctx)]
        if model.taught and ctx.search is not None:
            # The turn's search knew only the curated synonyms: search again with what the tenant taught.
            taught = model.analyzer.expand(text)
            if taught != default_analyzer().expand(text):
                passages = await self.search(ctx, taught, passages)
        return passages

    async def search_parts(
        self, ctx: TurnContext, model: _BotModel, parts: Sequence[str], scored: list[_Scored]
    ) -> list[PassageRef]:
        """Search the knowledge base for each part that says something and nothing answers; score what it finds."""
        assert ctx.search is not None
        found: list[PassageRef] = []
        for position, part in list(enumerate(parts, start=1))[:MAX_PART_SEARCHES]:
            query = term_map(model.analyzer.terms(part))
            best = max((s.confidence for s in scored if s.position == position), default=0.0)
            if sum(query.values()) < INFORMATION or best >= SMALL_TALK_COVER:
                continue
            try:
                results = await ctx.search(part, ctx.passages)
            except Exception as exc:  # noqa: BLE001 - a failed search leaves the part unanswered
                logger.warning("knowledge search of a message part failed: %s: %s", type(exc).__name__, exc)
                continue
            refs = [
                PassageRef(id=p.chunk_id, document=p.document, title=p.title, text=p.text, score=round(p.score, 4))
                for p in results
                if p.score >= self.knowledge_floor(ctx)
            ]
            query = term_map(model.analyzer.terms(part, keep=model.words_of(refs)))
            scored += [passage_candidate(model, p, query, position) for p in refs]
            found += refs
        return found

    def unexplained(self, model: _BotModel, parts: Sequence[str], scored: Sequence[_Scored]) -> bool:
        """Whether a part of the message that says something (terms of weight 0.6 or more) has no answer."""
        for position, part in enumerate(parts, start=1):
            query = term_map(model.analyzer.terms(part))
            if sum(query.values()) < INFORMATION:
                continue
            best = max((s.confidence for s in scored if s.position == position), default=0.0)
            if best < SMALL_TALK_COVER:
                return True
        return False

    async def search(self, ctx: TurnContext, query: str, known: list[PassageRef]) -> list[PassageRef]:
        """``known`` and what a new search for ``query`` finds (above the floor), each passage once."""
        assert ctx.search is not None
        try:
            found = await ctx.search(query, ctx.passages)
        except Exception as exc:  # noqa: BLE001 - a failed search leaves the passages the turn had
            logger.warning("knowledge search failed: %s: %s", type(exc).__name__, exc)
            return known
        seen = {p["id"] for p in known}
        return known + [
            PassageRef(id=p.chunk_id, document=p.document, title=p.title, text=p.text, score=round(p.score, 4))
            for p in found
            if p.score >= self.knowledge_floor(ctx) and p.chunk_id not in seen
        ]

    def knowledge_floor(self, ctx: TurnContext) -> float:
        """The fused search score a passage needs to be considered at all."""
        return ctx.bot.settings.knowledge_threshold or self.knowledge_min_score

    async def follow_up(
        self, state: TurnState, ctx: TurnContext, model: _BotModel, text: str, threshold: float
    ) -> tuple[_Scored, list[PassageRef] | None, str] | None:
        """The answer to a short message read with the previous user message, if that finds one."""
        if len(words(text)) > FOLLOW_UP_WORDS:
            return None
        history = [m["content"] for m in state.get("messages") or [] if m["role"] == "user"]
        if len(history) < 2 or not history[-2].strip():
            return None
        previous = history[-2]
        together = f"{previous}\n{text}"
        passages: list[PassageRef] | None = None
        if ctx.search is not None:
            try:
                found = await ctx.search(f"{previous} {text}", ctx.passages)
            except Exception as exc:  # noqa: BLE001 - a failed search leaves the follow-up to intents
                logger.warning("follow-up search failed: %s: %s", type(exc).__name__, exc)
                found = []
            passages = [
                PassageRef(id=p.chunk_id, document=p.document, title=p.title, text=p.text, score=round(p.score, 4))
                for p in found
                if p.score >= self.knowledge_floor(ctx)
            ]
            current = term_map(model.analyzer.terms(text, keep=model.words_of(passages or [])))
        scored: list[_Scored] = []
        for s in self.candidates(model, together, passages or []):
            if s.intent is not None and specificity(s.intent) == SMALL_TALK:
                continue  # "thanks" then "and to the UK?" is not thanks again
            vague = sum(current.values()) < INFORMATION
            if s.passage is not None and current and not vague and not model.passage_score(s.passage, current):
                continue  # the passage must answer something of this message, not only of the previous one
            s.confidence *= FOLLOW_UP_DISCOUNT
            scored.append(s)
        chosen = self.choose(scored, threshold)
        if chosen is None:
            return None
        return chosen, passages, together

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


def offline_part(engine: Engine) -> OfflineEngine | None:
    """The offline engine ``engine`` is, or falls back to (a language-model engine's ``offline``), if any."""
    offline = engine if isinstance(engine, OfflineEngine) else getattr(engine, "offline", None)
    return offline if isinstance(offline, OfflineEngine) else None
