"""Previewing a teaching change (#17): which recent answers it would change, with nothing stored or sent.

Real app, real turn path on PostgreSQL: conversations are had first, then previewed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat
from tests.test_api_resources import api_client, bearer, make_tenant

BOT = "/api/v1/bots/acme/support"
PREVIEW = f"{BOT}/teaching/preview"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def test_a_preview_lists_the_answers_a_change_would_change_and_stores_nothing(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat = Chat(services, demo.bot)
    assert (await chat.say("how long is the zorblatt")).intent is None
    shipping = await chat.say("how much is express shipping?")
    assert shipping.intent == "knowledge"
    assert (await Chat(services, demo.bot, user="user-2").say("hello")).intent == "greeting"
    stored = len(await services.store.messages.list_all(demo.bot.tenant_id, chat.conversation_id, limit=100))

    r = await client.post(
        PREVIEW,
        json={
            "synonyms": {"Zorblatt": "warranty"},
            # A taught example pulls a question near it: the side effect the preview is for.
            "examples": {"human_handoff": ["how much is express shipping"]},
        },
        headers=bearer(demo.api_key),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["conversations"] == 2
    assert body["turns"] == 3
    assert body["truncated"] is False
    changed = {c["message"]: c for c in body["changed"]}
    assert set(changed) == {"how long is the zorblatt", "how much is express shipping?"}
    zorblatt = changed["how long is the zorblatt"]
    assert zorblatt["conversation_id"] == chat.conversation_id
    assert zorblatt["turn"] == 0
    assert zorblatt["before"]["intent"] is None
    assert zorblatt["after"]["intent"] == "knowledge"
    assert "two-year" in " ".join(zorblatt["after"]["replies"])
    moved = changed["how much is express shipping?"]
    assert (moved["before"]["intent"], moved["after"]["intent"]) == ("knowledge", "human_handoff")

    # Nothing was taught, stored or sent.
    assert (await client.get(f"{BOT}/synonyms")).json() == {"synonyms": {}}
    assert (await client.get(f"{BOT}/intents/human_handoff/examples")).json() == []
    after = await services.store.messages.list_all(demo.bot.tenant_id, chat.conversation_id, limit=100)
    assert len(after) == stored
    assert (await Chat(services, demo.bot, user="user-3").say("how long is the zorblatt")).intent is None


async def test_a_change_that_changes_nothing_lists_nothing(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    await Chat(services, demo.bot).say("how much is express shipping?")
    r = await client.post(PREVIEW, json={"synonyms": {"zorblatt": "warranty"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"conversations": 1, "turns": 1, "truncated": False, "changed": []}


async def test_a_preview_of_a_bot_without_conversations_is_empty(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    r = await client.post(PREVIEW, json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"conversations": 0, "turns": 0, "truncated": False, "changed": []}


@pytest.mark.parametrize(
    "body",
    [
        {"synonyms": ["ab", "c"]},
        {"synonyms": {"ab": ""}},
        {"synonyms": {"ab": "   "}},
        {"synonyms": {"a\u0000b": "c"}},
        {"synonyms": {f"w{i}": "c" for i in range(501)}},
        {"examples": {"greeting": [""]}},
        {"examples": {"greeting": [" \t "]}},
        {"examples": {"greeting": ["x" * 501]}},
        {"examples": {"greeting": "hi"}},
        {"examples": {f"i{i}": ["hi"] for i in range(51)}},
        {"conversations": 0},
        {"conversations": 21},
        {"conversations": "all"},
        {"extra": 1},
        [],
        "preview",
    ],
)
async def test_malformed_input_is_a_400(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, body: object
) -> None:
    r = await client.post(PREVIEW, json=body)
    assert r.status_code == 400, r.text
    assert (await client.get(f"{BOT}/synonyms")).json() == {"synonyms": {}}


async def test_an_unknown_intent_is_a_404(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    r = await client.post(PREVIEW, json={"examples": {"no_such_intent": ["hi"]}})
    assert r.status_code == 404, r.text
    assert "no_such_intent" in r.json()["detail"]


async def test_another_tenant_cannot_preview_and_no_token_is_401(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    await Chat(services, demo.bot).say("how long is the zorblatt")
    _, other = await make_tenant(client, "globex")
    r = await client.post(PREVIEW, json={"synonyms": {"zorblatt": "warranty"}}, headers=bearer(other))
    assert r.status_code == 404, r.text
    assert "zorblatt" not in r.text
    r = await client.post(PREVIEW, json={}, headers={"Authorization": ""})
    assert r.status_code == 401, r.text


async def test_a_bot_whose_graph_is_gone_is_a_404_not_a_crash(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    bot = await services.store.bots.create(demo.bot.tenant_id, "orphan", "Orphan", graph="no_such_graph")
    r = await client.post(f"/api/v1/bots/acme/{bot.slug}/teaching/preview", json={})
    assert r.status_code == 404, r.text
    assert "no_such_graph" in r.json()["detail"]
