"""Debug forks go with their conversation's erasure, and a fork never names another tenant's bot.

Real PostgreSQL throughout: the retention pass archives and prunes conversations, and the
fork's row and its checkpoint thread must both be gone afterwards (``docs/debugger-actions.md``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from botloom.core.domain import Bot
from botloom.core.messages import utcnow
from botloom.runtime.retention import prune
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.erasure_helpers import checkpoint_rows, fork_last_turn, late_write, with_retention
from tests.helpers import Chat


def checkpoints_of(database_url: str, thread: str) -> int:
    return checkpoint_rows(database_url, [thread], tables=("checkpoints",))


async def forked_conversation(services: Services, bot: Bot) -> tuple[str, str, str]:
    """A two-turn conversation with one fork of its last turn: conversation id, fork id, fork thread."""
    chat = Chat(services, bot)
    await chat.say("hi")
    await chat.say("where is my order 1234?")
    assert chat.conversation_id is not None
    fork_id, thread = await fork_last_turn(services, bot, chat.conversation_id)
    return chat.conversation_id, fork_id, thread


async def test_archiving_a_conversation_erases_its_forks_and_their_threads(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    conversation_id, fork_id, thread = await forked_conversation(services, demo.bot)
    kept_id, kept_fork, kept_thread = await forked_conversation(services, demo.bot)
    assert checkpoints_of(database_url, thread) > 0
    await services.store.conversations.set_status(demo.tenant.id, conversation_id, "closed")

    report = await prune(services)

    assert (report.archived, report.forks) == (1, 1)
    assert await services.store.forks.get(demo.tenant.id, fork_id) is None, "the fork's row went"
    assert checkpoints_of(database_url, thread) == 0, "the fork's thread went"
    assert await services.store.forks.get(demo.tenant.id, kept_fork) is not None, "another conversation's fork stays"
    assert checkpoints_of(database_url, kept_thread) > 0
    assert kept_id != conversation_id


async def test_pruning_an_idle_conversation_erases_its_forks(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    bot = await with_retention(services, demo.bot, 7)
    _, fork_id, thread = await forked_conversation(services, bot)
    assert (await prune(services)).forks == 0, "an active conversation keeps its forks"
    assert await services.store.forks.get(bot.tenant_id, fork_id) is not None

    report = await prune(services, now=utcnow() + timedelta(days=8))

    assert (report.pruned, report.forks) == (1, 1)
    assert await services.store.forks.get(bot.tenant_id, fork_id) is None
    assert checkpoints_of(database_url, thread) == 0


async def test_a_late_write_to_a_pruned_conversations_fork_is_deleted_by_the_second_deletion(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    bot = await with_retention(services, demo.bot, 7)
    conversation_id, _, thread = await forked_conversation(services, bot)
    later = utcnow() + timedelta(days=8)
    assert (await prune(services, now=later)).forks == 1
    assert checkpoints_of(database_url, thread) == 0, "deleted at once"

    await late_write(services, thread)
    assert checkpoints_of(database_url, thread) == 1

    report = await prune(services, now=later + timedelta(hours=1))
    assert report.threads == 1 and checkpoints_of(database_url, thread) == 0, "the second deletion caught it"
    own = f"{bot.tenant_id}:{bot.id}:{conversation_id}"
    assert checkpoints_of(database_url, own) == 1, "the pruned conversation keeps its newest checkpoint"
    assert await services.store.checkpoint_erasures.due(settled_before=later + timedelta(days=1)) == []


async def test_a_late_write_to_an_archived_conversations_threads_is_deleted_by_the_second_deletion(
    services: Services, demo: DemoInfo, database_url: str
) -> None:
    conversation_id, _, fork_thread = await forked_conversation(services, demo.bot)
    own = f"{demo.tenant.id}:{demo.bot.id}:{conversation_id}"
    await services.store.conversations.set_status(demo.tenant.id, conversation_id, "closed")
    assert (await prune(services)).archived == 1
    assert checkpoints_of(database_url, own) == 0 and checkpoints_of(database_url, fork_thread) == 0

    for thread in (own, fork_thread):
        await late_write(services, thread)
    assert (await prune(services)).threads == 0, "not before every run that could write to them has ended"

    report = await prune(services, now=utcnow() + timedelta(hours=1))
    assert report.threads == 2
    assert checkpoints_of(database_url, own) == 0 and checkpoints_of(database_url, fork_thread) == 0


async def test_a_fork_cannot_name_another_tenants_bot(services: Services, demo: DemoInfo) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hi")
    assert chat.conversation_id is not None
    other = await services.store.tenants.create("globex", "Globex")
    foreign = await services.store.bots.create(other.id, "helper", "Helper")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await services.store.forks.create(
            demo.tenant.id,
            fork_id=str(uuid.uuid4()),
            bot_id=foreign.id,
            conversation_id=chat.conversation_id,
            checkpoint_id="1f000000-0000-6000-8000-000000000000",
            thread_id=f"fork:{chat.conversation_id}:x",
            break_before=[],
            break_after=[],
        )
    assert await services.store.forks.of_conversation(demo.tenant.id, chat.conversation_id) == []


async def test_deleting_a_bot_deletes_its_fork_rows(services: Services, demo: DemoInfo) -> None:
    _, fork_id, _ = await forked_conversation(services, demo.bot)
    async with services.db.connection() as conn:
        # Without the conversation's cascade: only the (tenant, bot) key can take the row away.
        await conn.execute("ALTER TABLE debug_forks DROP CONSTRAINT debug_forks_tenant_id_conversation_id_fkey")
    assert await services.store.bots.delete(demo.tenant.id, demo.bot.id)
    assert await services.store.forks.get(demo.tenant.id, fork_id) is None
