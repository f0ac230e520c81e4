"""Sends exactly once where the provider allows it (#12 item 4), and refused endpoints as dead letters at once.

Each part's attempt is recorded in PostgreSQL before the channel hands the part
to the provider. A retry of a part whose attempt ended without an outcome (here:
Twilio took the message, but its answer came after the send timeout) asks the
channel first (``find_sent``); Twilio's channel finds the message in Twilio's
message list (the local peer serves it as Twilio does) and the part is recorded
sent instead of being sent again. The worker killed mid-send and the database
gone between the send and its record are the fault suite's
(``tests/test_faults.py``); this is the same path, in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from twilio.rest import Client

from botloom import EndpointRefused, OutboundMessage, SendError, aiohttp_session
from botloom.channels.twilio import TwilioChannel, TwilioConfig, _http_client
from botloom.core.netguard import policy_installed
from botloom.core.settings import Settings
from botloom.runtime.delivery import RetryPolicy
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from botloom.server.worker import workers
from botloom.testing.channel_contract import wait_until
from tests.helpers import outbound, twilio_client
from tests.twilio_peer import BOT_NUMBER, TwilioPeer, inbound_form, post_signed, twilio_config

WEBHOOK = "/channels/twilio/acme/support"
GREETING = "Hello! How can I help you today?"
USER = "+15550001111"


@pytest.fixture
async def client(
    settings: Settings, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> AsyncIterator[httpx.AsyncClient]:
    """An app client; the demo bot takes Twilio webhooks in ``rest`` mode, replies go to ``peer``."""
    async with twilio_client(settings, services, demo, peer) as test_client:
        yield test_client


async def recorded_parts(services: Services) -> list[tuple[int, str | None]]:
    """``(part, provider id)`` of every part recorded as handed to the provider."""
    async with services.db.connection() as conn:
        rows = await (await conn.execute("SELECT part, provider_id FROM message_parts ORDER BY part")).fetchall()
    return [(row["part"], row["provider_id"]) for row in rows]


async def attempts_in_doubt(services: Services) -> int:
    """Attempts whose outcome is not recorded."""
    async with services.db.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM message_send_attempts")).fetchone()
    assert row is not None
    return int(row["n"])


async def test_a_send_twilio_took_but_never_answered_is_not_sent_again(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    """Twilio takes the reply and answers after the send timeout: the retry finds it in the message list."""
    services.deliveries.policy = RetryPolicy(attempts=3, first_delay=0.2, max_delay=1.0, send_timeout=0.5)
    peer.slow(1.5)  # every send's answer: the message is taken at once, the answer comes too late
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("hello", sender=USER))).status_code == 200

        async def settled() -> bool:
            return await outbound(services, demo) == [(GREETING, "sent")]

        await wait_until(settled, what="the reply to be recorded sent")
    assert [(m.to, m.body) for m in peer.sent] == [(USER, GREETING)], "Twilio got the reply once"
    assert peer.lists >= 1, "the retry asked Twilio's message list"
    assert await recorded_parts(services) == [(0, peer.sent[0].sid)], "recorded with the MessageSid Twilio gave it"
    assert await attempts_in_doubt(services) == 0


async def test_a_refused_send_is_sent_again_without_asking(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    """Twilio answered an error: the message did not go out, so the retry sends without reading the list."""
    peer.fail(1, status=503, code=20503)
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("hello", sender=USER))).status_code == 200

        async def settled() -> bool:
            return await outbound(services, demo) == [(GREETING, "sent")]

        await wait_until(settled, what="the reply to be sent on the second attempt")
    assert [m.body for m in peer.sent] == [GREETING]
    assert (peer.requests, peer.lists) == (2, 0)
    assert await attempts_in_doubt(services) == 0


async def test_a_found_message_that_is_another_parts_is_not_taken(services: Services, demo: DemoInfo) -> None:
    """Two replies with the same text: the message Twilio has for the first is not the second's."""
    tenant = demo.tenant.id
    conversation = await services.store.conversations.get_or_create(tenant, demo.bot.id, "twilio", USER, user=USER)
    first, _ = await services.store.messages.add_outbound(
        tenant, conversation.id, channel="twilio", text="OK", turn_id=None, idempotency_key="r1", status="sending"
    )
    second, _ = await services.store.messages.add_outbound(
        tenant, conversation.id, channel="twilio", text="OK", turn_id=None, idempotency_key="r2", status="sending"
    )
    parts = services.deliveries.parts
    assert await parts.begin_attempt(tenant, first.id, 0, channel="twilio") is None, "a first attempt"
    assert await parts.add_part(tenant, first.id, 0, channel="twilio", provider_id="SM1")
    assert await parts.begin_attempt(tenant, second.id, 0, channel="twilio") is None
    since = await parts.begin_attempt(tenant, second.id, 0, channel="twilio")
    assert since is not None, "the second attempt finds the first in doubt"
    assert not await parts.add_part(tenant, second.id, 0, channel="twilio", provider_id="SM1", found=True)
    assert await parts.add_part(tenant, second.id, 0, channel="twilio", provider_id="SM2", found=True)
    assert await parts.begin_attempt(tenant, second.id, 1, channel="twilio") is None
    assert await parts.forget_attempt(tenant, second.id, 1), "a refused part is known not to have gone out"
    assert await parts.begin_attempt(tenant, second.id, 1, channel="twilio") is None


