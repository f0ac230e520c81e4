"""The ``retrieve`` step searches knowledge only for bots that enabled the knowledge plugin."""

from __future__ import annotations

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat

QUESTION = "how much does express shipping cost?"


async def test_a_bot_without_the_knowledge_plugin_searches_no_knowledge(services: Services, demo: DemoInfo) -> None:
    """The demo bot's documents stay ingested; only the plugin is switched off."""
    setting = await services.store.plugin_settings.get(demo.tenant.id, demo.bot.id, "knowledge")
    assert setting is not None and setting.enabled
    enabled = Chat(services, demo.bot, user="with-knowledge")
    await enabled.say(QUESTION)
    assert (await enabled.state())["passages"], "the control: with the plugin on, retrieve finds the shipping page"

    await services.store.plugin_settings.put(
        demo.tenant.id, demo.bot.id, "knowledge", enabled=False, config=dict(setting.config), secrets={}
    )
    chat = Chat(services, demo.bot, user="without-knowledge")
    result = await chat.say(QUESTION)
    state = await chat.state()
    assert state["passages"] == []
    [retrieve] = [step for step in state["trace"] if step["node"] == "retrieve"]
    assert retrieve["summary"] == "no knowledge base enabled"
    assert "9.90" not in " ".join(r.text for r in result.replies), "no answer from the knowledge base"
