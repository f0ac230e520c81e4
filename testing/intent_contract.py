"""The intent contract: what every intent a plugin registers must do, run against the author's intent in one line.

::

    from botloom.testing import IntentContract

    class TestWeatherIntent(IntentContract):
        plugin = "acme_weather"               # the installed plugin's name, or its module
        intent = "weather_report"

The contract (each a test of the class, or all at once with :func:`check_intent`):

* the plugin loads without problems and registers the intent under its name;
* it has at least :data:`MIN_EXAMPLES` distinct examples, and none of them is an example of
  another installed intent (the offline engine could not tell the two apart);
* every slot's pattern compiles and extracts a value from at least one example, and a
  required slot has a pattern or a prompt (else the offline engine can never fill it);
* every tool it names is registered by an installed plugin, and each of the tool's required
  arguments is one of the intent's slots (``act`` passes the filled slots as arguments);
* the offline engine, with every installed intent, classifies each of its examples as this intent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

import pytest

from botloom.testing.loading import PluginUnderTest, load_plugin, turn_context

if TYPE_CHECKING:
    from botloom.core.definitions import Intent
    from botloom.graphs.state import TurnState

__all__ = ["MIN_EXAMPLES", "IntentContract", "check_intent"]

MIN_EXAMPLES = 3
"""Fewer examples than this and the offline engine recognises little but the examples themselves."""


def _intent(loaded: PluginUnderTest, name: str) -> Intent:
    owner = loaded.host.registry.owner("intent", name)
    assert owner == loaded.name, f"plugin {loaded.name!r} registers no intent {name!r} (owner: {owner})"
    intent: Intent = loaded.host.registry.intents[name]
    return intent


def _plain(text: str) -> str:
    return " ".join(text.lower().split()).strip(" ?!.,")


def example_problems(loaded: PluginUnderTest, intent: Intent) -> list[str]:
    """Too few examples, repeated ones, examples another intent has too."""
    problems = []
    plain = [_plain(e) for e in intent.examples]
    if len(set(plain)) < MIN_EXAMPLES:
        problems.append(f"intent {intent.name!r} has {len(set(plain))} distinct examples; give at least {MIN_EXAMPLES}")
    if len(set(plain)) != len(plain):
        problems.append(f"intent {intent.name!r} repeats an example")
    for other in loaded.host.registry.intents.values():
        if other.name == intent.name:
            continue
        shared = set(plain) & {_plain(e) for e in other.examples}
        if shared:
            problems.append(f"intent {intent.name!r} shares examples with intent {other.name!r}: {sorted(shared)}")
    return problems


def slot_problems(intent: Intent) -> list[str]:
    """Slots whose pattern extracts from no example, required slots that can never be filled offline."""
    import re

    from botloom.graphs.engines import fill_slots

    problems = []
    found = [fill_slots(intent, example) for example in intent.examples]
    for slot in intent.slots:
        if slot.pattern is not None:
            try:
                re.compile(slot.pattern)
            except re.error as exc:
                problems.append(f"slot {slot.name!r} of intent {intent.name!r}: bad pattern: {exc}")
                continue
            if not any(values.get(slot.name) for values in found):
                problems.append(
                    f"slot {slot.name!r} of intent {intent.name!r}: its pattern {slot.pattern!r} extracts nothing "
                    "from any example (add an example that carries the value)"
                )
        elif slot.required and not slot.prompt:
            problems.append(
                f"slot {slot.name!r} of intent {intent.name!r} is required but has neither a pattern nor a prompt"
            )
    return problems


def tool_problems(loaded: PluginUnderTest, intent: Intent) -> list[str]:
    """Tools named that no plugin registers, tool arguments no slot fills."""
    problems = []
    slots = {slot.name for slot in intent.slots}
    for name in intent.tools:
        tool = loaded.host.registry.tools.get(name)
        if tool is None:
            problems.append(f"intent {intent.name!r} names tool {name!r}, which no installed plugin registers")
            continue
        import msgspec

        required = {f.name for f in msgspec.structs.fields(tool.arguments) if f.required}
        unfilled = sorted(required - slots)
        if unfilled:
            problems.append(
                f"intent {intent.name!r}: tool {name!r} requires {unfilled}, which are not slots of the intent"
            )
    return problems


async def classification_problems(loaded: PluginUnderTest, intent: Intent) -> list[str]:
    """Examples the offline engine, with every installed intent, classifies as another intent."""
    from botloom.graphs.engines import OfflineEngine
    from botloom.graphs.state import turn_input

    engine = OfflineEngine()
    ctx = turn_context(intents=loaded.host.registry.intents, engine=engine)
    problems = []
    for example in intent.examples:
        found = await engine.classify(cast("TurnState", turn_input("contract", example)), ctx)
        if found.intent != intent.name:
            problems.append(f"example {example!r} of intent {intent.name!r} reads as intent {found.intent!r}")
    return problems


async def check_intent(plugin: object | str, intent: str, *, name: str | None = None) -> list[str]:
    """Every problem the intent contract finds with ``plugin``'s intent ``intent``; empty when it conforms."""
    loaded = await load_plugin(plugin, name)
    problems = loaded.problems()
    owner = loaded.host.registry.owner("intent", intent)
    if owner != loaded.name:
        return [*problems, f"plugin {loaded.name!r} registers no intent {intent!r} (owner: {owner})"]
    definition = loaded.host.registry.intents[intent]
    return (
        problems
        + example_problems(loaded, definition)
        + slot_problems(definition)
        + tool_problems(loaded, definition)
        + await classification_problems(loaded, definition)
    )


class IntentContract:
    """The tests every intent passes; a subclass names the plugin (object or installed name) and the intent."""

    plugin: ClassVar[object | str]
    intent: ClassVar[str]
    plugin_name: ClassVar[str | None] = None
    """The name an object that is not installed is registered as (default ``plugin_under_test``)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    async def _load(self) -> tuple[PluginUnderTest, Intent]:
        loaded = await load_plugin(self.plugin, self.plugin_name)
        assert loaded.problems() == [], f"botloom found problems with plugin {loaded.name!r}"
        return loaded, _intent(loaded, self.intent)

    async def test_the_plugin_registers_the_intent(self) -> None:
        """The plugin loads without problems and owns the intent."""
        await self._load()

    async def test_the_examples_are_enough_and_its_own(self) -> None:
        """Enough distinct examples, none shared with another installed intent."""
        loaded, intent = await self._load()
        problems = example_problems(loaded, intent)
        assert problems == [], problems

    async def test_the_slots_extract_from_the_examples(self) -> None:
        """Each slot's pattern compiles and extracts a value from an example; required slots can be filled."""
        _, intent = await self._load()
        problems = slot_problems(intent)
        assert problems == [], problems

    async def test_the_tools_named_exist_and_the_slots_fill_them(self) -> None:
        """Each tool named is registered, and its required arguments are slots of the intent."""
        loaded, intent = await self._load()
        problems = tool_problems(loaded, intent)
        assert problems == [], problems

    async def test_the_offline_engine_reads_each_example_as_the_intent(self) -> None:
        """With every installed intent, each example is classified as this intent."""
        loaded, intent = await self._load()
        problems = await classification_problems(loaded, intent)
        assert problems == [], problems
