"""What the erasure tests share (``test_data_rights.py``, ``test_debug_fork_erasure.py``): forks and checkpoint rows."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from langgraph.checkpoint.base import empty_checkpoint

from botloom.core.domain import Bot
from botloom.runtime.forks import Forks
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services

CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


async def fork_last_turn(services: Services, bot: Bot, conversation_id: str, text: str = "thanks") -> tuple[str, str]:
    """A debug fork of the conversation's last turn, re-run with ``text``: its id and thread."""
    conversation = await services.store.conversations.get(bot.tenant_id, conversation_id)
    assert conversation is not None
    snapshot = await services.graphs.get(bot.graph).aget_state(
        {"configurable": {"thread_id": thread_id(bot.tenant_id, bot.id, conversation_id)}}
    )
    checkpoint = str(snapshot.config["configurable"]["checkpoint_id"])
    outcome = await Forks(services).create(bot, conversation, checkpoint, text=text)
    fork = await services.store.forks.get(bot.tenant_id, outcome.fork_id)
    assert fork is not None
    return fork.id, fork.thread_id


def checkpoint_rows(database_url: str, threads: list[str], tables: tuple[str, ...] = CHECKPOINT_TABLES) -> int:
    """Rows of these checkpoint tables (every one by default) of these threads."""
    with psycopg.connect(database_url) as conn:
        return sum(
            int(conn.execute(f"SELECT count(*) FROM {table} WHERE thread_id = ANY(%s)", (threads,)).fetchone()[0])  # type: ignore[index]
            for table in tables
        )


async def late_write(services: Services, thread: str) -> None:
    """A run still at work writes once more to ``thread`` (a debug fork's run holds no conversation lock)."""
    saver = services.graphs.checkpointer
    assert saver is not None
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    await saver.aput(config, empty_checkpoint(), {"source": "fork"}, {})


async def with_retention(services: Services, bot: Bot, days: int) -> Bot:
    """``bot`` as stored once its settings keep idle conversations ``days`` days (``retention_days``)."""
    updated = await services.store.bots.update(
        bot.tenant_id, bot.id, settings=msgspec.structs.replace(bot.settings, retention_days=days)
    )
    assert updated is not None
    return updated
