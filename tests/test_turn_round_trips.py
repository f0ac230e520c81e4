"""A turn's checkpoint goes to PostgreSQL with the runner's own statements (#16 goal 1).

* The checkpoint write is held back by botloom's PostgreSQL saver and sent in the
  transaction that stores the turn's replies: both commit, or neither does (a turn
  whose replies could not be stored leaves no checkpoint of itself behind).
* The conversation's latest checkpoint is read with the conversation's lock (one
  round trip), and the run's first ``aget_tuple`` is answered from that read.
* The lock goes in the turn's last round trip, after its ``COMMIT``, when no message waits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from botloom.core.messages import InboundMessage
from botloom.core.storage.repositories.messages import WAITING_SQL, waiting_params
from botloom.runtime.checkpointers import CHECKPOINT_BATCH, CheckpointBatch, CheckpointRead, postgres_saver_class
from botloom.runtime.locks import HeldLock, PostgresLocks
from botloom.runtime.services import Services
from botloom.runtime.turn_context import thread_config
from botloom.server.demo import DemoInfo
from tests.helpers import Chat


@pytest.fixture
async def refused_replies(services: Services) -> AsyncIterator[str]:
    """A trigger refusing outbound messages of the conversations listed in a table; yields the table's name."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    async with services.store.db.connection() as conn:
        await conn.execute(f"CREATE TABLE {name} (conversation_id uuid PRIMARY KEY)")
        await conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.direction = 'outbound' AND EXISTS (SELECT 1 FROM {name} WHERE conversation_id = "
            f"NEW.conversation_id) THEN RAISE EXCEPTION 'replies refused (test)'; END IF; RETURN NEW; END $$"
        )
        await conn.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION {name}()")
    try:
        yield name
    finally:
        async with services.store.db.connection() as conn:
            await conn.execute(f"DROP TRIGGER {name} ON messages")
            await conn.execute(f"DROP FUNCTION {name}()")
            await conn.execute(f"DROP TABLE {name}")


async def test_a_turn_whose_replies_cannot_be_stored_leaves_no_checkpoint(
    services: Services, demo: DemoInfo, refused_replies: str
) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    assert chat.conversation_id is not None
    graph = services.runner.graphs.get(demo.bot.graph)
    config = thread_config(demo.bot, chat.conversation_id)
    before = await graph.aget_state(config)
    assert before.values.get("turn_id"), "the first turn was checkpointed"
    async with services.store.db.connection() as conn:
        await conn.execute(f"INSERT INTO {refused_replies} VALUES (%s)", (chat.conversation_id,))
    with pytest.raises(Exception, match="replies refused"):
        await chat.say("where is my order?")
    after = await graph.aget_state(config)
    assert after.values.get("turn_id") == before.values.get("turn_id"), "the failed turn's checkpoint was written"
    assert after.config["configurable"]["checkpoint_id"] == before.config["configurable"]["checkpoint_id"]
    async with services.store.db.connection() as conn:  # replies allowed again: the conversation goes on
        await conn.execute(f"DELETE FROM {refused_replies}")
    again = await chat.say("where is my order?")
    assert again.intent == "order_status" and again.replies


async def test_the_saver_queues_its_writes_in_a_batch_and_they_commit_when_sent(services: Services) -> None:
    saver = services.runner.graphs.checkpointer
    assert saver is not None
    thread = f"batch-{uuid.uuid4()}"
    graph = services.runner.graphs.get("turn")
    batch = CheckpointBatch()
    config: Any = {"configurable": {"thread_id": thread, CHECKPOINT_BATCH: batch}}
    await graph.aupdate_state(config, {"failures": 2, "slots": {"order": "1234"}}, as_node="respond")
    assert batch, "the write was queued"
    sqls = [sql for sql, _, many in batch.statements if not many]
    assert len(sqls) == len(batch.statements) == 2, "the blobs in one statement, the checkpoint in another"
    assert (await graph.aget_state({"configurable": {"thread_id": thread}})).values == {}
    async with services.store.db.connection() as conn, conn.pipeline(), conn.transaction():
        await batch.send(conn)
    assert not batch
    values = (await graph.aget_state({"configurable": {"thread_id": thread}})).values
    assert (values["failures"], values["slots"]) == (2, {"order": "1234"})


async def test_the_first_read_of_a_turn_is_the_one_made_with_the_lock(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    saver = services.runner.graphs.checkpointer
    saver_class = type(getattr(saver, "inner", saver))
    assert saver_class.__name__ == postgres_saver_class().__name__
    reads: list[dict[str, Any]] = []
    taken: list[bool] = []
    stock: Any = saver_class.__mro__[1]  # LangGraph's AsyncPostgresSaver
    stock_read = stock.aget_tuple  # its own read: a round trip
    original_take = CheckpointRead.take

    async def counted(self: Any, config: Any) -> Any:
        reads.append(config["configurable"])
        return await stock_read(self, config)

    def take(self: CheckpointRead, config: Any) -> tuple[bool, Any]:
        fits, row = original_take(self, config)
        taken.append(fits)
        return fits, row

    monkeypatch.setattr(stock, "aget_tuple", counted)
    monkeypatch.setattr(CheckpointRead, "take", take)
    second = await chat.say("where is my order?")
    assert second.intent == "order_status"
    assert taken == [True], "the run's read was answered from the lock's"
    assert reads == [], "no checkpoint read of its own"
    third = await chat.say("it's 1234")  # continues from the checkpoint the second turn wrote
    assert "1234 has shipped with DHL" in third.replies[0].text
    assert taken == [True, True] and reads == []


async def test_a_turn_lets_the_lock_go_in_its_last_round_trip_when_nothing_waits(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = services.runner.locks
    assert isinstance(locks, PostgresLocks)
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    released: list[bool] = []
    went = HeldLock.went

    def recorded(self: HeldLock, rows: list[dict[str, Any]]) -> bool:
        released.append(went(self, rows))
        return released[-1]

    monkeypatch.setattr(HeldLock, "went", recorded)
    second = await chat.say("where is my order?")
    assert second.intent == "order_status"
    assert released == [True], "the turn's last round trip let the lock go"
    assert not locks._released, "nothing left marked"
    async with locks.try_hold(chat.conversation_id or "") as free:
        assert free, "the lock is free once the turn is answered"


async def test_the_lock_stays_held_while_a_message_of_the_conversation_waits(
    services: Services, demo: DemoInfo
) -> None:
    locks = services.runner.locks
    assert isinstance(locks, PostgresLocks)
    bot = demo.bot
    waiting = InboundMessage(channel="test", text="later", sender=f"user-{uuid.uuid4().hex[:6]}")
    conversation, message, _ = await services.store.messages.receive(bot.tenant_id, bot.id, waiting)
    held: list[HeldLock] = []

    async def first(conn: Any) -> Any:
        held.append(locks.held(conn, conversation.id))

        async def read() -> None:
            return None

        return read

    async def release() -> bool:
        async with held[0].conn.pipeline():
            read = await held[0].queue_release_unless(WAITING_SQL, waiting_params(bot.tenant_id, conversation.id))
        went: bool = await read()
        return went

    async with locks.hold_then(conversation.id, first):
        assert await release() is False, "a message waits: the lock stays"
        async with locks.try_hold(conversation.id) as free:
            assert not free
        await services.store.messages.finish(bot.tenant_id, message.id, "answered", turn_id=None, outcome={})
        assert await release() is True
        async with locks.try_hold(conversation.id) as free:
            assert free, "let go before the holder's exit"
    assert not locks._released
