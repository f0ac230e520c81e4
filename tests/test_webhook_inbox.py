"""The webhook inbox (#16 goal 3): a webhook acknowledged after one durable row; the workers ingest it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import psycopg
import pytest

from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings, load_settings
from botloom.core.storage.repositories.inbound import INBOX_MAX_ATTEMPTS, InboxRow
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from botloom.server.worker import workers
from botloom.testing.channel_contract import configure_twilio, fast_app, transcript, wait_until
from tests.helpers import api_client
from tests.test_twilio import _bad_requests
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config, twiml_replies

WEBHOOK = "/channels/twilio/acme/support"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(fast_app(settings, services)) as test_client:
        yield test_client


async def rows(services: Services, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with services.db.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def inbox_rows(services: Services) -> list[dict[str, Any]]:
    return await rows(services, "SELECT * FROM webhook_inbox ORDER BY id")


async def stored_messages(services: Services) -> list[tuple[str, str, str]]:
    """The messages table as it is: unlike ``transcript``, nothing waiting in the inbox is ingested first."""
    found = await rows(services, "SELECT direction, text, status FROM messages ORDER BY created_at, id")
    return [(r["direction"], r["text"], r["status"]) for r in found]


async def turn_jobs(services: Services) -> int:
    return await services.queue.pending("turns")


def message(sid: str, *, at: datetime | None = None, text: str = "hello") -> InboundMessage:
    sent = InboundMessage(channel="twilio", text=text, sender="+15550001111", idempotency_key=sid)
    return sent if at is None else msgspec.structs.replace(sent, received_at=at)


async def test_the_acknowledgement_stores_one_row_and_the_ingest_the_rest(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    response = await post_signed(client, WEBHOOK, inbound_form("hello", sid="SM" + "1" * 32))
    assert response.status_code == 200, response.text
    [row] = await inbox_rows(services)
    assert (str(row["tenant_id"]), str(row["bot_id"])) == (demo.tenant.id, demo.bot.id)
    assert row["idempotency_key"] == "SM" + "1" * 32
    assert await stored_messages(services) == [], "visible once ingested, not before"
    assert await turn_jobs(services) == 0

    assert await services.inbound.ingest_inbox() == 1
    assert await inbox_rows(services) == []
    assert await transcript(services, demo) == [("inbound", "hello", "received")]
    [stored] = await rows(services, "SELECT * FROM messages WHERE bot_id = %s", demo.bot.id)
    assert stored["created_at"] == row["received_at"], "the message keeps the time it was received"
    job = await services.queue.queues["turns"].job(f"turns:{stored['id']}")
    assert job is not None and job.kwargs["conversation_id"] == str(stored["conversation_id"])


def test_the_inbox_is_on_by_default_and_can_be_turned_off(settings: Settings) -> None:
    assert settings.webhook_inbox, "on by default (docs/deployment.md: the webhook inbox)"
    assert not load_settings(environ={"BOTLOOM_WEBHOOK_INBOX": "false"}).webhook_inbox


async def test_with_the_inbox_off_the_acknowledgement_stores_the_message_and_its_turn(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    services.inbound.inbox = False
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    response = await post_signed(client, WEBHOOK, inbound_form("hello", sid="SM" + "3" * 32))
    assert response.status_code == 200, response.text
    assert await inbox_rows(services) == []
    assert await stored_messages(services) == [("inbound", "hello", "received")], "stored before the 200"
    assert await turn_jobs(services) == 1


async def test_a_retried_message_sid_is_stored_once_before_and_after_its_ingest(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    form = inbound_form("hello", sid="SM" + "2" * 32)
    for _ in range(3):
        assert (await post_signed(client, WEBHOOK, form)).status_code == 200
    assert len(await inbox_rows(services)) == 1, "a retry waiting in the inbox is dropped"
    await services.inbound.ingest_inbox()
    assert (await post_signed(client, WEBHOOK, form)).status_code == 200  # a retry after the ingest
    assert await services.inbound.ingest_inbox() == 1
    assert await transcript(services, demo) == [("inbound", "hello", "received")]
    assert await turn_jobs(services) == 1


async def test_bad_requests_store_nothing_in_the_inbox(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    for name, (path, body, headers, status) in _bad_requests(peer).items():
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == status, (name, response.text)
    assert await inbox_rows(services) == []


async def test_an_ingest_done_in_part_before_a_crash_is_done_again_once(services: Services, demo: DemoInfo) -> None:
    bot = demo.bot
    services.inbound.inbox = True
    sent = message("SM-crash")
    assert await services.store.inbound.to_inbox(bot.tenant_id, bot.id, sent)
    await services.inbound.accept(bot, sent)  # the worker stored it, then died before deleting the row
    assert await services.inbound.ingest_inbox() == 1
    assert await inbox_rows(services) == []
    assert await transcript(services, demo) == [("inbound", "hello", "received")]
    assert await turn_jobs(services) == 1


async def test_rows_taken_by_a_worker_are_skipped_by_others_and_an_outage_leaves_them(
    services: Services, demo: DemoInfo
) -> None:
    bot = demo.bot
    for sid in ("SM-a", "SM-b"):
        await services.store.inbound.to_inbox(bot.tenant_id, bot.id, message(sid))
    taken = asyncio.Event()
    release = asyncio.Event()

    async def stuck(row: InboxRow) -> bool:
        taken.set()
        await release.wait()
        raise psycopg.OperationalError("the database went away")  # an outage: the whole batch rolls back

    first = asyncio.create_task(services.store.inbound.ingest_inbox(stuck))
    await taken.wait()
    assert await services.inbound.ingest_inbox() == 0, "another worker skips the rows taken"
    release.set()
    with pytest.raises(psycopg.OperationalError):
        await first
    assert len(await inbox_rows(services)) == 2, "rolled back: the rows wait for the next ingest"
    assert await services.inbound.ingest_inbox() == 2
    assert [m[1] for m in await transcript(services, demo)] == ["hello", "hello"]


async def test_a_row_that_fails_for_a_bug_counts_attempts_and_is_left_alone_at_the_last(
    services: Services, demo: DemoInfo
) -> None:
    bot = demo.bot
    await services.store.inbound.to_inbox(bot.tenant_id, bot.id, message("SM-bug"))

    async def buggy(row: InboxRow) -> bool:
        raise RuntimeError("a bug")

    for _ in range(INBOX_MAX_ATTEMPTS):
        assert await services.store.inbound.ingest_inbox(buggy) == 1
    assert await services.store.inbound.ingest_inbox(buggy) == 0
    [row] = await inbox_rows(services)
    assert row["attempts"] == INBOX_MAX_ATTEMPTS, "kept for an operator, never dropped"


async def test_a_deleted_bots_rows_go_with_it(services: Services, demo: DemoInfo) -> None:
    bot = demo.bot
    await services.store.inbound.to_inbox(bot.tenant_id, bot.id, message("SM-gone"))
    await services.store.bots.delete(bot.tenant_id, bot.id)
    assert await inbox_rows(services) == []


async def test_merge_bursts_time_from_when_the_messages_were_received(services: Services, demo: DemoInfo) -> None:
    """Two messages received 0.5 s apart, ingested a minute later: one turn, at once (quiet since long ago)."""
    bot = demo.bot
    settings = msgspec.structs.replace(bot.settings, burst_policy="merge", burst_window_ms=30_000)
    bot = await services.store.bots.update(bot.tenant_id, bot.id, settings=settings)
    assert bot is not None
    long_ago = datetime.now(UTC) - timedelta(minutes=2)
    for index, sid in enumerate(("SM-m1", "SM-m2")):
        sent = message(sid, at=long_ago + timedelta(seconds=index / 2), text=f"part {index}")
        await services.store.inbound.to_inbox(bot.tenant_id, bot.id, sent)
    assert await services.inbound.ingest_inbox() == 2
    stored = await rows(services, "SELECT created_at, conversation_id FROM messages ORDER BY created_at")
    assert [r["created_at"] for r in stored] == [long_ago, long_ago + timedelta(seconds=0.5)]
    began = asyncio.get_running_loop().time()
    ran = await services.runner.process(bot, str(stored[0]["conversation_id"]))
    waited = asyncio.get_running_loop().time() - began
    assert len(ran) == 1, "one turn answers both"
    assert waited < 30, "timed from the received time, not the ingest: the window had passed long ago"
    assert sorted(m[2] for m in await transcript(services, demo) if m[0] == "inbound") == ["answered", "merged"]


async def test_twiml_answers_in_the_response_with_the_inbox_on(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "twiml"))
    response = await post_signed(client, WEBHOOK, inbound_form("hello"))
    assert response.status_code == 200 and twiml_replies(response.text)
    assert await inbox_rows(services) == [], "a webhook answered in its response stores as before"


async def test_a_worker_ingests_at_once_and_the_reply_is_sent_once(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    async with workers(services):
        for index in range(3):
            form = inbound_form(f"question {index}", sid=f"SM{index:032d}", sender=f"+1555000{index:04d}")
            assert (await post_signed(client, WEBHOOK, form)).status_code == 200
        sent = await asyncio.to_thread(peer.wait_for, 3, 30)
        await wait_until(lambda: _no_rows(services))
    assert len(sent) == 3 and sorted(m.to for m in sent) == [f"+1555000{i:04d}" for i in range(3)]
    assert len([m for m in await transcript(services, demo) if m[0] == "outbound"]) == 3, "each once"


async def _no_rows(services: Services) -> bool:
    return await inbox_rows(services) == []
