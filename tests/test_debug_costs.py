"""The price of each model call and of each turn, in the debugger's API (``BOTLOOM_MODEL_PRICES``).

Real PostgreSQL, the real langchain-openai client against the scripted OpenAI server, the
real app: the scripted answers carry exact token counts, so each cost is known exactly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from botloom.core.domain import ModelSettings
from botloom.core.pricing import DEFAULT_PRICES, ModelPrice, price_table
from botloom.core.settings import Settings, SettingsError, load_settings
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.testing.openai import Reply, ScriptedOpenAI, classification
from tests.conftest import ADMIN_TOKEN
from tests.helpers import Chat, api_client


@pytest.fixture
def priced_settings(llm_settings: Settings) -> Settings:
    return msgspec.structs.replace(llm_settings, model_prices="house-model=1/2, gpt-4.1=unknown")


@pytest.fixture
async def priced(priced_settings: Settings, database_url: str) -> AsyncIterator[tuple[Services, DemoInfo]]:
    async with open_services(priced_settings, url=database_url) as services:
        yield services, await ensure_demo(services)


def answer(content: str | dict[str, Any], prompt: int, completion: int) -> Reply:
    """A scripted answer with exact token counts."""
    text = content if isinstance(content, str) else json.dumps(content)
    return Reply(content=text, usage={"prompt_tokens": prompt, "completion_tokens": completion})


async def turn_of(client: httpx.AsyncClient, conversation_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation's newest turn: as the turn list shows it, and in detail."""
    page = await client.get(f"/api/v1/conversations/{conversation_id}/turns", params={"limit": 1})
    assert page.status_code == 200, page.text
    listed = page.json()["turns"][0]
    detail = await client.get(f"/api/v1/conversations/{conversation_id}/turns/{listed['checkpoint_id']}")
    assert detail.status_code == 200, detail.text
    return listed, detail.json()


async def test_each_model_call_and_each_turn_has_its_cost(
    priced: tuple[Services, DemoInfo], priced_settings: Settings, openai: ScriptedOpenAI
) -> None:
    services, demo = priced
    openai.script(
        answer(classification("none", confidence=0.2), 1000, 200),
        answer("Express shipping costs 9.90 euros.", 2000, 100),
    )
    chat = Chat(services, demo.bot)
    await chat.say("how much is express shipping?")
    assert chat.conversation_id is not None
    async with api_client(create_app(priced_settings, services=services)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        listed, detail = await turn_of(client, chat.conversation_id)

        calls = detail["turn"]["model_calls"]
        assert [(c["node"], c["model"], c["prompt_tokens"], c["completion_tokens"]) for c in calls] == [
            ("classify", "gpt-4o-mini", 1000, 200),
            ("respond", "gpt-4o-mini", 2000, 100),
        ]
        # gpt-4o-mini's list price: $0.15 per million input tokens, $0.60 per million output tokens.
        assert calls[0]["cost_usd"] == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
        assert calls[1]["cost_usd"] == pytest.approx((2000 * 0.15 + 100 * 0.60) / 1e6)
        assert detail["turn"]["cost_usd"] == pytest.approx(0.00063)
        assert detail["turn"]["tokens"] == 3300 and detail["turn"]["unpriced_models"] == []
        assert listed["cost_usd"] == detail["turn"]["cost_usd"], "the turn list shows each turn's cost"

        for model, expected in [("house-model", (500 * 1 + 50 * 2) / 1e6), ("mystery-model", None), ("gpt-4.1", None)]:
            bot = await services.store.bots.update(
                demo.tenant.id,
                demo.bot.id,
                settings=msgspec.structs.replace(demo.bot.settings, model=ModelSettings(model=model)),
            )
            assert bot is not None
            openai.script(answer(classification("none", confidence=0.2), 400, 40), answer("Sure.", 100, 10))
            chat.bot = bot
            await chat.say("and to Norway?")
            listed, detail = await turn_of(client, chat.conversation_id)
            calls = detail["turn"]["model_calls"]
            assert {c["model"] for c in calls} == {model}
            if expected is None:
                assert [c["cost_usd"] for c in calls] == [None, None], f"{model}: unknown, never guessed"
                assert detail["turn"]["cost_usd"] is None and detail["turn"]["unpriced_models"] == [model]
            else:
                assert detail["turn"]["cost_usd"] == pytest.approx(expected), "the operator's price"
            assert listed["cost_usd"] == detail["turn"]["cost_usd"]
            assert detail["turn"]["tokens"] == 550


async def test_a_turn_without_a_model_costs_nothing(settings: Settings, services: Services, demo: DemoInfo) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    assert chat.conversation_id is not None
    async with api_client(create_app(settings, services=services)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        listed, detail = await turn_of(client, chat.conversation_id)
    assert detail["turn"]["model_calls"] == [] and detail["turn"]["cost_usd"] == 0.0
    assert listed["tokens"] == 0


def test_the_price_table_setting() -> None:
    assert price_table("") == dict(DEFAULT_PRICES)
    table = price_table("gpt-4o-mini=0.2/0.8, local-llama=0/0, gpt-4o=unknown")
    assert table["gpt-4o-mini"] == ModelPrice(0.2, 0.8) and table["local-llama"] == ModelPrice(0.0, 0.0)
    assert "gpt-4o" not in table
    for bad, says in [
        ("gpt-4o-mini", "model=input/output"),
        ("gpt-4o-mini=0.15", "input/output"),
        ("gpt-4o-mini=cheap/0.6", "numbers"),
        ("gpt-4o-mini=-1/0.6", "zero or more"),
        ("gpt-4o-mini=nan/0.6", "finite"),
        ("bad name=1/2", "model=input/output"),
    ]:
        with pytest.raises(SettingsError, match="BOTLOOM_MODEL_PRICES") as caught:
            load_settings(environ={"BOTLOOM_MODEL_PRICES": bad})
        assert says in str(caught.value), bad