async def test_twilio_finds_a_part_by_recipient_sender_body_and_time(settings: Settings, peer: TwilioPeer) -> None:
    channel = TwilioChannel()
    assert channel.capabilities.finds_sent
    config = TwilioChannel.settings(twilio_config(peer, from_number=BOT_NUMBER))
    assert isinstance(config, TwilioConfig)

    def part(text: str, recipient: str = USER) -> OutboundMessage:
        return OutboundMessage(channel="twilio", text=text, recipient=recipient, idempotency_key="m:0")

    with policy_installed(settings.endpoint_policy):
        try:
            before = datetime.now(UTC)
            twilio = Client(
                peer.account_sid, peer.auth_token, http_client=_http_client(peer.base_url, channel._session())
            )
            await twilio.messages.create_async(to=USER, from_=BOT_NUMBER, body="Your parcel is late.")
            await twilio.messages.create_async(to="+15550002222", from_=BOT_NUMBER, body="Your parcel is here.")
            await twilio.messages.create_async(to=USER, from_=BOT_NUMBER, body="Your parcel is here.")
            here = peer.sent[-1].sid
            assert await channel.find_sent(part("Your parcel is here."), before, config) == here
            assert await channel.find_sent(part("Your parcel is here. "), before, config) == here, (
                "spaces at the ends do not count"
            )
            assert await channel.find_sent(part("Your parcel is lost."), before, config) is None
            assert await channel.find_sent(part("Your parcel is here.", "+15550003333"), before, config) is None
            later = datetime.now(UTC) + timedelta(minutes=2)
            assert await channel.find_sent(part("Your parcel is here."), later, config) is None, (
                "taken before the attempt"
            )
            assert await channel.find_sent(part("Your parcel is here.", "whatsapp:" + USER), before, config) is None
            peer.fail(1, status=500, code=20500)
            with pytest.raises(SendError) as failed:
                await channel.find_sent(part("Your parcel is here."), before, config)
            assert failed.value.retryable and "message list" in str(failed.value)
        finally:
            await channel.aclose()


async def test_the_peer_filters_its_message_list_as_twilio_does(settings: Settings, peer: TwilioPeer) -> None:
    with policy_installed(settings.endpoint_policy):
        async with aiohttp_session() as session:
            twilio = Client(peer.account_sid, peer.auth_token, http_client=_http_client(peer.base_url, session))
            for index in range(5):
                await twilio.messages.create_async(to=f"+1555000000{index % 2}", from_=BOT_NUMBER, body=f"m{index}")
            now = datetime.now(UTC)
            listed = [m.body async for m in await twilio.messages.stream_async(to="+15550000000", page_size=2)]
            assert listed == ["m4", "m2", "m0"], "newest first, filtered by To, across pages"
            assert peer.lists == 2
            assert (
                len(await twilio.messages.list_async(from_=BOT_NUMBER, date_sent_after=now - timedelta(minutes=1))) == 5
            )
            assert await twilio.messages.list_async(date_sent_after=now + timedelta(minutes=1)) == []
            assert await twilio.messages.list_async(date_sent_before=now - timedelta(minutes=1)) == []
            assert len(await twilio.messages.list_async(date_sent=now.strftime("%Y-%m-%d"))) == 5
            assert await twilio.messages.list_async(from_="+15550009999") == []


async def test_a_refused_endpoint_is_a_dead_letter_at_once(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel that meets the endpoint guard and does not word it: still no retry (it is a SendError)."""

    async def guarded(self: TwilioChannel, message: object, config: object) -> str:
        raise EndpointRefused("http://127.0.0.1:9", "it is a loopback address")

    monkeypatch.setattr(TwilioChannel, "send", guarded)
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("hello", sender=USER))).status_code == 200

        async def dead() -> bool:
            return await outbound(services, demo) == [(GREETING, "failed")]

        await wait_until(dead, what="the reply to become a dead letter")
    (letter,) = (await client.get("/api/v1/bots/acme/support/dead-letters")).json()
    assert letter["attempts"] == 1, "a refused endpoint is not tried again"
    assert "127.0.0.1:9 is refused" in letter["error"], letter
    assert isinstance(EndpointRefused("x", "y"), ValueError), "config checks still see a ValueError"
