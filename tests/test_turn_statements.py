"""The runner's two bookkeeping statements (#16): ``pending_with_conversation`` and ``store_turn``.

``store_turn`` replaces ``add_outbound`` per reply plus ``finish`` per message plus
the turn loop's next ``pending_inbound``: it must store each reply once however often
a turn is re-run, finish exactly the given messages, and read back what still waits.
"""

from __future__ import annotations

import uuid

import pytest

from botloom.core.messages import InboundMessage
from botloom.core.storage.repositories import Store


async def conversation_with(store: Store, texts: list[str]) -> tuple[str, str, list[str]]:
    """A tenant, a conversation of its bot with ``texts`` received in order: tenant id, conversation id, message ids."""
    tenant = await store.tenants.create(f"t{uuid.uuid4().hex[:8]}", "T")
    bot = await store.bots.create(tenant.id, "support", "Support")
    ids, conversation_id = [], ""
    for text in texts:
        message = InboundMessage(channel="sms", text=text, sender="+15550001111")
        conversation, stored, _ = await store.messages.receive(tenant.id, bot.id, message)
        conversation_id = conversation.id
        ids.append(stored.id)
    return tenant.id, conversation_id, ids


async def test_pending_with_conversation_reads_both_in_order(store: Store) -> None:
    tenant, conversation_id, ids = await conversation_with(store, ["one", "two"])
    conversation, pending = await store.messages.pending_with_conversation(tenant, conversation_id)
    assert conversation is not None and conversation.id == conversation_id
    assert [m.id for m in pending] == ids
    assert pending == await store.messages.pending_inbound(tenant, conversation_id)
    assert await store.messages.pending_with_conversation(tenant, str(uuid.uuid4())) == (None, [])


async def test_store_turn_stores_replies_once_finishes_its_messages_and_reads_what_waits(store: Store) -> None:
    tenant, conversation_id, ids = await conversation_with(store, ["one", "two", "three"])
    turn = str(uuid.uuid4())
    call = {
        "channel": "sms",
        "turn_id": turn,
        "replies": ["first", "second"],
        "status": "pending",
        "finished": [(ids[0], "answered"), (ids[1], "merged")],
        "outcome": {"intent": "greet"},
    }
    replies, conversation, pending = await store.messages.store_turn(tenant, conversation_id, **call)  # type: ignore[arg-type]
    assert [r.text for r in replies] == ["first", "second"]
    assert [r.idempotency_key for r in replies] == [f"{turn}:000", f"{turn}:001"]
    assert conversation.id == conversation_id
    assert [m.id for m in pending] == [ids[2]]
    assert replies == await store.messages.replies_of_turn(tenant, turn)
    first, second = await store.messages.get(tenant, ids[0]), await store.messages.get(tenant, ids[1])
    assert first is not None and second is not None
    assert (first.status, second.status) == ("answered", "merged")
    assert first.turn_id == turn and first.metadata["outcome"] == {"intent": "greet"}

    again, _, pending_again = await store.messages.store_turn(tenant, conversation_id, **call)  # type: ignore[arg-type]
    assert again == replies  # a re-run gets the stored replies back and stores none twice
    assert pending_again == pending
    outbound = [m for m in await store.messages.list_all(tenant, conversation_id) if m.direction == "outbound"]
    assert len(outbound) == 2


async def test_store_turn_of_no_such_conversation_raises_and_changes_nothing(store: Store) -> None:
    tenant, _, ids = await conversation_with(store, ["one"])
    with pytest.raises(LookupError):
        await store.messages.store_turn(
            tenant,
            str(uuid.uuid4()),
            channel="sms",
            turn_id=str(uuid.uuid4()),
            replies=["x"],
            status="pending",
            finished=[(ids[0], "answered")],
            outcome={},
        )
    message = await store.messages.get(tenant, ids[0])
    assert message is not None and message.status == "received"


async def test_pending_with_conversation_claims_the_oldest_in_the_same_statement(store: Store) -> None:
    tenant, conversation_id, ids = await conversation_with(store, ["one", "two", "three"])
    _, pending = await store.messages.pending_with_conversation(tenant, conversation_id, claim=1)
    assert [(m.id, m.status) for m in pending] == [(i, "received") for i in ids], "as they were before the claim"
    statuses = [m.status for m in await store.messages.pending_inbound(tenant, conversation_id)]
    assert statuses == ["processing", "received", "received"]
    _, again = await store.messages.pending_with_conversation(tenant, conversation_id, claim=1)
    assert [m.status for m in again] == ["processing", "received", "received"], "a turn that died is seen as such"
    await store.messages.pending_with_conversation(tenant, conversation_id, claim="all")
    assert {m.status for m in await store.messages.pending_inbound(tenant, conversation_id)} == {"processing"}


async def test_pending_with_conversation_claims_nothing_unless_asked_or_in_the_status_given(store: Store) -> None:
    tenant, conversation_id, _ = await conversation_with(store, ["one", "two"])
    await store.messages.pending_with_conversation(tenant, conversation_id)
    await store.messages.pending_with_conversation(tenant, conversation_id, claim="all", unless_status="open")
    assert {m.status for m in await store.messages.pending_inbound(tenant, conversation_id)} == {"received"}
