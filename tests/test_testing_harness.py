"""botloom.testing's harness: a bot with a plugin under test, spoken to through the pytest plugin's fixtures."""

from __future__ import annotations

import pytest

from botloom.testing import BotHarness, ScriptedOpenAI, ToolCall, TurnOutcome
from tests.kit_plugins import weather_plugin


@pytest.mark.botloom_plugin(weather_plugin(), "weather", config={"units": "imperial"})
async def test_a_turn_reports_replies_intent_tools_and_path(botloom_harness: BotHarness) -> None:
    result = await botloom_harness.send("what's the weather in Paris")
    assert isinstance(result, TurnOutcome)
    assert result.intent == "weather_report"
    assert result.slots == {"city": "Paris"}
    assert result.tool_names == ["weather"]
    call = result.tools[0]
    assert (call.arguments, call.ok, call.error) == ({"city": "Paris"}, True, None)
    assert call.result == {"city": "Paris", "units": "imperial", "sky": "clear"}, "the bot's config reached the tool"
    assert result.path == ["retrieve", "classify", "act", "respond"]
    assert len(result.replies) == 1
    assert "Paris" in result.reply
    assert result.errors == []


@pytest.mark.botloom_plugin(weather_plugin(), "weather")
async def test_a_failing_tool_is_a_failed_call_and_the_turn_goes_on(botloom_harness: BotHarness) -> None:
    result = await botloom_harness.send("weather in Atlantis")
    assert result.tool_names == ["weather"]
    assert result.tools[0].ok is False
    assert "LookupError: no such city" in (result.tools[0].error or "")
    assert result.replies, "the user got the fallback"


@pytest.mark.botloom_plugin(weather_plugin(), "weather")
async def test_turns_of_one_user_continue_one_conversation(botloom_harness: BotHarness) -> None:
    first = await botloom_harness.send("what's the weather")
    assert first.replies == ["Which city?"]
    second = await botloom_harness.send("in Rome")
    assert second.conversation_id == first.conversation_id
    assert second.tool_names == ["weather"]
    other = await botloom_harness.send("hello", user="someone-else")
    assert other.conversation_id != first.conversation_id


@pytest.mark.botloom_plugin(weather_plugin(), "weather")
async def test_a_repeated_message_id_runs_no_second_turn(botloom_harness: BotHarness) -> None:
    first = await botloom_harness.send("weather in Berlin please", message_id="m-1")
    again = await botloom_harness.send("weather in Berlin please", message_id="m-1")
    assert again.duplicate
    assert again.replies == first.replies
    assert again.tools == []


async def test_register_with_a_config_the_schema_refuses_fails_clearly(botloom_harness: BotHarness) -> None:
    botloom_harness.register(weather_plugin(), "weather", config={"unit": "kelvin"})
    with pytest.raises(Exception, match="unit"):
        await botloom_harness.start()


async def test_a_plugin_that_is_not_installed_is_named(botloom_harness: BotHarness) -> None:
    botloom_harness.plugins["not_installed_anywhere"] = {}
    with pytest.raises(RuntimeError, match="'not_installed_anywhere' is not loaded"):
        await botloom_harness.start()


async def test_registering_after_the_start_is_refused(botloom_harness: BotHarness) -> None:
    await botloom_harness.start()
    with pytest.raises(RuntimeError, match="before the harness starts"):
        botloom_harness.register(weather_plugin(), "weather")


@pytest.mark.botloom_plugin(weather_plugin(), "weather")
async def test_the_scripted_model_drives_the_bot(botloom_harness: BotHarness, scripted_model: ScriptedOpenAI) -> None:
    scripted_model.script(
        {"intent": "weather_report", "confidence": 0.9, "slots": {"city": "Oslo"}, "wants_human": False},
        "Clear skies in Oslo.",
    )
    result = await botloom_harness.send("how's Oslo looking?")
    assert result.intent == "weather_report"
    assert result.tools[0].arguments == {"city": "Oslo"}
    assert result.replies == ["Clear skies in Oslo."]
    assert len(scripted_model.chat_requests) == 2, "the real client called the scripted server"
    assert ToolCall  # the scripted answers an author may queue
