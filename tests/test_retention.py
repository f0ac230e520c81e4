"""Checkpoint retention: idle conversations are pruned to their newest checkpoint; closed ones archived."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest

from botloom.core.messages import utcnow
from botloom.core.settings import Settings, load_settings
from botloom.runtime.retention import prune
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
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
    bot = await services.store.bots.update(
        demo.tenant.id, demo.bot.id, settings=msgspec.structs.replace(demo.bot.settings, retention_days=7)
    )
    assert bot is not None
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
    bot = await redis_services.store.bots.update(
        demo.tenant.id, demo.bot.id, settings=msgspec.structs.replace(demo.bot.settings, retention_days=1)
    )
    assert bot is not None
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
