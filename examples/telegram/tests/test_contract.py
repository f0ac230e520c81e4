"""botloom's channel contract, run against the Telegram channel with one subclass (botloom.testing)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, ClassVar

import pytest
from botloom.testing import ChannelContract, ChannelDriver, ContractContext, Outcome
from telegram_standin import SECRET, TOKEN, TelegramStandIn, update

CHAT = 777001


class TelegramDriver(ChannelDriver):
    """Posts updates as Telegram does (with the secret token); replies reach the local Bot API stand-in."""

    channel: ClassVar[str] = "telegram"
    push = True

    def __init__(self, telegram: TelegramStandIn) -> None:
        self.telegram = telegram

    async def enable(self, ctx: ContractContext) -> None:
        response = await ctx.client.put(
            "/api/v1/bots/acme/support/plugins/telegram",
            json={"enabled": True, "config": {"bot_token": TOKEN, "webhook_secret": SECRET}},
            headers={"Authorization": f"Bearer {ctx.demo.api_key}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["config"] == {"bot_token": "********", "webhook_secret": "********"}

    async def post(self, ctx: ContractContext, bot: str, body: Any, secret: str) -> Outcome:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        if isinstance(body, bytes):
            response = await ctx.client.post(f"/channels/telegram/{bot}", content=body, headers=headers)
        else:
            response = await ctx.client.post(f"/channels/telegram/{bot}", json=body, headers=headers)
        return Outcome(status=response.status_code)

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        update_id = int(hashlib.sha256(message_id.encode()).hexdigest()[:8], 16)  # Telegram's retry: the same id
        body = update(text, update_id=update_id, chat_id=CHAT, message_id=update_id % 100_000)
        return await self.post(ctx, bot, body, "forged-" + SECRET if forged else SECRET)

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        return await self.post(ctx, "acme/support", b'{"update_id": "one", "message": [', SECRET)

    async def delivered(self, ctx: ContractContext, count: int, timeout: float = 30.0) -> list[str]:
        sent = await asyncio.to_thread(self.telegram.wait_for, count, timeout)
        assert all(m.chat_id == CHAT for m in sent), sent
        return [m.text for m in sent]

    def fail_deliveries(self, ctx: ContractContext, times: int) -> None:
        self.telegram.fail(times, status=502, error_code=502)


class TestTelegramChannelContract(ChannelContract):
    @pytest.fixture
    def driver(self, telegram: TelegramStandIn) -> ChannelDriver:
        return TelegramDriver(telegram)
