"""Burst policies: what happens to messages that arrive while a turn of their conversation runs.

Every policy keeps turns of one conversation apart (the conversation's lock) and in
arrival order; they differ in what a message arriving during a turn gets. Per
channel kind (``docs/configuration.md#burst-policies``):

* ``enqueue``: each message is its own turn, run after the one before.
* ``merge``: messages within the bot's burst window of each other (and all that
  waited for the lock) are one turn, answered once; the others are ``merged``.
* ``interrupt``: a message arriving while a turn runs cancels that turn (nothing of
  it is checkpointed or stored) and one new turn answers every pending message.
* ``reject``: a message arriving while a turn runs gets the bot's ``busy_reply``
  instead of a turn (status ``rejected``). A response or socket channel's request
  finds the lock taken (:meth:`Bursts.run_or_reject`); a push channel's turn job
  finds a turn ``processing`` and rejects the messages stored after it
  (:meth:`Bursts.process`), whose busy replies are delivered like any reply while
  the running turn goes on.

Under ``reject`` a message is taken for a turn, or for the busy reply, by a
compare-and-set on its status, so no message gets both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Literal, TypeVar, cast

from botloom.core.domain import Bot, Conversation, StoredMessage
from botloom.core.messages import utcnow
from botloom.core.statuses import InboundStatus
from botloom.core.storage.repositories import Store
from botloom.runtime.handover import WITH_PERSON
from botloom.runtime.locks import ConversationLocks, HeldLock, PostgresLocks
from botloom.runtime.results import TurnResult, turn_id_for
from botloom.runtime.turns import Lookahead, ReadAhead, Turns, Watch

T = TypeVar("T")
Found = tuple[Conversation | None, list[StoredMessage]]
"""A conversation and its pending inbound messages, as the turn loop reads them."""

MERGE_WINDOWS = 5
"""``merge`` waits for quiet at most this many burst windows."""
CLAIMS: dict[str, int | Literal["all"]] = {"enqueue": 1, "interrupt": "all"}
"""What a turn of each policy runs is known when the pending messages are read: ``enqueue`` the oldest,
``interrupt`` all of them; that read marks them ``processing`` in the same statement (``merge`` waits for
quiet first, and ``reject`` takes its message by compare-and-set)."""


class Bursts:
    """Runs a conversation's pending messages as its bot's burst policy says (see the module docstring)."""

    def __init__(self, *, store: Store, locks: ConversationLocks, turns: Turns) -> None:
        self.store = store
        self.locks = locks
        self.turns = turns

    async def process(self, bot: Bot, conversation_id: str, *, wait: bool = False) -> list[TurnResult]:
        """Run the conversation's pending messages in order, holding its lock, as its burst policy says.

        Under ``reject``, unless ``wait``, a turn running elsewhere gets the messages
        stored after it rejected (busy) instead of waiting for its lock; ``wait``
        (a retried request) waits for the lock under every policy.
        """
        if bot.settings.burst_policy == "reject" and not wait:
            async with self.locks.try_hold(conversation_id) as free:
                if free:
                    return await self._run_pending(bot, conversation_id)
                rejected = await self._reject_during_turn(bot, conversation_id)
            if rejected is not None:
                return rejected
        claim = CLAIMS.get(bot.settings.burst_policy, 0)
        held: HeldLock | None = None

        async def first(conn: Any) -> Callable[[], Awaitable[tuple[Found, ReadAhead | None]]]:
            nonlocal held
            messages = self.store.messages
            if conn is not None:  # queued behind the lock on its connection: one round trip
                if isinstance(self.locks, PostgresLocks):
                    held = self.locks.held(conn, conversation_id)
                pending = await messages.queue_pending_with_conversation(
                    conn, bot.tenant_id, conversation_id, claim=claim, unless_status=WITH_PERSON
                )
                reads = await self.turns.queue_reads(conn, bot, conversation_id)

                async def read() -> tuple[Found, ReadAhead | None]:
                    return await pending(), await reads()

                return read
            found = await messages.pending_with_conversation(
                bot.tenant_id, conversation_id, claim=claim, unless_status=WITH_PERSON
            )
            return partial(_value, (found, None))

        # the lock, the conversation, its pending messages and the claim of the first turn's, the bot's plugins
        # and the conversation's checkpoint: one round trip
        async with self.locks.hold_then(conversation_id, first) as (found, read_ahead):
            return await self._run_pending(bot, conversation_id, first=found, read_ahead=read_ahead, held=held)

    async def run_or_reject(self, bot: Bot, conversation: Conversation, message: StoredMessage) -> TurnResult:
        """``reject`` for a response or socket channel: run ``message`` if no turn of its conversation runs, else busy.

        :meth:`botloom.runtime.inbound.Inbound.answer` calls this for a new message of a ``reject`` bot.
        """
        async with self.locks.try_hold(conversation.id) as free:
            if free:
                await self._run_pending(bot, conversation.id, only=message.id)
                return await self.result_of(bot, message.id)
        rejected = await self.reject(bot, conversation, message)
        return rejected if rejected is not None else await self.result_of(bot, message.id)

    async def reject(self, bot: Bot, conversation: Conversation, message: StoredMessage) -> TurnResult | None:
        """Answer ``message`` with the bot's busy reply; ``None`` when a turn took it first."""
        if not await self.store.messages.claim(bot.tenant_id, message.id, "rejected", expected=["received"]):
            return None
        turn = turn_id_for(message.id)
        reply, _ = await self.store.messages.add_outbound(
            bot.tenant_id,
            conversation.id,
            channel=conversation.channel,
            text=bot.settings.busy_reply,
            turn_id=turn,
            idempotency_key=f"{turn}:000",
            status=self.turns.reply_status(conversation.channel),
        )
        await self.store.messages.finish(
            bot.tenant_id, message.id, "rejected", turn_id=turn, outcome={"rejected": "busy"}
        )
        return TurnResult(
            conversation_id=conversation.id,
            message_id=message.id,
            turn_id=turn,
            replies=[reply],
            status="rejected",
            conversation_status=conversation.status,
        )

    async def result_of(self, bot: Bot, message_id: str) -> TurnResult:
        """The stored outcome and replies of the turn that answered an inbound message."""
        message = await self.store.messages.get(bot.tenant_id, message_id)
        if message is None:
            raise LookupError(f"message {message_id} not found")
        outcome = dict(message.metadata.get("outcome") or {})
        replies = await self.store.messages.replies_of_turn(bot.tenant_id, message.turn_id) if message.turn_id else []
        return TurnResult(
            conversation_id=message.conversation_id,
            message_id=message.id,
            turn_id=message.turn_id,
            replies=replies,
            intent=outcome.get("intent"),
            confidence=float(outcome.get("confidence") or 0.0),
            errors=list(outcome.get("errors") or []),
            status=cast(InboundStatus, message.status),  # the message answered is inbound
            # the conversation's status when the turn ended, as recorded with the message from the conversation row
            conversation_status="escalated" if outcome.get("escalated") else "open",
        )

    # -- the policies ------------------------------------------------------------------

    async def _run_pending(
        self,
        bot: Bot,
        conversation_id: str,
        *,
        only: str | None = None,
        first: Found | None = None,
        read_ahead: ReadAhead | None = None,
        held: HeldLock | None = None,
    ) -> list[TurnResult]:
        """Run the pending messages with the lock held; ``only`` restricts it to one message.

        ``first``: the conversation and its pending messages as read (and claimed, see
        :data:`CLAIMS`) with the lock; ``read_ahead``: what the first turn reads, read with it; ``held``:
        the lock, which a turn's last round trip lets go when nothing waits (then the loop ends).
        """
        policy = bot.settings.burst_policy
        results: list[TurnResult] = []
        ahead = Lookahead()
        claim = CLAIMS.get(policy, 0) if only is None else 0
        while True:
            claimed = False
            if first is not None:  # read with the lock
                (conversation, pending), first = first, None
                claimed = bool(claim)
            elif ahead.pending is None:  # the conversation and what waits, in one round trip
                conversation, pending = await self.store.messages.pending_with_conversation(
                    bot.tenant_id, conversation_id, claim=claim, unless_status=WITH_PERSON
                )
                claimed = bool(claim)
            else:  # what the previous turn's last statement saw after it
                conversation, pending = ahead.conversation, ahead.pending
            ahead = Lookahead()
            if only is not None:
                pending = [m for m in pending if m.id == only]
            if not pending or conversation is None:
                break
            if policy == "merge":
                settled = await self._settle(bot, conversation_id, pending)
                if settled is not pending:  # it waited for quiet: read the conversation again
                    conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
                    if conversation is None:
                        break
                pending = settled
            batch = pending if policy in ("merge", "interrupt") else pending[:1]
            if policy == "reject" and not await self._take(bot, batch[0]):
                continue  # a concurrent job answered it busy
            watch = self._newer_than(bot, conversation_id, batch[-1].id) if policy == "interrupt" else None
            result = await self.turns.run(
                bot, conversation, batch, watch=watch, lookahead=ahead, claimed=claimed, ahead=read_ahead, held=held
            )
            read_ahead = None  # read for the first turn only
            if result is not None:
                results.append(result)
            if ahead.released:  # the turn's last round trip let the lock go: nothing waited
                break
        return results

    async def _take(self, bot: Bot, message: StoredMessage) -> bool:
        """``reject``: take ``message`` for a turn, unless a busy reply took it first (compare-and-set)."""
        if message.status == "processing":
            return True
        return await self.store.messages.claim(bot.tenant_id, message.id, "processing", expected=["received"])

    async def _settle(self, bot: Bot, conversation_id: str, pending: list[StoredMessage]) -> list[StoredMessage]:
        """``merge``: wait until no message arrived for the burst window (at most five windows); all pending."""
        window = bot.settings.burst_window_ms / 1000
        deadline = time.monotonic() + MERGE_WINDOWS * window
        while window > 0 and time.monotonic() < deadline:
            newest = max(m.created_at for m in pending)
            quiet = window - (utcnow() - newest).total_seconds()
            if quiet <= 0:
                break
            await asyncio.sleep(min(quiet, deadline - time.monotonic()))
            pending = await self.store.messages.pending_inbound(bot.tenant_id, conversation_id)
        return pending

    def _newer_than(self, bot: Bot, conversation_id: str, message_id: str) -> Watch:
        """``interrupt``: whether a message newer than ``message_id`` arrived (asked while the turn runs)."""

        async def newer() -> bool:
            return await self.store.messages.received_after(bot.tenant_id, conversation_id, message_id)

        return newer

    async def _reject_during_turn(self, bot: Bot, conversation_id: str) -> list[TurnResult] | None:
        """``reject`` on a push channel's turn job: busy replies for the messages stored after the running turn's.

        ``None`` when no turn is seen running (its holder is between two turns, or
        has not marked its message yet): the caller waits for the lock instead, so
        no message is left without a turn.
        """
        pending = await self.store.messages.pending_inbound(bot.tenant_id, conversation_id)
        running = next((i for i, m in enumerate(pending) if m.status == "processing"), None)
        if running is None:
            return None
        conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
        if conversation is None:
            return []
        later: Sequence[StoredMessage] = [m for m in pending[running + 1 :] if m.status == "received"]
        results = [await self.reject(bot, conversation, message) for message in later]
        return [r for r in results if r is not None]


async def _value(value: T) -> T:
    return value


__all__ = ["CLAIMS", "MERGE_WINDOWS", "Bursts"]
