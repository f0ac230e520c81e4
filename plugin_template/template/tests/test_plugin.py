"""Tests of the ${plugin} plugin: botloom finds it, and its tool answers."""

from __future__ import annotations

from botloom import ToolContext
from botloom.core.host import PluginHost


async def test_botloom_discovers_the_plugin() -> None:
    host = await PluginHost.discover().collect()
    assert "${plugin}" in host.infos, host.problems
    assert host.registry.owner("tool", "${tool}") == "${plugin}"
    assert host.registry.owner("intent", "${intent}") == "${plugin}"
    assert not [p for p in host.problems if p.plugin == "${plugin}"]


async def test_the_tool_greets_by_name() -> None:
    host = await PluginHost.discover().collect()
    tool = host.registry.tools["${tool}"]
    context = ToolContext(tenant_id="t", bot_id="b", conversation_id="c", config={"greeting": "Hi!"})
    result = await tool.invoke({"name": "Ada"}, context)
    assert result == {"reply": "Hi! Nice to meet you, Ada."}
