"""Replies out through push channels, with retries, and the provider's reports on them.

The path of a reply (DESIGN.md, "The path of one turn"; inbound messages and
their turns are :mod:`botloom.runtime.inbound`'s):

1. the ``turn`` job stores a turn's replies and queues a ``deliver`` job;
2. the ``deliver`` job (:meth:`Deliveries.deliver`) sends the conversation's
   pending replies in order, each split within the channel's limit, part by
   part, recording each attempt before the channel gets the part and each part
   sent after (a part whose attempt ended without an outcome is looked for at
   the provider before it is sent again, where the channel ``finds_sent``:
   exactly once where the provider can tell); a failure is retried with exponential
   back-off, and after the last attempt (or at once, for a :class:`SendError`
   that is not ``retryable``) the reply is a dead letter (status ``failed``,
   with its error and attempts), which the API lists and can retry;
3. a provider's :class:`DeliveryReport` (a status callback, a bounce) moves the
   stored reply on (:meth:`Deliveries.record`).

A channel may answer in its provider's response instead (Twilio's TwiML):
the inbound path runs the turn within the channel's window and claims the
replies for the response; whatever misses the window is delivered here, never
lost and never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec

from botloom.core.channels import ChannelAdapter, DeliveryReport, SendError
from botloom.core.domain import Bot, Conversation, StoredMessage
from botloom.core.host import PluginHost
from botloom.core.messages import OutboundMessage, utcnow
from botloom.core.settings import Settings
from botloom.core.storage.repositories import DeliveryRepository, OutboundState, Store
from botloom.runtime.inbound import ChannelBinding, ChannelBindings
from botloom.runtime.locks import ConversationLocks
from botloom.runtime.queue import JobFunction, JobQueue

logger = logging.getLogger(__name__)

RECOVER_CRON = "* * * * *"

T = TypeVar("T")


def text_limit(adapter: ChannelAdapter[Any], message: OutboundMessage, config: Any) -> int | None:
    """The longest text of one message to this recipient: the channel's ``text_limit`` or ``max_text_length``."""
    if adapter.capabilities.text_limit:
        return adapter.text_limit(message, config)
    return adapter.max_text_length


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the way SMS gateways count (an emoji counts twice)."""
    return len(text.encode("utf-16-le")) // 2


_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?…])\s+"), re.compile(r"\s+"))


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, at paragraph, line, sentence or word breaks.

    A word longer than ``limit`` is cut. Whitespace at the cuts is dropped; the
    parts, joined, hold every other character of ``text`` in order.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 (one character may take two UTF-16 units)")
    parts: list[str] = []
    rest = text.strip()
    while utf16_length(rest) > limit:
        head = _prefix(rest, limit)
        cut = _last_break(rest, len(head))
        if cut is None:
            parts.append(head)
            rest = rest[len(head) :].lstrip()
        else:
            parts.append(rest[: cut[0]].rstrip())
            rest = rest[cut[1] :]
    if rest:
        parts.append(rest)
    return parts


def _prefix(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-16 units (never half a character)."""
    units, end = 0, 0
    for end, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:end]
    return text[: end + 1]


