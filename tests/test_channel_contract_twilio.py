"""The channel contract, run against the Twilio channel: SMS and WhatsApp, in both reply modes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar
from xml.etree import ElementTree

import pytest

from tests.channel_contract import ChannelContract, ChannelDriver, ContractContext, Outcome
from tests.twilio_peer import ACCOUNT_SID, AUTH_TOKEN, TwilioPeer, inbound_form, sign

PUBLIC = "https://bots.example.com"


def twiml_replies(body: str) -> list[str]:
    """The texts of the ``<Message>`` elements of a TwiML answer."""
    if not body.strip():
        return []
    return [(m.text or "").strip() for m in ElementTree.fromstring(body).iter("Message")]


class TwilioDriver(ChannelDriver):
    """Posts webhooks signed with the twilio package's validator; replies reach a local Twilio peer."""

    channel: ClassVar[str] = "twilio"

    def __init__(self, peer: TwilioPeer, *, mode: str, sender: str) -> None:
        self.peer = peer
        self.mode = mode
        self.sender = sender
        self.push = mode == "rest"  # twiml: the replies come in the answer

    def config(self) -> dict[str, object]:
        return {
            "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "reply_mode": self.mode,
            "public_base_url": PUBLIC, "api_base_url": self.peer.base_url,
        }

    async def enable(self, ctx: ContractContext) -> None:
        response = await ctx.client.put(
            "/api/v1/bots/acme/support/plugins/twilio", json={"enabled": True, "config": self.config()},
            headers={"Authorization": f"Bearer {ctx.demo.api_key}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["config"]["auth_token"] == "********"

    async def post(self, ctx: ContractContext, bot: str, form: dict[str, str], signature: str) -> Outcome:
        response = await ctx.client.post(f"/channels/twilio/{bot}", data=form, headers={"X-Twilio-Signature": signature})
        replies = twiml_replies(response.text) if response.status_code == 200 else []
        return Outcome(status=response.status_code, replies=replies)

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        sid = "SM" + re.sub(r"[^0-9a-f]", "0", message_id.lower()).rjust(32, "0")[-32:]
        form = inbound_form(text, sid=sid, sender=self.sender)
        signature = sign(f"{PUBLIC}/channels/twilio/{bot}", form, "not-the-token" if forged else AUTH_TOKEN)
        return await self.post(ctx, bot, form, signature)

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        form = {"AccountSid": ACCOUNT_SID, "Body": "hello"}  # no MessageSid, From or To
        return await self.post(ctx, "acme/support", form, sign(f"{PUBLIC}/channels/twilio/acme/support", form))

    async def delivered(self, ctx: ContractContext, count: int, timeout: float = 30.0) -> list[str]:
        sent = self.peer.wait_for(count, timeout)
        assert all(m.to == self.sender for m in sent), sent
        return [m.body for m in sent]

    def fail_deliveries(self, ctx: ContractContext, times: int) -> None:
        self.peer.fail(times, status=503, code=20503)


@pytest.fixture
def peer() -> Iterator[TwilioPeer]:
    with TwilioPeer() as running:
        yield running


class TestTwilioChannelContract(ChannelContract):
    @pytest.fixture(
        params=[("rest", "+15550001111"), ("rest", "whatsapp:+15550001111"), ("twiml", "+15550001111"),
                ("twiml", "whatsapp:+15550001111")],
        ids=["sms-rest", "whatsapp-rest", "sms-twiml", "whatsapp-twiml"],
    )
    def driver(self, request: pytest.FixtureRequest, peer: TwilioPeer) -> ChannelDriver:
        mode, sender = request.param
        return TwilioDriver(peer, mode=mode, sender=sender)
