"""A third party's channels: a response channel and a socket channel with their own routes, through the host.

The plugin below is not built in: it is registered like an installed plugin
(``PluginHost.register``, as entry points are), declares its routes through the
channel contract, and the server mounts them without knowing the channel. The
whole channel contract runs against its response channel, and its socket channel
answers frames through the same inbound path as web chat.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import msgspec
import pytest
from litestar.testing import TestClient

from botloom import (
    ChannelAdapter,
    ChannelHost,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    ChannelRoute,
    ChannelSocket,
    InboundMessage,
    Secret,
    TurnAnswer,
    hookimpl,
)
from botloom.core.host import PluginHost
from botloom.core.messages import InboundMessage as CoreInboundMessage
from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.app import create_app
from botloom.server.demo import DemoInfo
from botloom.testing.channel_contract import GREETING, ChannelContract, ChannelDriver, ContractContext, Outcome
from tests.helpers import api_client, host_with

SECRET = "a-fax-secret-of-16+"
EVIL = "https://evil.example"


class FaxConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The test plugin's per-bot config."""

    secret: Secret
    prefix: str = ""


class HostileIdentifier(ValueError):
    """What ``InboundMessage`` raises for an identifier botloom cannot keep (simulated by this channel)."""


class FaxChannel(ChannelAdapter[FaxConfig]):
    """A response channel: ``POST /api/v1/bots/{bot}/fax`` with a secret; the replies are the plain-text answer."""

    name: ClassVar[str] = "fax"
    kind: ClassVar[ChannelKind] = "response"
    conversations: ClassVar[Literal["key", "id"]] = "key"
    configs_seen: ClassVar[list[Any]] = []

    def routes(self) -> tuple[ChannelRoute, ...]:
        return (
            ChannelRoute(path="/api/v1/bots/{bot}/fax", summary="A fax arrives"),
            ChannelRoute(path="/api/v1/bots/{bot}/fax/status", method="GET", auth="api_key", summary="Fax status"),
        )

    def page(self, request: ChannelRequest, config: FaxConfig) -> ChannelResponse:
        return ChannelResponse(status=200, body=f"fax line of {request.bot_ref}".encode(), media_type="text/plain")

    def verify(self, request: ChannelRequest, config: FaxConfig) -> None:
        self.configs_seen.append(config)
        if request.headers.get("x-fax-secret") != config.secret:
            raise ChannelRejected(403, "wrong fax secret")

    def parse(self, request: ChannelRequest, config: FaxConfig) -> list[InboundMessage]:
        try:
            body = json.loads(request.body)
            sender, text, number = str(body["from"]), str(body["text"]), str(body["id"])
        except (ValueError, KeyError, TypeError):
            raise ChannelRejected(400, "a fax is a JSON object with from, text and id") from None
        if "\x00" in number:  # what InboundMessage itself will refuse: a NUL character in an identifier
            raise HostileIdentifier("the message id contains a NUL character")
        return [InboundMessage(channel=self.name, text=text, sender=sender, idempotency_key=number)]

    def render(self, request: ChannelRequest, answers: list[TurnAnswer], config: FaxConfig) -> ChannelResponse:
        lines = [config.prefix + reply.text for answer in answers for reply in answer.replies]
        return ChannelResponse(status=200, body="\n".join(lines).encode(), media_type="text/plain")


class EchoSocketChannel(ChannelAdapter[None]):
    """A socket channel: each text frame is a message, each reply a frame back."""

    name: ClassVar[str] = "echo"
    kind: ClassVar[ChannelKind] = "socket"
    conversations: ClassVar[Literal["key", "id"]] = "id"

    def routes(self) -> tuple[ChannelRoute, ...]:
        return (ChannelRoute(path="/api/v1/bots/{bot}/echo", method="WEBSOCKET"),)

    def verify(self, request: ChannelRequest, config: None) -> None:
        if request.headers.get("origin") == EVIL:
            raise ChannelRejected(403, "origin not allowed")

    def parse(self, request: ChannelRequest, config: None) -> list[InboundMessage]:
        return [InboundMessage(channel=self.name, text=request.body.decode(), sender="someone")]

    async def converse(self, socket: ChannelSocket, host: ChannelHost, config: None) -> None:
        conversation = await host.open_conversation(None, "someone")
        while True:
            text = await socket.receive()
            message = InboundMessage(channel=self.name, text=text, sender="someone", conversation_key=conversation.id)
            answer = await host.answer(message)
            for reply in answer.replies:
                await socket.send(reply.text)


def fax_plugin() -> Any:
    """The third party's plugin module: its hooks, as an installed package would define them."""

    @hookimpl
    def register_channels() -> list[ChannelAdapter[Any]]:
        return [FaxChannel(), EchoSocketChannel()]

    @hookimpl
    def plugin_config_schema() -> type[msgspec.Struct]:
        return FaxConfig

    return SimpleNamespace(register_channels=register_channels, plugin_config_schema=plugin_config_schema)


@pytest.fixture
async def services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    """The services with the built-in plugins and the third party's plugin, registered as an installed one."""
    async with open_services(settings, url=database_url, host=host_with(("faxes", fax_plugin()))) as opened:
        yield opened


class FaxDriver(ChannelDriver):
    """Sends faxes with the bot's secret; the replies are in the answer."""

    channel: ClassVar[str] = "fax"

    async def enable(self, ctx: ContractContext) -> None:
        response = await ctx.client.put(
            "/api/v1/bots/acme/support/plugins/faxes",
            json={"enabled": True, "config": {"secret": SECRET, "prefix": "> "}},
            headers={"Authorization": f"Bearer {ctx.demo.api_key}"},
        )
        assert response.status_code == 200, response.text

    async def post(self, ctx: ContractContext, bot: str, body: bytes, secret: str) -> Outcome:
        response = await ctx.client.post(f"/api/v1/bots/{bot}/fax", content=body, headers={"x-fax-secret": secret})
        replies = [line.removeprefix("> ") for line in response.text.splitlines()] if response.is_success else []
        return Outcome(status=response.status_code, replies=replies)

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        body = json.dumps({"from": "+15550001111", "text": text, "id": message_id}).encode()
        return await self.post(ctx, bot, body, "forged" if forged else SECRET)

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        return await self.post(ctx, "acme/support", b'{"from": 5', SECRET)


