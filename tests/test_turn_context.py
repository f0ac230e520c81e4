"""A turn's knowledge search exists only for a bot that enabled the ``knowledge`` plugin, for nodes and tools alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from botloom import Intent, Tool, ToolContext, hookimpl
from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from tests.helpers import Chat, disable, enable, host_with


class Probe:
    """An intent whose tool records what its ``ToolContext`` offers to search."""

    def __init__(self) -> None:
        self.seen: list[object] = []
        probe = self

        async def knowledge_probe(context: ToolContext) -> dict[str, str]:
            """Record the knowledge search the tool was given."""
            probe.seen.append(context.search_knowledge)
            return {"reply": "probed"}

        self.tool = Tool.from_function(knowledge_probe)

    @hookimpl
    def register_tools(self) -> list[Tool]:
        return [self.tool]

    @hookimpl
    def register_intents(self) -> list[Intent]:
        return [
            Intent(
                name="probe",
                description="probe the tool context",
                examples=("probe the tool context", "run the probe"),
                tools=("knowledge_probe",),
            )
        ]


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def probed(settings: Settings, database_url: str, probe: Probe) -> AsyncIterator[Services]:
    async with open_services(settings, url=database_url, host=host_with(("probe", probe))) as opened:
        yield opened


async def test_tools_get_a_knowledge_search_only_with_the_knowledge_plugin(probed: Services, probe: Probe) -> None:
    services = probed
    demo: DemoInfo = await ensure_demo(services)
    await enable(services, demo.bot, "probe")

    with_knowledge = Chat(services, demo.bot, user="with")
    assert (await with_knowledge.say("run the probe")).intent == "probe"
    conversation = await services.store.conversations.get(demo.tenant.id, with_knowledge.conversation_id or "")
    assert conversation is not None
    assert (await services.runner.context(demo.bot, conversation)).search is not None
    assert callable(probe.seen[-1]), "the control: the demo bot enabled the knowledge plugin"

    await disable(services, demo.bot, "knowledge")
    without = Chat(services, demo.bot, user="without")
    assert (await without.say("run the probe")).intent == "probe"
    assert probe.seen[-1] is None, "ToolContext.search_knowledge without the knowledge plugin"
    assert (await services.runner.context(demo.bot, conversation)).search is None
    [retrieve] = [step for step in (await without.state())["trace"] if step["node"] == "retrieve"]
    assert retrieve["summary"] == "no knowledge base enabled"
