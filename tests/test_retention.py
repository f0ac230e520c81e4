"""Checkpoint retention: idle conversations are pruned to their newest checkpoint; closed ones archived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest

from botloom.core.domain import Bot
from botloom.core.messages import utcnow
from botloom.core.settings import Settings, load_settings
from botloom.runtime.retention import PruneReport, prune
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from tests.erasure_helpers import with_retention
from tests.helpers import Chat


def checkpoint_rows(database_url: str, thread: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread,)).fetchone()
        blobs = conn.execute("SELECT count(*) FROM checkpoint_blobs WHERE thread_id = %s", (thread,)).fetchone()
    assert checkpoints is not None and blobs is not None
    return int(checkpoints[0]), int(blobs[0])


def checkpoint_bytes_on_disk(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM FULL checkpoints, checkpoint_blobs, checkpoint_writes")
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY['checkpoints', 'checkpoint_blobs', "
            "'checkpoint_writes']::regclass[]) AS t"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_idle_conversation_is_pruned_to_its_newest_checkpoint(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    bot = await with_retention(services, demo.bot, 7)
    chat = Chat(services, bot)
    for i in range(40):
        await chat.say("hello" if i % 2 else "where is my order 1234")
    thread = thread_id(bot.tenant_id, bot.id, chat.conversation_id or "")
    before = checkpoint_rows(database_url, thread)
    assert before[0] >= 40
    size_before = checkpoint_bytes_on_disk(database_url)

    assert (await prune(services)).pruned == 0, "an active conversation keeps its history"
    report = await prune(services, now=utcnow() + timedelta(days=8))
    assert report.pruned == 1
    after = checkpoint_rows(database_url, thread)
    assert after[0] == 1 and after[1] < before[1]
    assert checkpoint_bytes_on_disk(database_url) < size_before / 2, "the space is given back"
    assert (await prune(services, now=utcnow() + timedelta(days=8))).pruned == 0, "pruned once until active again"

    result = await chat.say("thanks")
    assert result.intent == "thanks" and not result.errors, "the conversation continues from its newest checkpoint"
    state = await chat.state()
    assert len(state["messages"]) > 2, "the newest checkpoint kept the recent history"


async def test_closed_conversation_is_archived(services: Services, demo: DemoInfo, database_url: str) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    await chat.say("thanks")
    await services.store.conversations.set_status(demo.tenant.id, chat.conversation_id or "", "closed")
    report = await prune(services)
    assert report.archived == 1
    assert checkpoint_rows(database_url, thread_id(demo.tenant.id, demo.bot.id, chat.conversation_id or "")) == (0, 0)
    assert len(await chat.transcript()) == 4, "the transcript stays"


@pytest.fixture
async def redis_services(data_dir: Path, database_url: str, redis_url: str) -> AsyncIterator[Services]:
    settings: Settings = load_settings(
        environ={}, data_dir=str(data_dir), secret_key="k", checkpointer="redis", redis_url=redis_url
    )
    async with open_services(settings, url=database_url) as services:
        yield services


async def test_pruning_with_redis_checkpoints(redis_services: Services) -> None:
    demo = await ensure_demo(redis_services)
    bot = await with_retention(redis_services, demo.bot, 1)
    chat = Chat(redis_services, bot)
    for _ in range(5):
        await chat.say("hello")
    saver = redis_services.graphs.checkpointer
    assert saver is not None
    config = {"configurable": {"thread_id": thread_id(bot.tenant_id, bot.id, chat.conversation_id or "")}}
    assert len([c async for c in saver.alist(config)]) >= 5
    assert (await prune(redis_services, now=utcnow() + timedelta(days=2))).pruned == 1
    assert len([c async for c in saver.alist(config)]) == 1
    assert (await chat.say("thanks")).intent == "thanks"


async def by_sender(services: Services, bot: Bot, sender: str = "+15550001") -> Chat:
    """The sender's live conversation, found by its channel key as on Twilio or e-mail (started if none)."""
    conversation = await services.store.conversations.get_or_create(bot.tenant_id, bot.id, "test", sender, sender)
    chat = Chat(services, bot, user=sender)
    chat.conversation_id = conversation.id
    return chat


