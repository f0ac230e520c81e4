"""A conversation becomes a test: export it (or a fork of it) as a standalone pytest golden test.

The exported file embeds the *recording* of the conversation: the bot's settings and graph,
the public config of each plugin it enabled (never a secret), and for each turn its user
message and what the turn recorded (knowledge passages, tool results, and the model's
classification and reply when the deployment used a model). Its one test replays the
messages with :func:`replay_recording` (the loop of :mod:`botloom.runtime.replay` in its
deterministic mode, on an in-memory checkpointer, with no database) against the installed
botloom and plugins, and checks each turn's node path, intent and replies.

It needs nothing but ``pytest`` and botloom with the bot's plugins installed; it uses no
fixture, so it runs the same under ``botloom.testing``'s pytest plugin. It fails, naming the
turn, when botloom's logic, a plugin's intents, templates or tools' handling, or the bot's
settings written in it change what the bot does.
"""

from __future__ import annotations

import pprint
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import msgspec

from botloom.core.config import split_secrets
from botloom.core.domain import Bot, BotSettings, Conversation
from botloom.core.host import PluginHost
from botloom.graphs.context import TurnContext
from botloom.graphs.engines import OfflineEngine
from botloom.graphs.nodes import KNOWLEDGE_PLUGIN
from botloom.runtime.debug_runs import DebugInputError, jsonable
from botloom.runtime.forks import Forks
from botloom.runtime.replay import (
    RecordedTurn,
    deterministic_context,
    record_conversation,
    recorded_search,
    recorded_turn,
    replay_turns,
    throwaway_graph,
    uses_model,
)
from botloom.runtime.services import Services

GOLDEN_FORMAT = 1
"""The version of the recording's shape; :func:`replay_recording` refuses one it does not know."""


def _version() -> str:
    try:
        return metadata.version("botloom")
    except metadata.PackageNotFoundError:  # pragma: no cover - an uninstalled checkout
        return "unknown"


async def public_configs(services: Services, bot: Bot) -> dict[str, dict[str, Any]]:
    """The bot's enabled plugins with the public part of their configs (secrets left out)."""
    view = await services.runner.bot_view(bot)
    out: dict[str, dict[str, Any]] = {}
    for plugin, config in sorted(view.configs.items()):
        public, _secret = split_secrets(services.host.config_schema(plugin), dict(config))
        out[plugin] = jsonable(public)
    return out


async def conversation_recording(
    services: Services, bot: Bot, conversation: Conversation, *, fork_id: str | None = None
) -> dict[str, Any]:
    """The recording a golden test embeds: the bot, its plugins' public configs, the turns (see the module docstring).

    With ``fork_id``, the turns before the forked one, then the fork's turn as it ran: the
    fork must have run to its end, with its state unedited (a replay from its message alone
    could not do what an edit did).
    """
    turns, truncated = await record_conversation(services, bot, conversation)
    if truncated:
        raise DebugInputError(f"the conversation has more than {len(turns)} turns, more than a golden test replays")
    source: dict[str, Any] = {"conversation_id": conversation.id}
    if fork_id is not None:
        fork, turn_id, values, interrupts = await Forks(services).turn_of(conversation.tenant_id, fork_id)
        if fork.conversation_id != conversation.id:
            raise DebugInputError(f"fork {fork_id} is not a fork of conversation {conversation.id}")
        if fork.edited:
            raise DebugInputError(f"fork {fork_id} had its state edited: a replay of its message alone cannot do that")
        forked = next((i for i, t in enumerate(turns) if turn_id is not None and t.turn_id == turn_id), None)
        kept = turns[:forked] if forked is not None else turns
        user = values.get("user")
        text = str(user.get("text") or "") if isinstance(user, dict) else ""
        kept.append(recorded_turn(len(kept), text, f"fork:{fork_id}", values, interrupts))
        turns = kept
        source["fork_id"] = fork_id
    return {
        "format": GOLDEN_FORMAT,
        "exported_by": f"botloom {_version()}",
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "channel": conversation.channel,
        "model": uses_model(services.engine),
        "bot": {
            "id": bot.id,
            "tenant_id": bot.tenant_id,
            "slug": bot.slug,
            "name": bot.name,
            "graph": bot.graph,
            "settings": jsonable(msgspec.to_builtins(bot.settings)),
        },
        "plugins": await public_configs(services, bot),
        "turns": [t.to_dict() for t in turns],
    }


