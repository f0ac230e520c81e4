"""botloom.testing's tool and intent contracts: a conforming plugin passes, each kind of defect is named."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

import msgspec
import pytest

from botloom import Intent, Slot, Tool, hookimpl
from botloom.testing import IntentContract, ToolContract, check_intent, check_tool
from tests.kit_plugins import weather_plugin


class TestWeatherToolContract(ToolContract):
    plugin = weather_plugin()
    plugin_name = "weather"
    tool = "weather"
    arguments: ClassVar[dict[str, Any]] = {"city": "Paris"}
    failing_arguments: ClassVar[dict[str, Any]] = {"city": "Atlantis"}


class TestWeatherIntentContract(IntentContract):
    plugin = weather_plugin()
    intent = "weather_report"


class TestBuiltInSmalltalkIntentContract(IntentContract):
    plugin = "smalltalk"
    intent = "greeting"


def plugin_of(*, tools: list[Tool] = (), intents: list[Intent] = ()) -> Any:  # type: ignore[assignment]
    @hookimpl
    def register_tools() -> list[Tool]:
        return list(tools)

    @hookimpl
    def register_intents() -> list[Intent]:
        return list(intents)

    return SimpleNamespace(register_tools=register_tools, register_intents=register_intents)


async def lookup(order: str) -> dict[str, str]:
    """Look an order up by its number."""
    return {"order": order}


async def test_a_conforming_tool_and_intent_have_no_problems() -> None:
    assert await check_tool(weather_plugin(), "weather", arguments={"city": "Rome"}) == []
    assert await check_intent(weather_plugin(), "weather_report") == []


async def test_a_tool_the_plugin_does_not_register_is_named() -> None:
    problems = await check_tool(weather_plugin(), "forecast")
    assert problems == ["plugin 'plugin_under_test' registers no tool 'forecast' (owner: None)"]


async def test_an_installed_plugin_that_is_missing_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="'no_such_plugin' is not installed"):
        await check_tool("no_such_plugin", "x")


async def test_a_vague_description_and_a_long_timeout_are_named() -> None:
    tool = Tool.from_function(lookup, description="Lookup.", timeout=60)
    problems = await check_tool(plugin_of(tools=[tool]), "lookup")
    assert any("description 'Lookup.' is too short" in p for p in problems), problems
    assert any("timeout 60s is outside" in p for p in problems), problems


async def test_a_struct_that_ignores_unknown_arguments_is_named() -> None:
    class Loose(msgspec.Struct):
        order: str = ""

    async def handler(order: str = "") -> str:
        return order

    tool = Tool(name="loose", description="Look an order up by its number.", handler=handler, arguments=Loose)
    problems = await check_tool(plugin_of(tools=[tool]), "loose")
    assert problems == [f"tool 'loose': arguments outside its schema were not refused: {problems[0].split(': ', 2)[2]}"]


async def test_a_result_that_is_not_json_and_a_failing_valid_call_are_named() -> None:
    async def odd(order: str) -> object:
        """Return something JSON cannot carry."""
        return {1j}

    async def broken(order: str) -> str:
        """Fail on every call, whatever the order."""
        raise RuntimeError("down")

    plugin = plugin_of(tools=[Tool.from_function(odd), Tool.from_function(broken)])
    odd_problems = await check_tool(plugin, "odd", arguments={"order": "1"})
    assert odd_problems == [], "botloom turns what JSON cannot carry into text: a plain result after all"
    assert await check_tool(plugin_of(tools=[Tool.from_function(broken)]), "broken", arguments={"order": "1"}) == [
        "tool 'broken' failed on valid arguments {'order': '1'}: raised RuntimeError: down"
    ]


async def test_failing_arguments_that_do_not_fail_are_named() -> None:
    problems = await check_tool(
        plugin_of(tools=[Tool.from_function(lookup)]), "lookup", failing_arguments={"order": "1"}
    )
    assert problems == ["tool 'lookup': failing_arguments {'order': '1'} did not fail"]


async def test_a_hanging_tool_is_cut_by_its_timeout() -> None:
    from botloom.testing.tool_contract import call_tool

    async def hang(order: str) -> str:
        """Wait for an order that never comes."""
        await asyncio.Event().wait()
        return order

    result = await call_tool(Tool.from_function(hang, timeout=0.05), {"order": "1"}, limit=0.05)
    assert result["ok"] is False
    assert result["error"] == "timed out after 0.05s"


async def test_intent_defects_are_each_named() -> None:
    intent = Intent(
        name="parcel_status",
        description="Where is my order?",
        examples=("where is my order", "where is my order?", "hello"),
        slots=(
            Slot(name="order", pattern=r"#(\d+)", required=True),
            Slot(name="email", required=True),
        ),
        tools=("lookup", "missing_tool", "weather"),
    )
    plugin = plugin_of(tools=[Tool.from_function(lookup)], intents=[intent])
    problems = await check_intent(plugin, "parcel_status")
    assert "intent 'parcel_status' has 2 distinct examples; give at least 3" in problems
    assert "intent 'parcel_status' repeats an example" in problems
    assert any(p.startswith("intent 'parcel_status' shares examples with intent 'greeting'") for p in problems), (
        problems
    )
    assert any("slot 'order' of intent 'parcel_status': its pattern" in p for p in problems), problems
    assert "slot 'email' of intent 'parcel_status' is required but has neither a pattern nor a prompt" in problems
    assert "intent 'parcel_status' names tool 'missing_tool', which no installed plugin registers" in problems
    assert "example 'where is my order' of intent 'parcel_status' reads as intent 'order_status'" in problems


async def test_a_tool_argument_no_slot_fills_is_named() -> None:
    intent = Intent(
        name="parcel_status",
        description="Where is my order?",
        examples=("where is my order 12", "status of order 34", "track order 56"),
        slots=(Slot(name="number", pattern=r"(\d+)"),),
        tools=("lookup",),
    )
    problems = await check_intent(plugin_of(tools=[Tool.from_function(lookup)], intents=[intent]), "parcel_status")
    assert problems == ["intent 'parcel_status': tool 'lookup' requires ['order'], which are not slots of the intent"]
