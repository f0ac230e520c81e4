"""The channel contract, run against the e-mail channel: raw mail posted by a relay, replies through real SMTP."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from botloom.testing.channel_contract import ChannelContract, ChannelDriver, ContractContext, Outcome
from tests.email_client import BOT_ADDRESS, USER, email_config, post_mail, raw_mail
from tests.mailservers import RunningSmtp


class EmailDriver(ChannelDriver):
    """Posts raw RFC 822 mail with the inbound secret; replies reach a real SMTP server (aiosmtpd)."""

    channel: ClassVar[str] = "email"
    push = True

    def __init__(self, smtp: RunningSmtp) -> None:
        self.smtp = smtp

    async def enable(self, ctx: ContractContext) -> None:
        response = await ctx.client.put(
            "/api/v1/bots/acme/support/plugins/email",
            json={"enabled": True, "config": email_config(self.smtp)},
            headers={"Authorization": f"Bearer {ctx.demo.api_key}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["config"]["inbound_secret"] == "********"

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        raw = raw_mail(text, message_id=f"{message_id}@example.org")
        if forged:
            response = await post_mail(ctx.client, raw, secret="not-the-secret", bot=bot)
        else:
            response = await post_mail(ctx.client, raw, bot=bot)
        return Outcome(status=response.status_code)

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        response = await post_mail(ctx.client, b"this is not an e-mail message, it has no headers at all")
        return Outcome(status=response.status_code)

    async def delivered(self, ctx: ContractContext, count: int, timeout: float = 30.0) -> list[str]:
        received = await asyncio.to_thread(self.smtp.wait_for, count, timeout)
        assert all(m.rcpt_tos == (USER,) and m.mail_from == BOT_ADDRESS for m in received), received
        texts = []
        for message in received:
            body = message.message.get_body(preferencelist=("plain",))
            assert body is not None
            texts.append(body.get_content().strip())
        return texts

    def fail_deliveries(self, ctx: ContractContext, times: int) -> None:
        self.smtp.fail_next(times, code=451, message="4.3.0 try again later")


class TestEmailChannelContract(ChannelContract):
    @pytest.fixture
    def driver(self, smtp: RunningSmtp) -> ChannelDriver:
        return EmailDriver(smtp)
