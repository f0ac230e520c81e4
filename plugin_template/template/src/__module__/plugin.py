"""The hook implementations of the ${plugin} plugin.

Each function marked ``@hookimpl`` implements the botloom hook of the same name;
see botloom's docs/plugins.md for every hook.
"""

from __future__ import annotations

import msgspec

from botloom import Intent, Slot, Tool, ToolContext, hookimpl


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a bot can configure when it enables this plugin."""

    greeting: str = "Hello from ${plugin}!"


async def ${tool}(name: str, context: ToolContext) -> dict[str, str]:
    """Greet someone by name."""
    greeting = str(context.config.get("greeting", "Hello"))
    return {"reply": f"{greeting} Nice to meet you, {name}."}


@hookimpl
def register_tools() -> list[Tool]:
    """The plugin's tools."""
    return [Tool.from_function(${tool})]


@hookimpl
def register_intents() -> list[Intent]:
    """The plugin's intents: each names the tools that serve it."""
    return [
        Intent(
            name="${intent}",
            description="The user introduces themselves by name.",
            examples=("my name is Ada", "I am Grace", "call me Linus", "this is Barbara speaking"),
            slots=(Slot(name="name", pattern=r"(?:name is|I am|I'm|call me|this is)\s+([A-Z][a-z]+)", required=True,
                        prompt="What is your name?"),),
            tools=("${tool}",),
        )
    ]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The schema a bot's config of this plugin must satisfy."""
    return Config
