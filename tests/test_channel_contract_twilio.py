"""The channel contract, run against the Twilio channel: SMS and WhatsApp, in both reply modes."""

from __future__ import annotations

import asyncio
import re
from typing import ClassVar

import pytest

from botloom.testing.channel_contract import ChannelContract, ChannelDriver, ContractContext, Outcome
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config, twiml_replies


class TwilioDriver(ChannelDriver):
    """Posts webhooks signed with the twilio package's validator; replies reach a local Twilio peer."""

    channel: ClassVar[str] = "twilio"

    def __init__(self, peer: TwilioPeer, *, mode: str, sender: str) -> None:
        self.peer = peer
        self.mode = mode
        self.sender = sender
        self.push = mode == "rest"  # twiml: the replies come in the answer

    async def enable(self, ctx: ContractContext) -> None:
        response = await ctx.client.put(
            "/api/v1/bots/acme/support/plugins/twilio",
            json={"enabled": True, "config": twilio_config(self.peer, self.mode)},
            headers={"Authorization": f"Bearer {ctx.demo.api_key}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["config"]["auth_token"] == "********"

    async def post(self, ctx: ContractContext, bot: str, form: dict[str, str], token: str) -> Outcome:
        response = await post_signed(ctx.client, f"/channels/twilio/{bot}", form, token=token)
        replies = twiml_replies(response.text) if response.status_code == 200 else []
        return Outcome(status=response.status_code, replies=replies)

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        sid = "SM" + re.sub(r"[^0-9a-f]", "0", message_id.lower()).rjust(32, "0")[-32:]
        form = inbound_form(text, sid=sid, sender=self.sender)
        return await self.post(ctx, bot, form, "not-the-token" if forged else self.peer.auth_token)

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        form = {"AccountSid": self.peer.account_sid, "Body": "hello"}  # no MessageSid, From or To
        return await self.post(ctx, "acme/support", form, self.peer.auth_token)

    async def delivered(self, ctx: ContractContext, count: int, timeout: float = 30.0) -> list[str]:
        sent = await asyncio.to_thread(self.peer.wait_for, count, timeout)
        assert all(m.to == self.sender for m in sent), sent
        return [m.body for m in sent]

    def fail_deliveries(self, ctx: ContractContext, times: int) -> None:
        self.peer.fail(times, status=503, code=20503)


class TestTwilioChannelContract(ChannelContract):
    @pytest.fixture(
        params=[
            ("rest", "+15550001111"),
            ("rest", "whatsapp:+15550001111"),
            ("twiml", "+15550001111"),
            ("twiml", "whatsapp:+15550001111"),
        ],
        ids=["sms-rest", "whatsapp-rest", "sms-twiml", "whatsapp-twiml"],
    )
    def driver(self, request: pytest.FixtureRequest, peer: TwilioPeer) -> ChannelDriver:
        mode, sender = request.param
        return TwilioDriver(peer, mode=mode, sender=sender)