def render_test(recording: Mapping[str, Any], *, title: str) -> str:
    """The pytest file that replays ``recording`` and checks each turn."""
    name = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "conversation"
    turns = recording.get("turns") or []
    model = recording.get("model")
    outputs = "knowledge passages, tool results" + (", the model's classifications and replies" if model else "")
    body = pprint.pformat(dict(recording), indent=1, width=110, sort_dicts=False)
    return f'''"""Golden test of {title} ({len(turns)} turns), exported by {recording.get("exported_by", "botloom")}.

It replays the conversation's user messages against the installed botloom and plugins, with the
outputs recorded when it happened ({outputs}), and checks each turn's node path, intent and
replies. A difference means that botloom, a plugin or the bot's settings (in RECORDING below)
changed what the bot does. Run it with plain pytest: ``pytest <this file>``.
"""

from __future__ import annotations

import asyncio

from botloom.runtime.golden import replay_recording

RECORDING = {body}


def test_{name}_replays_as_recorded() -> None:
    """Each turn takes the recorded path to the recorded intent and replies."""
    turns = asyncio.run(replay_recording(RECORDING))
    assert len(turns) == len(RECORDING["turns"])
    for turn in turns:
        assert "error" not in turn, f"turn {{turn['index']}} ({{turn['input']!r}}) failed: {{turn.get('error')}}"
        assert turn["replayed"] == turn["original"], f"turn {{turn['index']}} ({{turn['input']!r}}) differs"
'''


async def export_golden_test(
    services: Services, bot: Bot, conversation: Conversation, *, fork_id: str | None = None
) -> tuple[str, str]:
    """The golden test file of a conversation (or a fork of it) and a file name for it."""
    recording = await conversation_recording(services, bot, conversation, fork_id=fork_id)
    slug = f"{bot.slug}_{conversation.id[:8]}" + (f"_fork_{fork_id[:8]}" if fork_id else "")
    title = f"conversation {conversation.id} of bot {bot.slug}" + (f", fork {fork_id}" if fork_id else "")
    source = render_test(recording, title=title)
    return source, f"test_golden_{re.sub(r'[^a-zA-Z0-9_]+', '_', slug)}.py"


async def replay_recording(recording: Mapping[str, Any], *, host: PluginHost | None = None) -> list[dict[str, Any]]:
    """Replay a golden test's recording against the installed botloom and plugins; each turn compared.

    Each turn is ``{"index", "input", "original": {replies, intent, path}, "replayed": {...}, "same",
    "differs"}`` as :func:`botloom.runtime.replay.compare` makes it. Raises ``AssertionError`` when
    a plugin the bot enabled is not installed, or the recording's format is unknown.
    """
    if recording.get("format") != GOLDEN_FORMAT:
        raise AssertionError(f"unknown golden recording format {recording.get('format')!r} (expected {GOLDEN_FORMAT})")
    if host is None:
        host = PluginHost.discover()
    await host.collect()
    plugins: dict[str, dict[str, Any]] = {str(k): dict(v) for k, v in (recording.get("plugins") or {}).items()}
    missing = sorted(p for p in plugins if p not in host.infos)
    if missing:
        raise AssertionError(f"the bot's plugins {', '.join(missing)} are not installed")
    data = recording["bot"]
    now = datetime.now(UTC)
    bot = Bot(
        id=str(data["id"]),
        tenant_id=str(data["tenant_id"]),
        slug=str(data["slug"]),
        name=str(data["name"]),
        settings=msgspec.convert(data.get("settings") or {}, BotSettings),
        graph=str(data.get("graph") or "turn"),
        created_at=now,
        updated_at=now,
    )
    graph = throwaway_graph(host, bot.graph)
    definition = host.registry.graphs[bot.graph]
    tools = host.owned("tool", plugins)
    source = recording.get("source") or {}
    base = TurnContext(
        tenant_id=bot.tenant_id,
        bot=bot,
        conversation_id=str(source.get("conversation_id") or "golden"),
        channel=str(recording.get("channel") or "test"),
        engine=OfflineEngine(),
        tools=tools,
        tool_owners={name: host.registry.owner("tool", name) or "" for name in tools},
        intents=host.owned("intent", plugins),
        plugin_configs=plugins,
        search=recorded_search([]) if KNOWLEDGE_PLUGIN in plugins else None,
        passages=int(plugins.get(KNOWLEDGE_PLUGIN, {}).get("passages", 3)),
        dry_run=True,
    )
    turns: Sequence[RecordedTurn] = [RecordedTurn.from_dict(t) for t in recording.get("turns") or []]
    model = bool(recording.get("model"))

    async def context_for(turn: RecordedTurn) -> TurnContext:
        return deterministic_context(base, turn, model=model)

    return await replay_turns(graph, turns, context_for, version=definition.state_version)


__all__ = ["GOLDEN_FORMAT", "conversation_recording", "export_golden_test", "render_test", "replay_recording"]
