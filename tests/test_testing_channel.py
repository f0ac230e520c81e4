"""botloom.testing's channel harness: a third party's channel driven over HTTP through the real app, signed."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from botloom.testing import ChannelHarness, SigningRequest
from tests.test_channel_contract_plugin import SECRET, fax_plugin

FAX_ROUTE = "/api/v1/bots/{bot}/fax"


@pytest.fixture
def botloom_plugins() -> dict[str, dict[str, object]]:
    return {"faxes": {"secret": SECRET, "prefix": "> "}, "smalltalk": {}}


@pytest.fixture
def botloom_signer() -> object:
    def sign(request: SigningRequest) -> Mapping[str, str]:
        return {"x-fax-secret": str(request.config["secret"])}

    return sign


def fax(text: str, number: str) -> bytes:
    return json.dumps({"from": "+15550001111", "text": text, "id": number}).encode()


@pytest.mark.botloom_plugin(fax_plugin(), "faxes", config={"secret": SECRET, "prefix": "> "})
async def test_a_signed_request_is_answered_and_a_forged_one_refused(botloom_channel: ChannelHarness) -> None:
    answer = await botloom_channel.post(FAX_ROUTE, content=fax("hello", "f-1"))
    assert answer.status_code == 200, answer.text
    assert answer.text.startswith("> "), "the channel's config (its prefix) reached the channel"
    forged = await botloom_channel.post(FAX_ROUTE, content=fax("hello", "f-2"), forged=True)
    assert forged.status_code == 403, forged.text
    unsigned = await botloom_channel.post(FAX_ROUTE, content=fax("hello", "f-3"), signed=False)
    assert unsigned.status_code == 403, unsigned.text
    assert [(d, t) for d, t, _ in await botloom_channel.transcript()] == [
        ("inbound", "hello"),
        ("outbound", answer.text.removeprefix("> ")),
    ], "the refused requests stored nothing"


@pytest.mark.botloom_plugin(fax_plugin(), "faxes", config={"secret": SECRET})
async def test_the_route_is_the_test_bots_and_another_bot_is_a_404(botloom_channel: ChannelHarness) -> None:
    assert botloom_channel.url(FAX_ROUTE) == "/api/v1/bots/test/bot/fax"
    answer = await botloom_channel.post(FAX_ROUTE, content=fax("hello", "f-1"), bot="test/nobody")
    assert answer.status_code == 404, answer.text
    config = await botloom_channel.config()
    assert config["secret"] == SECRET, "the signer sees the secret decrypted"


@pytest.mark.botloom_plugin(fax_plugin(), "faxes", config={"secret": SECRET})
async def test_the_transcript_shows_a_message_waiting_in_the_webhook_inbox(botloom_channel: ChannelHarness) -> None:
    """A push channel's webhook acknowledges after one inbox row (the default): the author's transcript shows it."""
    from botloom.core.messages import InboundMessage

    await botloom_channel.start()
    services, bot = botloom_channel.harness.services, botloom_channel.harness.bot
    waiting = InboundMessage(channel="faxes", text="hello", sender="+15550001111", idempotency_key="f-inbox")
    assert await services.store.inbound.to_inbox(bot.tenant_id, bot.id, waiting)
    assert await botloom_channel.transcript() == [("inbound", "hello", "received")]
