"""Knowledge search: a tool the model can call to search the bot's knowledge base.

The turn graph's ``retrieve`` step searches the knowledge base on every turn of
a bot that enables this plugin; this tool lets a language model search again
with its own query.
"""

from __future__ import annotations

from typing import Any

import msgspec

from botloom import Tool, ToolContext, hookimpl


class KnowledgeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the knowledge plugin."""

    passages: int = msgspec.field(default=3)
    """How many passages ``retrieve`` keeps for the answer."""


async def search_knowledge(query: str, context: ToolContext, limit: int = 3) -> list[dict[str, Any]]:
    """Search the knowledge base for passages that answer a question."""
    if context.search_knowledge is None:
        return []
    passages = await context.search_knowledge(query, max(1, min(limit, 10)))
    return [{"document": p.document, "title": p.title, "text": p.text, "score": round(p.score, 3)} for p in passages]


@hookimpl
def register_tools() -> list[Tool]:
    """The ``search_knowledge`` tool."""
    return [Tool.from_function(search_knowledge, timeout=10.0)]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The knowledge plugin's config."""
    return KnowledgeConfig
