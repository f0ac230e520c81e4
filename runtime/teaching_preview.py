"""Preview a teaching change: which of a bot's recent answers it would change, before it takes effect.

Teaching has side effects a tenant cannot see (docs/benchmarks.md, #17 round 12): a synonym replaces
its phrase everywhere, and a taught example pulls questions near it. The preview replays the user
messages of the bot's most recent conversations twice, each on a throwaway thread (nothing stored,
nothing delivered, tools answered from their recorded results): once with what the bot is taught now,
once with the proposal, both through the offline engine (the one teaching changes; with a language
model it is the fallback) and the knowledge base as it is now. The turns whose answer differs are listed.

Both runs see the same knowledge: each search is made once per preview and its passages given to both
(a document uploaded meanwhile changes nothing, and an embedding provider is asked once). A tool the
original turn did not call has no recorded result, so a preview does not run it: the answer names it
(``tools_not_run``) and its reply is what the bot says when a tool fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from botloom.core.definitions import Tool
from botloom.core.domain import Bot
from botloom.core.language import Teaching
from botloom.graphs.context import SearchFn, TurnContext
from botloom.graphs.engines import OfflineEngine, offline_part
from botloom.runtime.debug_runs import dry_context
from botloom.runtime.replay import (
    RecordedTurn,
    UnrecordedToolCall,
    deterministic_context,
    record_conversation,
    replay_turns,
    throwaway_graph,
)
from botloom.runtime.services import Services

MAX_PREVIEW_CONVERSATIONS = 20
"""How many of the bot's most recently active conversations a preview replays at most."""
MAX_PREVIEW_TURNS = 200
"""How many turns a preview replays at most, over all its conversations: each gets an equal share, its first turns."""


@dataclass
class ChangedAnswer:
    """A turn whose answer the proposal changes: the user's message, and what the bot said before and after."""

    conversation_id: str
    turn: int
    message: str
    before: dict[str, Any]
    """``intent``, ``replies`` and ``tools_not_run`` with what the bot is taught now."""
    after: dict[str, Any]
    """The same with the proposal."""


@dataclass
class TeachingPreview:
    """What a preview found: how much it replayed, and the answers that would change."""

    conversations: int
    turns: int
    changed: list[ChangedAnswer] = field(default_factory=list)
    truncated: bool = False
    """Whether a conversation had more turns than its share of :data:`MAX_PREVIEW_TURNS` (its first ones ran)."""


def proposal(current: Teaching, synonyms: Mapping[str, str] | None, examples: Mapping[str, Sequence[str]]) -> Teaching:
    """``current`` with its synonyms replaced by ``synonyms`` (when given) and ``examples`` added per intent."""
    merged = {name: tuple(texts) for name, texts in current.examples.items()}
    for name, texts in examples.items():
        merged[name] = tuple(dict.fromkeys([*merged.get(name, ()), *texts]))
    return Teaching(
        revision=current.revision + 1,
        synonyms=dict(current.synonyms if synonyms is None else synonyms),
        examples=merged,
    )


def _engine(services: Services, teaching: Teaching) -> OfflineEngine:
    """An offline engine that reads ``teaching`` for every bot, with the deployment's knowledge floor."""
    offline = offline_part(services.engine)
    floor = offline.knowledge_min_score if offline is not None else 0.0

    async def taught(tenant_id: str, bot_id: str) -> Teaching:
        return teaching

    return OfflineEngine(knowledge_min_score=floor, teaching=taught)


ToolsNotRun = dict[int, list[str]]
"""Per replayed turn (its index), the tools it would have called that have no recorded result."""


def _shared(search: SearchFn | None) -> SearchFn | None:
    """``search``, each ``(query, limit)`` asked once: both runs of a preview see the same passages."""
    if search is None:
        return None
    found: dict[tuple[str, int], list[Any]] = {}

    async def once(query: str, limit: int) -> list[Any]:
        key = (query, limit)
        if key not in found:
            found[key] = await search(query, limit)
        return found[key]

    return once


