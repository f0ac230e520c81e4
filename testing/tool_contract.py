"""The tool contract: what every tool a plugin registers must do, run against the author's tool in one line.

::

    from botloom.testing import ToolContract
    import acme_weather.plugin

    class TestWeatherTool(ToolContract):
        plugin = acme_weather.plugin          # or the installed plugin's name: "acme_weather"
        tool = "weather"
        arguments = {"city": "Paris"}         # a valid call (optional: without it, no call is made)

The contract (each a test of the class, or all at once with :func:`check_tool`):

* the plugin loads without problems and registers the tool under its name;
* the tool's arguments are a ``msgspec.Struct`` whose JSON schema is an object with typed properties;
* it has a description a model can choose it by;
* its timeout is positive and no longer than botloom's per-call limit (``BOTLOOM_TOOL_TIMEOUT``);
* a valid call (``arguments``, with ``config`` as the bot's config) succeeds within the tool's
  timeout and its result is plain JSON;
* arguments outside the schema, a call that raises (``failing_arguments``) and a call that
  outlives the timeout come back as a failed tool result naming why, never as an exception
  that would take the turn down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from botloom.testing.loading import load_plugin, turn_context

if TYPE_CHECKING:
    from botloom.core.definitions import Tool
    from botloom.graphs.state import ToolResult

__all__ = ["ToolContract", "call_tool", "check_tool"]

BOTLOOM_TOOL_TIMEOUT = 10.0
"""botloom's default per-call limit (``BOTLOOM_TOOL_TIMEOUT``): a tool's own timeout is cut to it."""
MIN_DESCRIPTION = 10
"""Characters: a description shorter than this does not tell a model when to use the tool."""


async def call_tool(
    tool: Tool, arguments: Mapping[str, Any], *, config: Mapping[str, Any] | None = None, limit: float | None = None
) -> ToolResult:
    """Call ``tool`` as a turn does (botloom's own ``run_tool``: schema check, timeout, errors caught)."""
    from botloom.graphs.tools import run_tool

    ctx = turn_context(
        tools={tool.name: tool},
        tool_owners={tool.name: "plugin_under_test"},
        plugin_configs={"plugin_under_test": config or {}},
        tool_timeout=limit if limit is not None else BOTLOOM_TOOL_TIMEOUT,
    )
    return await run_tool(ctx, tool.name, dict(arguments), "contract:0")


def _plain_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def schema_problems(tool: Tool) -> list[str]:
    """What is wrong with the tool's argument schema, description and timeout."""
    import msgspec

    problems = []
    if not (isinstance(tool.arguments, type) and issubclass(tool.arguments, msgspec.Struct)):
        return [f"tool {tool.name!r}: its arguments are not a msgspec.Struct type"]
    schema = tool.parameters_schema()
    if schema.get("type") != "object":
        problems.append(f"tool {tool.name!r}: its argument schema is not a JSON object: {schema}")
    for field, spec in (schema.get("properties") or {}).items():
        if not any(key in spec for key in ("type", "$ref", "anyOf", "enum", "const")):
            problems.append(f"tool {tool.name!r}: argument {field!r} has no type (annotate it)")
    if len(tool.description.strip()) < MIN_DESCRIPTION:
        problems.append(
            f"tool {tool.name!r}: its description {tool.description!r} is too short to tell a model when to use it"
        )
    if not 0 < tool.timeout <= BOTLOOM_TOOL_TIMEOUT:
        problems.append(
            f"tool {tool.name!r}: timeout {tool.timeout:g}s is outside (0, {BOTLOOM_TOOL_TIMEOUT:g}] "
            "(botloom cuts every call at BOTLOOM_TOOL_TIMEOUT)"
        )
    return problems


async def check_tool(
    plugin: object | str,
    tool: str,
    *,
    name: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    failing_arguments: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every problem the tool contract finds with ``plugin``'s tool ``tool``; empty when it conforms."""
    loaded = await load_plugin(plugin, name)
    problems = loaded.problems()
    owner = loaded.host.registry.owner("tool", tool)
    if owner != loaded.name:
        return [*problems, f"plugin {loaded.name!r} registers no tool {tool!r} (owner: {owner})"]
    definition = loaded.host.registry.tools[tool]
    problems += schema_problems(definition)
    if arguments is not None:
        result = await call_tool(definition, arguments, config=config, limit=definition.timeout)
        if not result.get("ok"):
            problems.append(f"tool {tool!r} failed on valid arguments {dict(arguments)}: {result.get('error')}")
        elif not _plain_json(result.get("result")):
            problems.append(f"tool {tool!r}: its result is not plain JSON: {result.get('result')!r}")
    bad = await call_tool(definition, {"__not_an_argument__": 1}, config=config)
    if bad.get("ok") or not str(bad.get("error", "")).startswith("bad arguments"):
        problems.append(f"tool {tool!r}: arguments outside its schema were not refused: {bad}")
    if failing_arguments is not None:
        failed = await call_tool(definition, failing_arguments, config=config)
        if failed.get("ok"):
            problems.append(f"tool {tool!r}: failing_arguments {dict(failing_arguments)} did not fail")
    return problems


class ToolContract:
    """The tests every tool passes; a subclass names the plugin and the tool (and, optionally, a valid call).

    ``plugin``: the plugin object (its module) or the installed plugin's name;
    ``tool``: the tool's name; ``arguments``: a valid call (``None``: no call is made);
    ``failing_arguments``: arguments the tool fails on (raises); ``config``: the bot's
    config of the plugin for the calls.
    """

    plugin: ClassVar[object | str]
    tool: ClassVar[str]
    plugin_name: ClassVar[str | None] = None
    """The name an object that is not installed is registered as (default ``plugin_under_test``)."""
    arguments: ClassVar[Mapping[str, Any] | None] = None
    failing_arguments: ClassVar[Mapping[str, Any] | None] = None
    config: ClassVar[Mapping[str, Any]] = {}

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    async def _definition(self) -> Tool:
        loaded = await load_plugin(self.plugin, self.plugin_name)
        assert loaded.problems() == [], f"botloom found problems with plugin {loaded.name!r}"
        owner = loaded.host.registry.owner("tool", self.tool)
        assert owner == loaded.name, f"plugin {loaded.name!r} registers no tool {self.tool!r} (owner: {owner})"
        return loaded.host.registry.tools[self.tool]

    async def test_the_plugin_registers_the_tool(self) -> None:
        """The plugin loads without problems and owns the tool."""
        await self._definition()

    async def test_the_schema_description_and_timeout_are_usable(self) -> None:
        """Arguments are a Struct with typed properties, the description says something, the timeout fits."""
        problems = schema_problems(await self._definition())
        assert problems == [], problems

    async def test_a_valid_call_succeeds_with_plain_json(self) -> None:
        """The valid call succeeds within the tool's own timeout, with a JSON result."""
        if self.arguments is None:
            pytest.skip("no valid call given: set `arguments` on the contract class")
        definition = await self._definition()
        result = await call_tool(definition, self.arguments, config=self.config, limit=definition.timeout)
        assert result.get("ok"), f"failed on valid arguments: {result.get('error')}"
        assert _plain_json(result.get("result")), result

    async def test_arguments_outside_the_schema_are_a_failed_result(self) -> None:
        """An argument the schema does not have is refused before the tool runs, as a failed result."""
        result = await call_tool(await self._definition(), {"__not_an_argument__": 1}, config=self.config)
        assert not result.get("ok")
        assert str(result.get("error", "")).startswith("bad arguments"), result

    async def test_an_error_is_a_failed_result_not_a_crash(self) -> None:
        """A call that raises comes back as a failed result naming the exception."""
        if self.failing_arguments is None:
            pytest.skip("no failing call given: set `failing_arguments` on the contract class")
        result = await call_tool(await self._definition(), self.failing_arguments, config=self.config)
        assert not result.get("ok"), f"failing_arguments did not fail: {result}"
        assert str(result.get("error", "")).startswith(("raised ", "bad arguments", "timed out")), result

    async def test_a_call_past_the_timeout_is_cut(self) -> None:
        """A call that outlives its time limit is cut and answered as a failed result, the turn goes on."""
        if self.arguments is None:
            pytest.skip("no valid call given: set `arguments` on the contract class")
        import msgspec

        definition = await self._definition()
        release = asyncio.Event()
        handler = definition.handler

        async def slow(**kwargs: Any) -> Any:
            await release.wait()  # a call that never ends by itself
            return await handler(**kwargs)

        slowed = msgspec.structs.replace(definition, handler=slow)
        result = await call_tool(slowed, self.arguments, config=self.config, limit=0.05)
        assert not result.get("ok")
        assert str(result.get("error", "")).startswith("timed out"), result
