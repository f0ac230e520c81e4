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


async def test_a_tool_the_original_turn_did_not_call_is_named_not_run(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat = Chat(services, demo.bot)
    assert (await chat.say("zorblatt 1234")).intent is None
    answered = await Chat(services, demo.bot, user="user-2").say("where is my order 1234")
    assert answered.intent == "order_status"
    r = await client.post(PREVIEW, json={"synonyms": {"zorblatt": "where is my order"}})
    assert r.status_code == 200, r.text
    (changed,) = r.json()["changed"]
    assert changed["message"] == "zorblatt 1234"
    assert changed["before"] == {"intent": None, "replies": changed["before"]["replies"], "tools_not_run": []}
    # The proposal reaches the order lookup, which the original turn never called: not run, and said so.
    assert changed["after"]["intent"] == "order_status"
    assert changed["after"]["tools_not_run"] == ["order_status"]


async def test_each_conversation_gets_its_share_of_the_turns(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botloom.runtime import teaching_preview

    monkeypatch.setattr(teaching_preview, "MAX_PREVIEW_TURNS", 4)
    long = Chat(services, demo.bot)
    for text in ("hello", "how long is the zorblatt", "thanks", "how much is express shipping?", "bye"):
        await long.say(text)
    await Chat(services, demo.bot, user="user-2").say("how long is the zorblatt")
    r = await client.post(PREVIEW, json={"synonyms": {"zorblatt": "warranty"}})
    assert r.status_code == 200, r.text
    body = r.json()
    # Two turns each: the long conversation's first two (its share), the short one's only turn.
    assert (body["conversations"], body["turns"], body["truncated"]) == (2, 3, True)
    assert sorted((c["conversation_id"] == long.conversation_id, c["turn"]) for c in body["changed"]) == [
        (False, 0),
        (True, 1),
    ]


async def test_a_proposal_that_could_not_be_applied_is_a_409(
    client: httpx.AsyncClient, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botloom.server.api import teaching

    r = await client.post(f"{BOT}/intents/greeting/examples", json={"text": "ahoy"})
    assert r.status_code == 201, r.text
    monkeypatch.setattr(teaching, "MAX_EXAMPLES", 2)
    ok = await client.post(PREVIEW, json={"examples": {"greeting": ["ahoy", "howdy"]}})
    assert ok.status_code == 200, ok.text
    r = await client.post(PREVIEW, json={"examples": {"greeting": ["howdy", "hiya"]}})
    assert r.status_code == 409, r.text
    assert "greeting" in r.json()["detail"]
