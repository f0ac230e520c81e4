"""A small third-party plugin (a tool and an intent) for the tests of botloom.testing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec

from botloom import Intent, Slot, Tool, ToolContext, hookimpl


class WeatherConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    units: str = "metric"


async def weather(city: str, context: ToolContext) -> dict[str, Any]:
    """The weather in a city."""
    if city == "Atlantis":
        raise LookupError("no such city")
    return {"city": city, "units": context.config.get("units", "metric"), "sky": "clear"}


def weather_plugin() -> Any:
    @hookimpl
    def register_tools() -> list[Tool]:
        return [Tool.from_function(weather)]

    @hookimpl
    def register_intents() -> list[Intent]:
        return [
            Intent(
                name="weather_report",
                description="The user asks for the weather in a city.",
                examples=(
                    "what's the weather in Paris",
                    "weather in Berlin please",
                    "is it sunny in Rome",
                    "weather in Atlantis",
                ),
                slots=(Slot(name="city", pattern=r"in ([A-Z][a-z]+)", required=True, prompt="Which city?"),),
                tools=("weather",),
                answer="It is {result} today.",
            )
        ]

    @hookimpl
    def plugin_config_schema() -> type[msgspec.Struct]:
        return WeatherConfig

    return SimpleNamespace(
        register_tools=register_tools, register_intents=register_intents, plugin_config_schema=plugin_config_schema
    )