class TestThirdPartyResponseChannelContract(ChannelContract):
    @pytest.fixture
    def driver(self) -> ChannelDriver:
        return FaxDriver()


async def test_a_third_party_response_channel_answers_through_the_host(
    settings: Settings, services: Services, demo: DemoInfo
) -> None:
    async with api_client(create_app(settings, services=services)) as client:
        await FaxDriver().enable(ContractContext(services=services, demo=demo, client=client, app=None))
        FaxChannel.configs_seen.clear()
        body = json.dumps({"from": "+15550001111", "text": "hello", "id": "fax-1"}).encode()
        answer = await client.post("/api/v1/bots/acme/support/fax", content=body, headers={"x-fax-secret": SECRET})
        assert answer.status_code == 200, answer.text
        assert answer.text == f"> {GREETING}"
        assert FaxChannel.configs_seen == [FaxConfig(secret=SECRET, prefix="> ")], "the config, typed, once"
        schema = (await client.get("/schema/openapi.json")).json()
        assert "/api/v1/bots/{bot}/fax" in schema["paths"], "the route the plugin declared is in the API schema"
        assert schema["paths"]["/api/v1/bots/{bot}/fax"]["post"]["summary"] == "A fax arrives"
    conversations = await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)
    assert [(c.channel, c.external_key) for c in conversations] == [("fax", "+15550001111")]


async def test_a_hostile_identifier_is_a_400_naming_it_and_nothing_is_stored(
    settings: Settings, services: Services, demo: DemoInfo
) -> None:
    async with api_client(create_app(settings, services=services)) as client:
        await FaxDriver().enable(ContractContext(services=services, demo=demo, client=client, app=None))
        body = json.dumps({"from": "+15550001111", "text": "hello", "id": "fax\x00-1"}).encode()
        answer = await client.post("/api/v1/bots/acme/support/fax", content=body, headers={"x-fax-secret": SECRET})
    assert answer.status_code == 400, answer.text
    assert "NUL character" in answer.json()["detail"]
    assert await services.store.conversations.list_all(demo.tenant.id) == []


async def test_a_page_that_needs_an_api_key_shows_only_the_callers_own_bots(
    settings: Settings, services: Services, demo: DemoInfo
) -> None:
    other = await services.store.tenants.create("other", "Other")
    _, other_key = await services.store.api_keys.create(other.id)
    async with api_client(create_app(settings, services=services)) as client:
        await FaxDriver().enable(ContractContext(services=services, demo=demo, client=client, app=None))
        path = "/api/v1/bots/acme/support/fax/status"
        owner = await client.get(path, headers={"Authorization": f"Bearer {demo.api_key}"})
        stranger = await client.get(path, headers={"Authorization": f"Bearer {other_key}"})
        anonymous = await client.get(path)
    assert owner.status_code == 200, owner.text
    assert owner.text == "fax line of acme/support"
    assert stranger.status_code == 404, "another tenant's key must not reach the bot's page"
    assert "fax line" not in stranger.text
    assert anonymous.status_code == 401


def _inbound_message_refuses_nul() -> bool:
    try:
        CoreInboundMessage(channel="rest", text="hi", sender="x", idempotency_key="a\x00b")
    except ValueError:
        return True
    return False


@pytest.mark.skipif(
    not _inbound_message_refuses_nul(), reason="InboundMessage does not check identifiers yet (core/messages.py)"
)
async def test_rest_chat_answers_a_nul_in_the_message_id_with_a_400(
    settings: Settings, services: Services, demo: DemoInfo
) -> None:
    async with api_client(create_app(settings, services=services)) as client:
        answer = await client.post(
            "/api/v1/bots/acme/support/messages",
            json={"text": "hello", "message_id": "m\x00-1"},
            headers={"Authorization": f"Bearer {demo.api_key}"},
        )
    assert answer.status_code == 400, answer.text
    assert "message_id: must not contain control characters" in answer.json()["detail"], "the field and problem named"
    assert await services.store.conversations.list_all(demo.tenant.id) == []


def test_a_third_party_socket_channel_converses_through_the_host(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app opens its own services with the plugin (on the test client's event loop) and mounts its socket."""
    from litestar.exceptions import WebSocketDisconnect

    host = host_with(("faxes", fax_plugin()))  # what discovering the installed plugins finds
    monkeypatch.setattr(PluginHost, "discover", classmethod(lambda cls, **kwargs: host))
    app = create_app(msgspec.structs.replace(settings, database_url=database_url), workers=False, demo=True)
    with TestClient(app=app) as client:
        services: Services = client.app.state.services

        async def enable() -> None:
            bot = await services.store.bots.find("acme/support")
            assert bot is not None
            await services.store.plugin_settings.put(
                bot.tenant_id, bot.id, "faxes", enabled=True, config={"secret": SECRET}, secrets={}
            )

        with client.portal() as portal:
            portal.call(enable)
        with client.websocket_connect("/api/v1/bots/acme/support/echo") as socket:
            socket.send_text("hello")
            assert socket.receive_text() == GREETING
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect(
                "/api/v1/bots/acme/support/echo", headers={"origin": "https://evil.example"}
            ) as socket,
        ):
            socket.receive_text()
        assert refused.value.code == 4403
