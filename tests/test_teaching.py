"""Teaching a bot (#17): synonyms and examples through the API, used on the next turn; its fallbacks listed.

Everything goes through the real app and the real turn path on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.core.storage.repositories import teaching as teaching_repository
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat
from tests.test_api_resources import api_client, bearer, make_tenant

BOT = "/api/v1/bots/acme/support"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def test_a_taught_synonym_is_used_on_the_next_turn(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat = Chat(services, demo.bot)
    before = await chat.say("how long is the zorblatt")
    assert before.intent is None
    r = await client.put(f"{BOT}/synonyms", json={"synonyms": {"Zorblatt": "warranty"}}, headers=bearer(demo.api_key))
    assert r.status_code == 200, r.text
    assert r.json() == {"synonyms": {"zorblatt": "warranty"}}
    assert (await client.get(f"{BOT}/synonyms", headers=bearer(demo.api_key))).json() == r.json()
    after = await Chat(services, demo.bot, user="user-2").say("how long is the zorblatt")
    assert after.intent == "knowledge"
    assert "two-year" in " ".join(m.text for m in after.replies)


async def test_a_taught_example_is_used_on_the_next_turn_and_forgotten_when_deleted(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    phrase = "beam me up to mission control"
    assert (await Chat(services, demo.bot).say(phrase)).intent is None
    r = await client.post(
        f"{BOT}/intents/human_handoff/examples", json={"text": f"  {phrase} "}, headers=bearer(demo.api_key)
    )
    assert r.status_code == 201, r.text
    example = r.json()
    assert example["text"] == phrase
    assert example["intent"] == "human_handoff"
    listed = (await client.get(f"{BOT}/intents/human_handoff/examples")).json()
    assert [e["id"] for e in listed] == [example["id"]]
    assert (await Chat(services, demo.bot, user="user-2").say(phrase)).intent == "human_handoff"
    r = await client.delete(f"{BOT}/intents/human_handoff/examples/{example['id']}")
    assert r.status_code == 204, r.text
    assert (await Chat(services, demo.bot, user="user-3").say(phrase)).intent is None
    r = await client.delete(f"{BOT}/intents/human_handoff/examples/{example['id']}")
    assert r.status_code == 404


async def test_the_same_example_twice_is_one_example(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    for _ in range(2):
        r = await client.post(f"{BOT}/intents/thanks/examples", json={"text": "ta very much"})
        assert r.status_code == 201, r.text
    assert len((await client.get(f"{BOT}/intents/thanks/examples")).json()) == 1


async def test_fallbacks_are_grouped_counted_and_filtered_by_time(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    for n, text in enumerate(
        ["can I pay with seashells?", "could I pay using seashells", "do you sell garden gnomes", "hello"]
    ):
        await Chat(services, demo.bot, user=f"user-{n}").say(text)
    r = await client.get(f"{BOT}/fallbacks", headers=bearer(demo.api_key))
    assert r.status_code == 200, r.text
    groups = r.json()
    assert [g["count"] for g in groups] == [2, 1]
    assert groups[0]["question"] == "could I pay using seashells"
    assert set(groups[0]["variants"]) == {"can I pay with seashells?", "could I pay using seashells"}
    assert groups[1]["question"] == "do you sell garden gnomes"
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert (await client.get(f"{BOT}/fallbacks", params={"to": past})).json() == []
    assert len((await client.get(f"{BOT}/fallbacks", params={"from": past})).json()) == 2
    assert len((await client.get(f"{BOT}/fallbacks", params={"limit": 1})).json()) == 1
    empty = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00+00:00"}
    assert (await client.get(f"{BOT}/fallbacks", params=empty)).json() == []


async def test_another_tenant_can_neither_see_nor_teach_the_bot(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    _, other = await make_tenant(client, "globex")
    hers = bearer(other)
    await client.put(f"{BOT}/synonyms", json={"synonyms": {"zorblatt": "warranty"}})
    for method, path, body in [
        ("GET", f"{BOT}/synonyms", None),
        ("PUT", f"{BOT}/synonyms", {"synonyms": {"zorblatt": "agent"}}),
        ("GET", f"{BOT}/intents/greeting/examples", None),
        ("POST", f"{BOT}/intents/greeting/examples", {"text": "zorblatt"}),
        ("DELETE", f"{BOT}/intents/greeting/examples/00000000-0000-0000-0000-000000000000", None),
        ("GET", f"{BOT}/fallbacks", None),
        ("GET", f"/api/v1/bots/{demo.bot.id}/synonyms", None),
    ]:
        r = await client.request(method, path, json=body, headers=hers)
        assert r.status_code == 404, (method, path, r.text)
    assert (await client.get(f"{BOT}/synonyms")).json() == {"synonyms": {"zorblatt": "warranty"}}
    assert (await client.get(f"{BOT}/intents/greeting/examples")).json() == []


async def test_an_example_taught_to_one_bot_is_not_used_by_another(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    tenant, key = await make_tenant(client, "globex")
    r = await client.post(f"/api/v1/tenants/{tenant['slug']}/bots", json={"slug": "help", "name": "Help"})
    assert r.status_code == 201, r.text
    r = await client.put(
        f"/api/v1/bots/{tenant['slug']}/help/plugins/smalltalk", json={"enabled": True}, headers=bearer(key)
    )
    assert r.status_code in (200, 201), r.text
    r = await client.post(f"/api/v1/bots/{tenant['slug']}/help/intents/greeting/examples", json={"text": "ahoy matey"})
    assert r.status_code == 201, r.text
    assert (await Chat(services, demo.bot).say("ahoy matey")).intent is None
    other_bot = await services.store.bots.get_by_slug(tenant["id"], "help")
    assert other_bot is not None
    assert (await Chat(services, other_bot).say("ahoy matey")).intent == "greeting"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/synonyms", {"synonyms": {"a\u0000b": "c"}}),
        ("PUT", "/synonyms", {"synonyms": {"ab": "c\nd"}}),
        ("PUT", "/synonyms", {"synonyms": {"ab": ""}}),
        ("PUT", "/synonyms", {"synonyms": {"ab": "   "}}),
        ("PUT", "/synonyms", {"synonyms": {"x" * 101: "c"}}),
        ("PUT", "/synonyms", {"synonyms": {"ab": 3}}),
        ("PUT", "/synonyms", {"synonyms": ["ab", "c"]}),
        ("PUT", "/synonyms", {"synonyms": {f"w{i}": "c" for i in range(501)}}),
        ("PUT", "/synonyms", {"synonyms": {}, "extra": 1}),
        ("PUT", "/synonyms", {}),
        ("POST", "/intents/greeting/examples", {"text": ""}),
        ("POST", "/intents/greeting/examples", {"text": " \t "}),
        ("POST", "/intents/greeting/examples", {"text": "x" * 501}),
        ("POST", "/intents/greeting/examples", {"text": "a\u0000b"}),
        ("POST", "/intents/greeting/examples", {"text": ["hi"]}),
        ("POST", "/intents/greeting/examples", {"text": "hi", "intent": "goodbye"}),
        ("GET", "/fallbacks?from=yesterday", None),
        ("GET", "/fallbacks?from=2026-01-02T00:00:00", None),
        ("GET", "/fallbacks?to=0.5", None),
        ("GET", "/fallbacks?from=2026-13-40T00:00:00Z", None),
        ("GET", "/fallbacks?limit=0", None),
        ("GET", "/fallbacks?limit=100000", None),
    ],
)
async def test_malformed_input_is_a_400(
    client: httpx.AsyncClient, demo: DemoInfo, method: str, path: str, body: object
) -> None:
    r = await client.request(method, BOT + path, json=body)
    assert r.status_code == 400, r.text
    assert (await client.get(f"{BOT}/synonyms")).json() == {"synonyms": {}}
    assert (await client.get(f"{BOT}/intents/greeting/examples")).json() == []


async def test_hostile_text_is_stored_as_text(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    hostile = {"'); DROP TABLE bot_teaching; --": '" OR 1=1 --', "{result}": "<script>alert(1)</script>"}
    r = await client.put(f"{BOT}/synonyms", json={"synonyms": hostile})
    assert r.status_code == 200, r.text
    assert (await client.get(f"{BOT}/synonyms")).json() == {
        "synonyms": {k.lower(): v.lower() for k, v in hostile.items()}
    }


async def test_unknown_intents_and_bots_are_404(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    assert (await client.post(f"{BOT}/intents/no_such_intent/examples", json={"text": "hi"})).status_code == 404
    assert (await client.get(f"{BOT}/intents/no_such_intent/examples")).status_code == 404
    assert (await client.get("/api/v1/bots/acme/nobody/synonyms")).status_code == 404
    assert (await client.delete(f"{BOT}/intents/greeting/examples/not-a-uuid")).status_code == 404


async def test_without_a_token_every_route_is_401(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    no_auth = {"Authorization": ""}
    for method, path, body in [
        ("GET", "/synonyms", None),
        ("PUT", "/synonyms", {"synonyms": {}}),
        ("GET", "/intents/greeting/examples", None),
        ("POST", "/intents/greeting/examples", {"text": "hi"}),
        ("DELETE", "/intents/greeting/examples/00000000-0000-0000-0000-000000000000", None),
        ("GET", "/fallbacks", None),
    ]:
        r = await client.request(method, BOT + path, json=body, headers=no_auth)
        assert r.status_code == 401, (method, path, r.text)


async def test_an_intent_has_at_most_max_examples(
    client: httpx.AsyncClient, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teaching_repository, "MAX_EXAMPLES", 2)
    for text in ("one", "two"):
        assert (await client.post(f"{BOT}/intents/thanks/examples", json={"text": text})).status_code == 201
    r = await client.post(f"{BOT}/intents/thanks/examples", json={"text": "three"})
    assert r.status_code == 400, r.text
    assert (await client.post(f"{BOT}/intents/thanks/examples", json={"text": "two"})).status_code == 201
    assert [e["text"] for e in (await client.get(f"{BOT}/intents/thanks/examples")).json()] == ["one", "two"]


async def test_an_oversized_body_is_refused(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    r = await client.put(
        f"{BOT}/synonyms",
        content=b'{"synonyms": {"a": "' + b"b" * 20_000_000 + b'"}}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code in (400, 413), r.text