async def test_an_idle_open_conversation_is_closed_then_archived(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    bot = await services.store.bots.update(
        demo.tenant.id, demo.bot.id, settings=msgspec.structs.replace(demo.bot.settings, close_after_days=30)
    )
    assert bot is not None
    chat = await by_sender(services, bot)
    await chat.say("hello")
    await chat.say("thanks")
    first = chat.conversation_id or ""
    assert (await by_sender(services, bot)).conversation_id == first, "one conversation per sender while open"
    escalated = Chat(services, bot, user="waits-for-a-person")
    assert (await escalated.say("I want to talk to a person")).escalated

    assert await prune(services, now=utcnow() + timedelta(days=29)) == PruneReport(), "not idle long enough"
    report = await prune(services, now=utcnow() + timedelta(days=31))
    assert (report.closed, report.archived) == (1, 1)
    conversation = await services.store.conversations.get(bot.tenant_id, first)
    assert conversation is not None and conversation.status == "closed"
    assert checkpoint_rows(database_url, thread_id(bot.tenant_id, bot.id, first)) == (0, 0)
    assert len(await services.store.messages.list_all(bot.tenant_id, first)) == 4, "the transcript stays"
    waiting = await services.store.conversations.get(bot.tenant_id, escalated.conversation_id or "")
    assert waiting is not None and waiting.status == "escalated", "a conversation waiting for a person stays"

    again = await by_sender(services, bot)
    assert again.conversation_id != first, "the sender's next message starts a new conversation"
    # and the first archived conversation's thread is deleted a second time (a run may have written to it late)
    assert await prune(services, now=utcnow() + timedelta(days=31)) == PruneReport(closed=1, archived=1, threads=1)


async def test_conversations_stay_open_without_close_after_days(services: Services, demo: DemoInfo) -> None:
    assert demo.bot.settings.close_after_days is None
    chat = await by_sender(services, demo.bot)
    await chat.say("hello")
    assert await prune(services, now=utcnow() + timedelta(days=3650)) == PruneReport()
    assert (await by_sender(services, demo.bot)).conversation_id == chat.conversation_id


async def test_the_workers_run_the_retention_pass_as_an_hourly_cron_job(services: Services, demo: DemoInfo) -> None:
    """Every worker schedules ``retention`` under one key (once per deployment); the job runs a pass."""
    bot = await services.store.bots.update(
        demo.tenant.id, demo.bot.id, settings=msgspec.structs.replace(demo.bot.settings, close_after_days=1)
    )
    assert bot is not None
    chat = await by_sender(services, bot)
    await chat.say("hello")
    conversation_id = chat.conversation_id or ""
    async with services.db.connection() as conn:  # two days without a message
        await conn.execute(
            "UPDATE conversations SET updated_at = now() - interval '2 days' WHERE id = %s", (conversation_id,)
        )
    async with workers(services), workers(services, embedded=True):  # two processes' workers
        deadline = time.monotonic() + 30
        while not (scheduled := await cron_jobs(services, "retention")):
            assert time.monotonic() < deadline, "no worker scheduled the retention pass"
            await asyncio.sleep(0.05)
        [at] = scheduled  # one job for both workers
        assert at.minute == 17 and at > utcnow(), "the next pass is at minute 17 of an hour to come"
        assert await services.queue.enqueue("deliveries", "retention", key="now")
        while await archived_at(services, conversation_id) is None:
            assert time.monotonic() < deadline, "the retention job did not run"
            await asyncio.sleep(0.05)
    conversation = await services.store.conversations.get(bot.tenant_id, conversation_id)
    assert conversation is not None and conversation.status == "closed"


async def archived_at(services: Services, conversation_id: str) -> datetime | None:
    """When the conversation's checkpoints were removed, if they were."""
    async with services.db.connection() as conn:
        cur = await conn.execute("SELECT archived_at FROM conversations WHERE id = %s", (conversation_id,))
        row = await cur.fetchone()
    assert row is not None
    archived: datetime | None = row["archived_at"]
    return archived


async def cron_jobs(services: Services, function: str) -> list[datetime]:
    """When the scheduled (queued, not yet due) cron jobs of ``function`` are due."""
    async with services.db.connection() as conn:
        cur = await conn.execute(
            "SELECT key, scheduled FROM botloom_jobs WHERE key LIKE %s AND status = 'queued'", (f"%cron:{function}",)
        )
        rows = await cur.fetchall()
    return [datetime.fromtimestamp(row["scheduled"], tz=UTC) for row in rows]
