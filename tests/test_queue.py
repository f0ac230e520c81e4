"""The job queue and delivery: retries, dead letters and their API, recovery, Redis, splitting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings
from botloom.runtime.delivery import RetryPolicy, split_text, utf16_length
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from botloom.testing.channel_contract import FAST_RETRIES, configure_twilio, fast_app, wait_until
from tests.helpers import api_client, outbound, twilio_client
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

WEBHOOK = "/channels/twilio/acme/support"
GREETING = "Hello! How can I help you today?"


@pytest.fixture
async def client(
    settings: Settings, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> AsyncIterator[httpx.AsyncClient]:
    """An app client; the demo bot takes Twilio webhooks in ``rest`` mode, replies go to ``peer``."""
    async with twilio_client(settings, services, demo, peer) as test_client:
        yield test_client


async def test_a_reply_failing_for_good_is_a_dead_letter_until_retried_by_hand(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    peer.fail_always(status=503, code=20503)
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200

        async def dead() -> bool:
            return await outbound(services, demo) == [(GREETING, "failed")]

        await wait_until(dead, what="the reply to become a dead letter")
        assert peer.requests == FAST_RETRIES.attempts, "every attempt reached Twilio"
        (letter,) = (await client.get("/api/v1/bots/acme/support/dead-letters")).json()
        assert letter["text"] == GREETING and letter["attempts"] == FAST_RETRIES.attempts
        assert "503" in letter["error"] and letter["channel"] == "twilio"

        peer.recover()
        retried = await client.post(f"/api/v1/messages/{letter['id']}/retry")
        assert retried.status_code == 202, retried.text
        assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
        assert [m.body for m in await asyncio.to_thread(peer.wait_for, 1)] == [GREETING]

        async def sent() -> bool:
            return await outbound(services, demo) == [(GREETING, "sent")]

        await wait_until(sent, what="the retried reply to be sent")
    assert (await client.get("/api/v1/bots/acme/support/dead-letters")).json() == []
    again = await client.post(f"/api/v1/messages/{letter['id']}/retry")
    assert again.status_code == 409 and "not a dead letter" in again.json()["detail"]
    assert (await client.post(f"/api/v1/messages/{demo.bot.id}/retry")).status_code == 404
    assert len(peer.sent) == 1, "delivered once"


async def test_dead_letters_are_the_tenants_own(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    peer.fail(1, status=400, code=21211)  # Twilio refuses the number: no point in trying again
    async with workers(services):
        await post_signed(client, WEBHOOK, inbound_form("hello"))

        async def dead() -> bool:
            return await outbound(services, demo) == [(GREETING, "failed")]

        await wait_until(dead, what="a refused reply to become a dead letter at once")
    (letter,) = (await client.get("/api/v1/bots/acme/support/dead-letters")).json()
    assert letter["attempts"] == 1 and "400" in letter["error"]
    other = await client.post(
        "/api/v1/tenants",
        json={"slug": "globex", "name": "Globex"},
        headers={"Authorization": "Bearer test-admin-token"},
    )
    stranger = {"Authorization": f"Bearer {other.json()['api_key']['key']}"}
    assert (await client.get("/api/v1/bots/acme/support/dead-letters", headers=stranger)).status_code == 404
    assert (await client.post(f"/api/v1/messages/{letter['id']}/retry", headers=stranger)).status_code == 404
    admin = {"Authorization": "Bearer test-admin-token"}
    assert (await client.post(f"/api/v1/messages/{letter['id']}/retry", headers=admin)).status_code == 202


async def test_replies_of_a_conversation_go_out_in_order(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    texts = ["hello", "thanks", "where is my order 1234", "bye"]
    for text in texts:  # all stored and queued before any worker runs
        assert (await post_signed(client, WEBHOOK, inbound_form(text))).status_code == 200
    async with workers(services):
        bodies = [m.body for m in await asyncio.to_thread(peer.wait_for, len(texts))]
    assert bodies == [text for text, _ in await outbound(services, demo)]
    assert bodies[0] == GREETING and "1234" in bodies[2]


async def test_recovery_queues_turns_and_deliveries_whose_job_was_lost(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    message = InboundMessage(
        channel="twilio",
        text="hello",
        sender="+15550001111",
        idempotency_key="SM-lost",
        metadata={"to": "+15559998888"},
    )
    await services.inbound.receive(demo.bot, message)  # stored, but its job never made it to the queue
    services.deliveries.policy = RetryPolicy(recover_after=0.0)
    assert await services.queue.pending("turns") == 0
    assert await services.deliveries.recover() == 1
    async with workers(services):
        assert [m.body for m in await asyncio.to_thread(peer.wait_for, 1)] == [GREETING]
    assert await outbound(services, demo) == [(GREETING, "sent")]
    assert await services.deliveries.recover() == 0, "nothing is left waiting"


async def test_recovery_adds_no_job_for_a_turn_whose_job_is_only_late(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    """In a backlog every waiting message is old; the sweep must not queue duplicates behind the originals."""
    for number in range(3):
        message = InboundMessage(
            channel="twilio", text="hello", sender=f"+1555000{number:04d}", idempotency_key=f"SM-late-{number}"
        )
        await services.inbound.accept(demo.bot, message)  # queued; no worker runs
    services.deliveries.policy = RetryPolicy(recover_after=0.0)
    assert await services.queue.pending("turns") == 3
    assert await services.deliveries.recover() == 3, "three conversations wait"
    assert await services.deliveries.recover() == 3
    assert await services.queue.pending("turns") == 3, "and still three jobs: none added"


async def test_the_queue_runs_on_redis_when_configured(
    settings: Settings, database_url: str, redis_url: str, peer: TwilioPeer
) -> None:
    with_redis = msgspec.structs.replace(settings, redis_url=redis_url)
    async with open_services(with_redis, url=database_url) as services:
        assert services.queue.backend == "redis"
        demo = await ensure_demo(services)
        peer.fail(1)
        async with api_client(fast_app(settings, services)) as client:
            await configure_twilio(client, demo, twilio_config(peer))
            async with workers(services):
                assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
                assert [m.body for m in await asyncio.to_thread(peer.wait_for, 1)] == [GREETING]
        assert await outbound(services, demo) == [(GREETING, "sent")]


@given(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400),
    st.integers(min_value=2, max_value=60),
)
def test_split_text_keeps_every_character_within_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(0 < utf16_length(p) <= limit for p in parts)
    assert "".join("".join(p.split()) for p in parts) == "".join(text.split()), "only whitespace is dropped"


def test_split_text_prefers_paragraphs_then_sentences_then_words() -> None:
    text = "First paragraph here.\n\nSecond one. It has two sentences."
    assert split_text(text, 40) == ["First paragraph here.", "Second one. It has two sentences."]
    assert split_text(text, 25) == ["First paragraph here.", "Second one.", "It has two sentences."]
    assert split_text("😀" * 5, 4) == ["😀😀", "😀😀", "😀"], "an emoji counts two UTF-16 units and is never cut"
    assert split_text("   ", 10) == []
    with pytest.raises(ValueError, match="at least 2"):
        split_text("a", 1)
