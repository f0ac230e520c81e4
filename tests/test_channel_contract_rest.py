"""The channel contract, run against the REST channel (``POST /api/v1/bots/{bot}/messages``)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from botloom.testing.channel_contract import ChannelContract, ChannelDriver, ContractContext, Outcome


class RestDriver(ChannelDriver):
    """Calls REST chat with the demo tenant's API key; the replies are in the response."""

    channel: ClassVar[str] = "rest"

    async def enable(self, ctx: ContractContext) -> None:
        """The demo bot has REST chat enabled already."""

    async def post(self, ctx: ContractContext, bot: str, body: bytes | dict[str, object], key: str) -> Outcome:
        headers = {"Authorization": f"Bearer {key}"}
        if isinstance(body, bytes):
            response = await ctx.client.post(
                f"/api/v1/bots/{bot}/messages", content=body, headers={**headers, "content-type": "application/json"}
            )
        else:
            response = await ctx.client.post(f"/api/v1/bots/{bot}/messages", json=body, headers=headers)
        replies = [r["text"] for r in response.json()["replies"]] if response.status_code == 200 else []
        return Outcome(status=response.status_code, replies=replies)

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        key = "blk_forged-key" if forged else ctx.demo.api_key
        conversation = ctx.extra.get("conversation")
        body = {"text": text, "message_id": message_id, "conversation_id": conversation}
        outcome = await self.post(ctx, bot, body, key)
        if outcome.status == 200 and conversation is None:
            tenant, found = ctx.demo.tenant.id, ctx.demo.bot.id
            ctx.extra["conversation"] = (await ctx.services.store.conversations.list_all(tenant, found))[0].id
        return outcome

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        return await self.post(ctx, "acme/support", b'{"text": 5, "message_id": "m-1"', ctx.demo.api_key)


class TestRestChannelContract(ChannelContract):
    @pytest.fixture
    def driver(self) -> ChannelDriver:
        return RestDriver()