def _last_break(text: str, within: int) -> tuple[int, int] | None:
    """Start and end of the best break in ``text[:within + 1]``: the coarsest kind that leaves a non-empty part."""
    window = text[: within + 1]
    for pattern in _BREAKS:
        found = [m for m in pattern.finditer(window) if 0 < m.start() <= within]
        if found:
            return found[-1].start(), found[-1].end()
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a reply is sent before it becomes a dead letter."""

    attempts: int = 8
    first_delay: float = 2.0
    """Seconds before the second attempt; each further one waits twice as long (with jitter)."""
    max_delay: float = 900.0
    send_timeout: float = 30.0
    recover_after: float = 60.0
    """Seconds a turn or delivery may wait before the recovery sweep queues it again."""

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        full = min(self.max_delay, self.first_delay * 2.0 ** max(0, attempts - 1))
        return full / 2 + random.uniform(0, full / 2)


class Deliveries:
    """Replies out through their push channels, and the providers' reports on them."""

    def __init__(
        self,
        *,
        store: Store,
        host: PluginHost,
        bindings: ChannelBindings,
        locks: ConversationLocks,
        queue: JobQueue,
        settings: Settings,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.bindings = bindings
        self.locks = locks
        self.queue = queue
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.parts = DeliveryRepository(store.db)

    # -- outbound ------------------------------------------------------------------

    async def schedule(self, tenant_id: str, conversation_id: str, *, trigger: str, delay: float = 0.0) -> None:
        """Queue a ``deliver`` job for the conversation; ``trigger`` tells jobs apart (a reply, a retry)."""
        await self.queue.enqueue(
            "deliveries",
            "deliver",
            key=f"{conversation_id}:{trigger}",
            delay=delay,
            tenant_id=tenant_id,
            conversation_id=conversation_id,
        )

    async def deliver(self, tenant_id: str, conversation_id: str, *, bot: Bot | None = None) -> int:
        """Job: send the conversation's pending replies in order; returns how many went out.

        One job at a time delivers a conversation: a job that finds another at work
        leaves the replies to it, and the one at work looks for new replies again
        after it lets go.
        """
        due = await self.parts.next_due(tenant_id, conversation_id)
        if due is None:
            return 0
        conversation = await self.store.conversations.get(tenant_id, conversation_id)
        if conversation is not None and (bot is None or bot.id != conversation.bot_id):
            bot = await self.store.bots.get(tenant_id, conversation.bot_id)
        if conversation is None or bot is None:
            return 0
        found = await self.bindings.of_bot(bot, conversation.channel)
        if found is not None and found.adapter.kind != "push":
            return 0  # replies go in the channel's responses
        sent = 0
        while True:
            async with self.locks.try_hold(f"deliver:{conversation_id}") as free:
                if not free:
                    return sent
                sent += await self._drain(bot, conversation, found, due)
            due = await self.parts.next_due(tenant_id, conversation_id)
            if due is None or (due.next_attempt_at is not None and due.next_attempt_at > utcnow()):
                return sent

    async def _drain(
        self,
        bot: Bot,
        conversation: Conversation,
        found: ChannelBinding | None,
        due: OutboundState | None,
    ) -> int:
        """Send pending replies, from ``due`` on, until none is left or one must wait for its back-off."""
        sent = 0
        while due is not None:
            message = due.message
            if due.next_attempt_at is not None and due.next_attempt_at > utcnow():
                wait = (due.next_attempt_at - utcnow()).total_seconds()
                trigger = f"{message.id}:{due.attempts}"
                await self.schedule(bot.tenant_id, conversation.id, trigger=trigger, delay=wait)
                return sent
            started = await self.parts.start(bot.tenant_id, message.id)
            if started is None:  # answered in a provider's response meanwhile
                due = await self.parts.next_due(bot.tenant_id, conversation.id)
                continue
            try:
                if found is None:
                    raise ChannelUnavailable(f"the {conversation.channel} channel is not enabled for this bot")
                outbound = self.outbound(bot, conversation, message, started[1])
                await self._send(bot, found.adapter, found.config, outbound, message.id, done=started[0])
            except Exception as exc:  # noqa: BLE001 - any failure of a channel is retried or dead-lettered
                if await self._failed(bot, conversation, due, exc):
                    return sent
            else:
                if not await self.parts.finish(bot.tenant_id, message.id):
                    await self.store.messages.claim(bot.tenant_id, message.id, "sent", expected=["sending"])
                sent += 1
            due = await self.parts.next_due(bot.tenant_id, conversation.id)
        return sent

    def outbound(
        self, bot: Bot, conversation: Conversation, message: StoredMessage, reply_to: dict[str, Any]
    ) -> OutboundMessage:
        """A stored reply as the channel gets it; ``metadata`` says what it answers and where to report its status."""
        metadata = {
            **message.metadata,
            "reply_to": reply_to,
            "webhook_path": f"/channels/{conversation.channel}/{bot.id}",
            "public_url": self.settings.public_url,
        }
        return OutboundMessage(
            channel=conversation.channel,
            text=message.text,
            recipient=conversation.user or conversation.external_key,
            conversation_id=conversation.id,
            attachments=message.attachments,
            metadata=metadata,
            idempotency_key=message.id,
        )

    @staticmethod
    def parts_of(
        adapter: ChannelAdapter[Any], config: Any, message: OutboundMessage, stored_id: str
    ) -> list[OutboundMessage]:
        """``message`` split within the channel's limit; each part with its ``delivery_ref`` and idempotency key."""
        limit = text_limit(adapter, message, config)
        texts = split_text(message.text, limit) if limit else [message.text.strip()]
        texts = [t for t in texts if t] or ([""] if message.attachments else [])
        return [
            msgspec.structs.replace(
                message,
                text=text,
                attachments=message.attachments if index == 0 else (),
                idempotency_key=f"{stored_id}:{index}",
                metadata={**message.metadata, "delivery_ref": f"{stored_id}:{index}"},
            )
            for index, text in enumerate(texts)
        ]

    async def _send(
        self,
        bot: Bot,
        adapter: ChannelAdapter[Any],
        config: Any,
        outbound: OutboundMessage,
        stored_id: str,
        *,
        done: set[int],
    ) -> None:
        """Hand each part of a reply not sent yet to the channel, recording each as it goes.

        Each part's attempt is recorded before the channel gets it. A part whose
        earlier attempt ended without an outcome (the worker died mid-send, the send
        timed out, the database went away before the provider's id was recorded) may
        have gone out: a channel that ``finds_sent`` is asked first, and a part it
        finds is recorded sent instead of being sent again.
        """
        tenant_id = bot.tenant_id
        for index, part in enumerate(self.parts_of(adapter, config, outbound, stored_id)):
            if index in done:
                continue
            earlier = await self.parts.begin_attempt(tenant_id, stored_id, index, channel=adapter.name)
            if earlier is not None and await self._went_out(
                adapter, config, part, tenant_id=tenant_id, stored_id=stored_id, index=index, since=earlier
            ):
                continue
            try:
                provider_id = await self._timed(adapter.send(part, config), adapter.name, "send")
            except SendError:  # the provider did not take the part: a retry need not ask
                await self.parts.forget_attempt(tenant_id, stored_id, index)
                raise
            await self.parts.add_part(tenant_id, stored_id, index, channel=adapter.name, provider_id=provider_id)

    async def _went_out(
        self,
        adapter: ChannelAdapter[Any],
        config: Any,
        part: OutboundMessage,
        *,
        tenant_id: str,
        stored_id: str,
        index: int,
        since: datetime,
    ) -> bool:
        """Whether an interrupted attempt, begun at ``since``, delivered ``part``: then it is recorded sent.

        Only a channel that ``finds_sent`` can say; any other sends the part again
        (e-mail's stable Message-ID lets mail clients show it once).
        """
        if not adapter.capabilities.finds_sent:
            logger.info(
                "part %d of message %s may have gone out in an attempt at %s whose outcome was not recorded; "
                "the %s channel cannot be asked, so it is sent again",
                index,
                stored_id,
                since.isoformat(),
                adapter.name,
            )
            return False
        found = await self._timed(adapter.find_sent(part, since, config), adapter.name, "look")
        if found is not None:
            if await self.parts.add_part(
                tenant_id, stored_id, index, channel=adapter.name, provider_id=found, found=True
            ):
                logger.info(
                    "part %d of message %s went out in an attempt at %s (%s %s): not sent again",
                    index,
                    stored_id,
                    since.isoformat(),
                    adapter.name,
                    found,
                )
                return True
            logger.warning(
                "part %d of message %s: the %s message found for it (%s) is recorded for another part; sending it",
                index,
                stored_id,
                adapter.name,
                found,
            )
            return False
        logger.info(
            "part %d of message %s did not go out in the attempt at %s: sending it", index, stored_id, since.isoformat()
        )
        return False

    async def _timed(self, call: Awaitable[T], channel: str, doing: str) -> T:
        """``call``, a channel's, within the send timeout; else ``TimeoutError`` saying what took too long."""
        try:
            return await asyncio.wait_for(call, self.policy.send_timeout)
        except TimeoutError:
            raise TimeoutError(f"{channel} took longer than {self.policy.send_timeout:g}s to {doing}") from None

    async def _failed(self, bot: Bot, conversation: Conversation, due: OutboundState, exc: Exception) -> bool:
        """Record a failed attempt; ``True`` when it is retried later, ``False`` when it became a dead letter."""
        attempts = due.attempts + 1
        detail = f"{type(exc).__name__}: {exc}"
        # The tenant reads the stored error: a channel words it by raising SendError; any other exception's
        # text (a library's, maybe quoting what a server answered) goes to the operator's log only.
        error = detail if isinstance(exc, SendError | TimeoutError) else f"{type(exc).__name__} (details in the log)"
        retryable = exc.retryable if isinstance(exc, SendError) else True
        if retryable and attempts < self.policy.attempts:
            wait = self.policy.delay(attempts)
            await self.parts.fail(bot.tenant_id, due.message.id, error, retry_at=utcnow() + timedelta(seconds=wait))
            await self.schedule(bot.tenant_id, conversation.id, trigger=f"{due.message.id}:{attempts}", delay=wait)
            logger.info(
                "delivery of message %s failed (attempt %d), retrying in %.1fs: %s",
                due.message.id,
                attempts,
                wait,
                detail,
            )
            return True
        await self.parts.fail(bot.tenant_id, due.message.id, error, retry_at=None)
        logger.warning("message %s is a dead letter after %d attempt(s): %s", due.message.id, attempts, detail)
        return False

    async def record(self, bot: Bot, channel: str, report: DeliveryReport) -> bool:
        """Apply a provider's status report to the stored message; whether it named one of the bot's messages."""
        found = await self.parts.apply_report(
            bot.tenant_id,
            bot.id,
            channel,
            status=report.status,
            provider_id=report.provider_id,
            ref=report.part(),
            error=report.error,
        )
        return found is not None

    async def retry(self, tenant_id: str, message_id: str) -> OutboundState | None:
        """Send a dead letter again from its first unsent part; ``None`` when the message is not a dead letter."""
        state = await self.parts.requeue(tenant_id, message_id)
        if state is not None:
            trigger = f"{message_id}:retry-{uuid.uuid4().hex[:8]}"
            await self.schedule(tenant_id, state.message.conversation_id, trigger=trigger)
        return state

    async def recover(self) -> int:
        """Cron job: queue again the turns and deliveries of push channels that waited too long (a lost job).

        The jobs reuse the keys of the jobs they stand in for (a turn's is its
        oldest waiting message's id), so a job that is only late, still waiting
        in a busy queue, is not queued a second time: the queue ignores a key
        that waits or runs.
        """
        push = [name for name, adapter in self.host.registry.channels.items() if adapter.kind == "push"]
        if not push:
            return 0
        rows = await self.parts.unfinished(push, self.policy.recover_after)
        for row in rows:
            if row["direction"] == "inbound":
                await self.queue.enqueue(
                    "turns",
                    "turn",
                    key=row["message_id"],
                    tenant_id=row["tenant_id"],
                    bot_id=row["bot_id"],
                    conversation_id=row["conversation_id"],
                )
            else:
                await self.schedule(row["tenant_id"], row["conversation_id"], trigger="recover")
        return len(rows)

    def jobs(self) -> dict[str, JobFunction]:
        """The job functions of the deliveries queue, by name."""
        return {"deliver": self.deliver, "recover": self.recover}


class ChannelUnavailable(SendError):
    """A reply's channel is no longer enabled for its bot; it becomes a dead letter at once."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retryable=False)


__all__ = [
    "RECOVER_CRON",
    "ChannelUnavailable",
    "Deliveries",
    "DeliveryReport",
    "RetryPolicy",
    "SendError",
    "split_text",
    "text_limit",
    "utf16_length",
]
