"""The API schema says what the server does (issue #12 item 9): each mismatch schemathesis found, pinned.

The full property-based run is ``tests/test_api_schemathesis.py`` (slow); these
are the findings, one request each, so a regression shows in the fast suite.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from botloom.core.settings import Settings, load_settings
from botloom.runtime.services import Services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo
from tests.test_api_resources import api_client


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The schema the app serves at ``/schema/openapi.json`` (built without services)."""
    document: dict[str, Any] = create_app(load_settings(environ={}), workers=False).openapi_schema.to_schema()
    return document


@pytest.fixture
async def client(settings: Settings, services: Services, demo: DemoInfo) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


def component(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = schema["components"]["schemas"][name]
    return found


@pytest.mark.parametrize(
    "name", ["TenantCreate", "KeyCreate", "BotCreate", "BotPatch", "BotSettingsPatch", "PluginPut", "DocumentIn"]
)
def test_request_bodies_declare_that_unknown_fields_are_refused(schema: dict[str, Any], name: str) -> None:
    assert component(schema, name)["additionalProperties"] is False


def test_the_rest_chat_body_declares_what_the_channel_refuses(schema: dict[str, Any]) -> None:
    rest = component(schema, "RestMessage")
    assert rest["additionalProperties"] is False
    assert rest["properties"]["text"]["pattern"] == r"\S"  # blank text is refused


def test_constraints_the_server_enforces_are_in_the_schema(schema: dict[str, Any]) -> None:
    settings = component(schema, "BotSettingsPatch")["properties"]
    assert settings["allowed_origins"]["items"]["minLength"] == 1  # [""] is refused
    assert settings["knowledge_threshold"]["minimum"] == 0  # a bound of 0 was dropped
    assert settings["burst_window_ms"]["minimum"] == 0
    content = component(schema, "DocumentIn")["properties"]["content"]
    assert content["minLength"] == 1
    assert "pattern" in content  # blank or NUL-holding text is refused
    search = schema["paths"]["/api/v1/bots/{bot}/knowledge/search"]["get"]["parameters"]
    assert next(p for p in search if p["name"] == "threshold")["schema"]["minimum"] == 0


def test_a_400_body_matches_one_schema_not_two(schema: dict[str, Any]) -> None:
    answer = schema["paths"]["/api/v1/bots/{bot}/messages"]["post"]["responses"]["400"]
    assert "oneOf" not in answer["content"]["application/json"]["schema"]


def test_the_chat_page_documents_its_404_and_its_html(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/chat/{bot}"]["get"]["responses"]
    assert "404" in responses
    assert list(responses["200"]["content"]) == ["text/html"]


def test_ready_documents_its_503(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/ready"]["get"]["responses"]
    assert set(responses) >= {"200", "503"}


def test_rate_limited_routes_document_429(schema: dict[str, Any]) -> None:
    for path in ("/api/v1/tenants", "/api/v1/bots/{bot}", "/api/v1/bots/{bot}/messages", "/chat/{bot}"):
        for method, operation in schema["paths"][path].items():
            assert "429" in operation["responses"], f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/tenants", "GET, OPTIONS, POST"),
        ("/api/v1/tenants/acme", "DELETE, GET, OPTIONS"),
        ("/api/v1/tenants/acme/keys", "GET, OPTIONS, POST"),
        ("/api/v1/tenants/acme/bots", "GET, OPTIONS, POST"),
        ("/api/v1/bots/acme/support", "DELETE, GET, OPTIONS, PATCH"),
        ("/api/v1/bots/acme/support/knowledge", "GET, OPTIONS, POST"),
        ("/api/v1/bots/0/conversations", "GET, OPTIONS"),  # the path the schema names, not the bot 0/conversations
    ],
)
async def test_options_allows_every_method_of_the_path(client: httpx.AsyncClient, path: str, allowed: str) -> None:
    r = await client.options(path)
    assert r.status_code == 204
    assert r.headers["allow"] == allowed


async def test_a_json_body_is_typed_strictly(client: httpx.AsyncClient) -> None:
    for field, value in (("redact_personal_data", 0), ("burst_window_ms", "5"), ("knowledge_threshold", "0.5")):
        r = await client.patch("/api/v1/bots/acme/support", json={field: value})
        assert r.status_code == 400, r.text
        assert r.json()["extra"][0]["key"] == field
        assert r.json()["detail"].startswith(f"invalid request: {field}: Expected")
    r = await client.patch("/api/v1/bots/acme/support", json={"settings": {"model": {"max_tokens": "5"}}})
    assert r.json()["extra"][0]["key"] == "settings.model.max_tokens"
    assert (await client.get("/api/v1/bots/acme/support")).json()["settings"]["redact_personal_data"] is False
    r = await client.patch("/api/v1/bots/acme/support", json={"burst_window_ms": 250.0})  # a whole number is an integer
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["burst_window_ms"] == 250


async def test_a_refused_pattern_is_said_in_words(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tenants", json={"slug": "x-y", "name": "a\u0001b"})
    assert r.status_code == 400
    assert r.json()["detail"] == "invalid request: name: must not contain control characters"
    r = await client.post("/api/v1/bots/acme/support/knowledge", json={"name": "a.md", "content": " \n "})
    assert r.json()["detail"] == "invalid request: content: must have visible text and no NUL character (U+0000)"


async def test_an_undeclared_method_on_a_sub_resource_is_a_405_or_names_no_bot(client: httpx.AsyncClient) -> None:
    """``PATCH /bots/{bot}/conversations`` is not declared: 405 for a bot id; ``0/conversations`` names no bot."""
    r = await client.patch("/api/v1/bots/0/conversations")
    assert r.status_code == 404, r.text  # before its body is read: the bot 0/conversations does not exist
    assert r.json()["detail"] == "no bot '0/conversations'"
    path = f"/api/v1/bots/{uuid.uuid4()}/conversations"
    r = await client.patch(path, json={})
    assert r.status_code == 405, r.text
    assert r.json()["detail"] == f"PATCH is not allowed on {path}; it answers GET"
