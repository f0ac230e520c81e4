"""REST chat and the web chat socket, through the real app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo
from tests.helpers import api_client, disable


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    return create_app(settings, services=services)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app) as test_client:
        yield test_client


@pytest.fixture
def socket_app(settings: Settings, database_url: str) -> Litestar:
    """An app that opens its own services (on the test client's event loop) and creates the demo."""
    return create_app(msgspec.structs.replace(settings, database_url=database_url), demo=True)


def auth(demo: DemoInfo) -> dict[str, str]:
    return {"Authorization": f"Bearer {demo.api_key}"}


async def test_rest_chat_conversation(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    first = await client.post("/api/v1/bots/acme/support/messages", json={"text": "hi"}, headers=auth(demo))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["replies"][0]["text"] == "Hello! How can I help you today?"
    assert body["intent"] == "greeting" and body["escalated"] is False
    conversation = body["conversation_id"]

    second = await client.post(
        f"/api/v1/bots/{demo.bot.id}/messages",
        json={"text": "where is my order 1234", "conversation_id": conversation, "message_id": "m-2"},
        headers=auth(demo),
    )
    assert "shipped with DHL" in second.json()["replies"][0]["text"]
    retried = await client.post(
        f"/api/v1/bots/{demo.bot.id}/messages",
        json={"text": "where is my order 1234", "conversation_id": conversation, "message_id": "m-2"},
        headers=auth(demo),
    )
    assert retried.json()["duplicate"] is True
    assert retried.json()["replies"] == second.json()["replies"]
    stored = await client.get(f"/api/v1/conversations/{conversation}", headers=auth(demo))
    assert stored.status_code == 200, stored.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"text": ""}', 400),
        (b'{"text": 5}', 400),
        (b'{"text": "hi", "extra": 1}', 400),
        (b'{"text": "hi", "conversation_id": "00000000-0000-4000-8000-000000000000"}', 404),
        (json.dumps({"text": "x" * 5000}).encode(), 400),
        (b"x" * 2_000_000, 413),
    ],
    ids=["malformed", "empty", "wrong-type", "unknown-field", "unknown-conversation", "too-long", "oversized"],
)
async def test_rest_chat_rejects_bad_input(
    client: httpx.AsyncClient, demo: DemoInfo, services: Services, body: bytes, status: int
) -> None:
    response = await client.post(
        "/api/v1/bots/acme/support/messages",
        content=body,
        headers={**auth(demo), "content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    assert await services.store.conversations.list_all(demo.tenant.id) == [], "nothing half-written"


async def test_rest_chat_needs_the_channel_and_a_key(
    client: httpx.AsyncClient, demo: DemoInfo, services: Services
) -> None:
    no_key = await client.post("/api/v1/bots/acme/support/messages", json={"text": "hi"})
    assert no_key.status_code == 401
    await disable(services, demo.bot, "rest")
    disabled = await client.post("/api/v1/bots/acme/support/messages", json={"text": "hi"}, headers=auth(demo))
    assert disabled.status_code == 403
    assert "not enabled" in disabled.json()["detail"]
    unknown = await client.post("/api/v1/bots/acme/nobody/messages", json={"text": "hi"}, headers=auth(demo))
    assert unknown.status_code == 404


async def _frames(socket: Any, until: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(await socket.receive_text())
        frames.append(frame)
        if frame["type"] in (until, "error"):
            return frames


def test_web_chat_socket_and_reconnect(socket_app: Litestar) -> None:
    with TestClient(app=socket_app) as client:
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            socket.send_text(json.dumps({"type": "hello", "conversation_id": None}))
            ready = json.loads(socket.receive_text())
            assert ready["type"] == "ready" and ready["history"] == []
            conversation = ready["conversation_id"]
            socket.send_text(json.dumps({"type": "message", "id": "c-1", "text": "hello"}))
            frames = [json.loads(socket.receive_text()) for _ in range(3)]
            assert [f["type"] for f in frames] == ["typing", "reply", "done"]
            assert frames[1]["text"] == "Hello! How can I help you today?"
            socket.send_text("{broken")
            assert json.loads(socket.receive_text())["type"] == "error"
        with client.websocket_connect("/api/v1/bots/acme/support/ws") as socket:
            socket.send_text(json.dumps({"type": "hello", "conversation_id": conversation}))
            again = json.loads(socket.receive_text())
            assert again["conversation_id"] == conversation
            assert [m["text"] for m in again["history"]] == ["hello", "Hello! How can I help you today?"]
            socket.send_text(json.dumps({"type": "message", "id": "c-1", "text": "hello"}))
            frames = [json.loads(socket.receive_text()) for _ in range(3)]
            assert frames[1]["text"] == "Hello! How can I help you today?", "a resent message is answered once"
        page = client.get("/chat/acme/support")
        assert page.status_code == 200 and '<main id="log"' in page.text
        assert "frame-ancestors 'self'" in page.headers["content-security-policy"]


def test_web_chat_refuses_foreign_origins_and_unknown_bots(socket_app: Litestar) -> None:
    from litestar.exceptions import WebSocketDisconnect

    with TestClient(app=socket_app) as client:
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect(
                "/api/v1/bots/acme/support/ws", headers={"origin": "https://evil.example"}
            ) as socket,
        ):
            socket.receive_text()
        assert refused.value.code == 4403
        with (
            pytest.raises(WebSocketDisconnect) as missing,
            client.websocket_connect("/api/v1/bots/acme/nobody/ws") as socket,
        ):
            socket.receive_text()
        assert missing.value.code == 4404


async def test_health_ready_metrics(client: httpx.AsyncClient, demo: DemoInfo) -> None:
    assert (await client.get("/health")).json() == {"status": "ok", "checks": {}}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True}
    await client.post("/api/v1/bots/acme/support/messages", json={"text": "hi"}, headers=auth(demo))
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "botloom_turns_total" in metrics.text and "botloom_turn_seconds_bucket" in metrics.text
    assert (await client.get("/health")).headers["x-request-id"]


async def test_rate_limit_answers_429_with_retry_after(settings: Settings, services: Services, demo: DemoInfo) -> None:
    limited = create_app(msgspec.structs.replace(settings, rate_limit_per_minute=3), services=services)
    async with api_client(limited) as client:
        codes = [(await client.get("/api/v1/bots/acme/support", headers=auth(demo))).status_code for _ in range(4)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        last = await client.get("/api/v1/bots/acme/support", headers=auth(demo))
        assert int(last.headers["retry-after"]) >= 1
        assert (await client.get("/health")).status_code == 200, "health is never limited"
