"""Bot references in URLs answer in the user's own words: a clear 404 or 405, never the internal ``acme:support``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.test_api_resources import api_client, bearer


@pytest.fixture
async def client(settings: Settings, services: Services, demo: DemoInfo) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        c.headers.update(bearer(demo.api_key))
        yield c


@pytest.mark.parametrize("bot", ["0", "acme", "support"])
async def test_a_bot_that_is_neither_an_id_nor_a_pair_is_a_404_naming_it(client: httpx.AsyncClient, bot: str) -> None:
    r = await client.post(f"/api/v1/bots/{bot}/messages", json={"text": "hi"})
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == f"no bot {bot!r}"


async def test_the_pair_still_wins_for_what_a_bot_answers(client: httpx.AsyncClient) -> None:
    """``/api/v1/bots/acme/support`` is the bot acme/support; GET ``/api/v1/bots/0/messages`` the bot 0/messages."""
    assert (await client.get("/api/v1/bots/acme/support")).json()["slug"] == "support"
    r = await client.get("/api/v1/bots/0/messages")
    assert r.status_code == 404
    assert r.json()["detail"] == "no bot '0/messages'"
    assert (await client.post("/api/v1/bots/acme/support/messages", json={"text": "hi"})).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/api/v1/bots/acme/support/conversations", "GET"),
        ("DELETE", "/api/v1/bots/acme/support/conversations", "GET"),
        ("POST", "/api/v1/bots/acme/support", "GET, DELETE, PATCH"),
        ("PUT", "/api/v1/tenants", "GET, POST"),
    ],
)
async def test_a_method_a_route_does_not_answer_is_a_405_in_the_users_words(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    r = await client.request(method, path, json={"x": 1})
    assert r.status_code == 405, r.text
    assert r.json()["detail"] == f"{method} is not allowed on {path}; it answers {allowed}"
    assert "OPTIONS" in r.headers["allow"]
    assert ":support" not in r.text


async def test_validation_errors_show_the_path_as_the_user_wrote_it(client: httpx.AsyncClient) -> None:
    for body in ([], "text"):
        r = await client.post("/api/v1/bots/acme/support/messages", json=body)
        assert r.status_code == 400, r.text
        assert "acme:support" not in r.text
        assert "/api/v1/bots/acme/support/messages" in r.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"), [("PATCH", "/api/v1/bots/acme/support"), ("PUT", "/api/v1/bots/acme/support/plugins/smalltalk")]
)
async def test_a_missing_or_wrong_body_is_called_the_body(client: httpx.AsyncClient, method: str, path: str) -> None:
    missing = await client.request(method, path)
    assert missing.status_code == 400
    assert missing.json()["detail"] == (
        "invalid request: body: missing: send a JSON object (content-type: application/json)"
    )
    wrong = await client.request(method, path, json=[])
    assert wrong.json()["detail"] == "invalid request: body: Expected `object`, got `array`"