def _noting(tools: Mapping[str, Tool], noted: list[str]) -> dict[str, Tool]:
    """``tools`` (recorded) that add the name of a tool called without a recorded result to ``noted``."""

    def wrap(tool: Tool) -> Tool:
        handler = tool.handler

        async def noting(**arguments: Any) -> Any:
            try:
                return await handler(**arguments)
            except UnrecordedToolCall as exc:
                noted.append(exc.tool)
                raise

        return msgspec.structs.replace(tool, handler=noting)

    return {name: wrap(tool) for name, tool in tools.items()}


def _contexts(
    base: TurnContext, engine: OfflineEngine, search: SearchFn | None, not_run: ToolsNotRun
) -> Callable[[RecordedTurn], Awaitable[TurnContext]]:
    """Each replayed turn's context: tools from their recorded results, ``engine``, the preview's ``search``."""

    async def context_for(turn: RecordedTurn) -> TurnContext:
        recorded = deterministic_context(base, turn, model=False)
        tools = _noting(recorded.tools, not_run.setdefault(turn.index, []))
        return dataclasses.replace(recorded, engine=engine, search=search, tools=tools)

    return context_for


def _outcome(turn: Mapping[str, Any], not_run: ToolsNotRun) -> dict[str, Any]:
    replayed = turn["replayed"]
    return {
        "intent": replayed.get("intent"),
        "replies": list(replayed.get("replies") or []),
        "tools_not_run": sorted(set(not_run.get(turn["index"], []))),
    }


async def preview_teaching(
    services: Services,
    bot: Bot,
    *,
    synonyms: Mapping[str, str] | None = None,
    examples: Mapping[str, Sequence[str]] | None = None,
    conversations: int = MAX_PREVIEW_CONVERSATIONS,
) -> TeachingPreview:
    """Replay the bot's recent conversations with its teaching now and with the proposal; the changed answers.

    ``synonyms`` replaces the bot's synonyms (as ``PUT .../synonyms`` would); ``examples`` adds examples per
    intent (as ``POST .../intents/{intent}/examples`` would). Nothing is stored or sent.
    """
    current = await services.store.teaching.load(bot.tenant_id, bot.id)
    engines = (_engine(services, current), _engine(services, proposal(current, synonyms, examples or {})))
    graph = throwaway_graph(services.host, bot.graph)
    version = services.runner.state_version(bot)
    found = await services.store.conversations.list_all(
        bot.tenant_id, bot.id, limit=max(1, min(conversations, MAX_PREVIEW_CONVERSATIONS))
    )
    report = TeachingPreview(conversations=0, turns=0)
    search: SearchFn | None = None
    # Each conversation gets its share of the turns (a long one never crowds the others out); a replay
    # starts from a conversation's beginning, so a long one is replayed up to its share.
    share = max(1, MAX_PREVIEW_TURNS // max(1, len(found)))
    for conversation in found:
        turns, more = await record_conversation(services, bot, conversation, limit=share)
        if not turns:
            continue
        base = await dry_context(services, bot, conversation)
        if search is None:
            search = _shared(base.search)
        runs = []
        for engine in engines:
            not_run: ToolsNotRun = {}
            replayed = await replay_turns(graph, turns, _contexts(base, engine, search, not_run), version=version)
            runs.append([_outcome(t, not_run) for t in replayed])
        report.conversations += 1
        report.turns += len(turns)
        report.truncated = report.truncated or more
        for turn, before, after in zip(turns, *runs, strict=True):
            if before != after:
                report.changed.append(
                    ChangedAnswer(
                        conversation_id=conversation.id, turn=turn.index, message=turn.input, before=before, after=after
                    )
                )
    return report


__all__ = ["MAX_PREVIEW_CONVERSATIONS", "MAX_PREVIEW_TURNS", "ChangedAnswer", "TeachingPreview", "preview_teaching"]
