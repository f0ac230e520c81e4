"""Messages on the queue: inbound turns, and replies delivered through push channels with retries.

The path of a message through a channel (DESIGN.md, "The path of one turn"):

1. :meth:`Deliveries.accept` stores an inbound message (idempotent on the
   channel's id for it) and queues a ``turn`` job, before the channel's
   request is answered;
2. the ``turn`` job (:meth:`Deliveries.run_turns`) runs the conversation's pending
   turns under its lock, then queues a ``deliver`` job;
3. the ``deliver`` job (:meth:`Deliveries.deliver`) sends the conversation's
   pending replies in order, each split within the channel's limit, part by
   part, recording each part sent; a failure is retried with exponential
   back-off, and after the last attempt the reply is a dead letter (status
   ``failed``, with its error and attempts), which the API lists and can retry.

A channel may answer in its provider's response instead (Twilio's TwiML):
:meth:`Deliveries.answer_in_response` runs the turn within the channel's
window and claims the replies for the response; whatever misses the window is
delivered by the queue, never lost and never sent twice.

Besides :class:`~botloom.core.definitions.ChannelAdapter`'s methods, a channel
may offer three optional ones, looked up here (see ``docs/channels.md``):
``text_limit(message, config)``, ``response_window(request, config)`` and
``delivery_report(request, config)``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from botloom.core.definitions import ChannelAdapter, ChannelRequest
from botloom.core.domain import Bot, Conversation, StoredMessage
from botloom.core.host import PluginHost
from botloom.core.messages import InboundMessage, OutboundMessage, utcnow
from botloom.core.settings import Settings
from botloom.core.storage.repositories import ChannelRouteRepository, DeliveryRepository, OutboundState, Store
from botloom.runtime.queue import JobFunction, JobQueue, Kind
from botloom.runtime.runner import TurnRunner

logger = logging.getLogger(__name__)

UNFINISHED = frozenset({"received", "processing"})
"""Inbound statuses of a message whose turn has not finished."""
HOLD_GRACE = 2.0
"""Seconds past a channel's response window before the queue takes over a turn the webhook was running."""
RECOVER_CRON = "* * * * *"


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's report on a message it was given (a status callback)."""

    status: Literal["sent", "delivered", "undelivered", "failed"]
    provider_id: str | None = None
    ref: str | None = None
    """The ``delivery_ref`` botloom gave the part (``message-id:part``), when the callback carries it."""
    error: str | None = None

    def part(self) -> tuple[str, int] | None:
        """The message id and part number ``ref`` names, if it is well formed."""
        match = re.fullmatch(r"([0-9a-fA-F-]{36}):(\d{1,4})", self.ref or "")
        return (match[1], int(match[2])) if match else None


@runtime_checkable
class LimitsText(Protocol):
    """A channel whose longest message depends on the recipient (SMS or WhatsApp)."""

    def text_limit(self, message: OutboundMessage, config: Any) -> int | None:
        """The longest text one message to ``message.recipient`` may carry."""


@runtime_checkable
class AnswersInResponse(Protocol):
    """A push channel that can also put replies in its answer to the provider's request."""

    def response_window(self, request: ChannelRequest, config: Any) -> float:
        """Seconds the host may wait for the turn before answering ``request`` (0: answer at once)."""


@runtime_checkable
class ReportsDelivery(Protocol):
    """A channel whose provider calls back with the status of sent messages."""

    def delivery_report(self, request: ChannelRequest, config: Any) -> dict[str, Any] | None:
        """The report a request carries, as ``{"status", "provider_id", "ref", "error"}``, or ``None``."""


def text_limit(adapter: ChannelAdapter, message: OutboundMessage, config: Any) -> int | None:
    """The longest text of one message to this recipient: the channel's ``text_limit`` or ``max_text_length``."""
    if isinstance(adapter, LimitsText):
        return adapter.text_limit(message, config)
    return adapter.max_text_length


def response_window(adapter: ChannelAdapter, request: ChannelRequest, config: Any) -> float:
    """Seconds to wait for the turn to answer in the response to ``request``; 0 when the channel cannot."""
    if isinstance(adapter, AnswersInResponse):
        return max(0.0, float(adapter.response_window(request, config)))
    return 0.0


def delivery_report(adapter: ChannelAdapter, request: ChannelRequest, config: Any) -> DeliveryReport | None:
    """The status report ``request`` carries, validated; ``None`` for other requests."""
    if not isinstance(adapter, ReportsDelivery):
        return None
    report = adapter.delivery_report(request, config)
    return None if report is None else msgspec.convert(report, DeliveryReport)


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


async def channel_setting(
    store: Store, host: PluginHost, bot: Bot, name: str
) -> tuple[ChannelAdapter, dict[str, Any]] | None:
    """The channel ``name`` and the bot's config of it, if the bot enabled the plugin providing it."""
    adapter = host.registry.channels.get(name)
    owner = host.registry.owner("channel", name)
    if adapter is None or owner is None:
        return None
    setting = await store.plugin_settings.get(bot.tenant_id, bot.id, owner)
    if setting is None or not setting.enabled:
        return None
    return adapter, dict(setting.config)


class Deliveries:
    """Inbound messages onto the queue, turns off it, and replies out through their channels."""

    def __init__(
        self,
        *,
        store: Store,
        host: PluginHost,
        runner: TurnRunner,
        queue: JobQueue,
        settings: Settings,
        policy: RetryPolicy | None = None,
        inline_turns: int = 4,
    ) -> None:
        self.store = store
        self.host = host
        self.runner = runner
        self.queue = queue
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.parts = DeliveryRepository(store.db)
        self.routes = ChannelRouteRepository(store.db, store.plugin_settings)
        self._inline = asyncio.Semaphore(inline_turns)
        self._background: set[asyncio.Task[Any]] = set()

    # -- inbound -------------------------------------------------------------------

    async def accept(self, bot: Bot, message: InboundMessage, *, hold: float = 0.0) -> tuple[StoredMessage, bool]:
        """Store an inbound message and queue its turn; returns the stored message and whether it is new.

        ``hold`` delays the queued turn while the webhook tries to answer in its
        response. A retried message whose turn has not finished is queued again
        (a no-op while its job waits), so a crash between storing and queueing
        loses nothing.
        """
        version = self.runner.state_version(bot)
        conversation, stored, new = await self.store.messages.receive(
            bot.tenant_id, bot.id, message, state_version=version
        )
        if stored.status in UNFINISHED:
            await self._queue_turn(bot, conversation.id, stored.id, delay=hold + HOLD_GRACE if hold else 0.0)
        return stored, new

    async def _queue_turn(self, bot: Bot, conversation_id: str, key: str, *, delay: float = 0.0) -> None:
        await self.queue.enqueue(
            "turns",
            "turn",
            key=key,
            delay=delay,
            tenant_id=bot.tenant_id,
            bot_id=bot.id,
            conversation_id=conversation_id,
        )

    async def run_turns(self, tenant_id: str, bot_id: str, conversation_id: str) -> int:
        """Job: run the conversation's pending turns, then deliver their replies (retries go on the queue)."""
        bot = await self.store.bots.get(tenant_id, bot_id)
        if bot is None:
            return 0
        results = await self.runner.process(bot, conversation_id)
        await self.deliver(tenant_id, conversation_id, bot=bot)
        return len(results)

    async def answer_in_response(
        self, bot: Bot, adapter: ChannelAdapter, config: Any, inbound: list[StoredMessage], wait: float
    ) -> list[OutboundMessage]:
        """Run the turns of ``inbound`` now; their replies, claimed from the queue, split for the response.

        Returns nothing when the turns take longer than ``wait`` seconds (they go
        on, and the queue delivers their replies) or when too many turns run in
        requests already (the queue runs this one at once). A retried request gets
        the replies its first answer carried.
        """
        if not inbound:
            return []
        conversation_id = inbound[0].conversation_id
        if self._inline.locked():
            await self._queue_turn(bot, conversation_id, f"{inbound[0].id}:now")
            return []
        late = asyncio.Event()
        task = asyncio.create_task(self._inline_turn(bot, conversation_id, late))
        self._background.add(task)
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=wait)
        if not done or task.cancelled() or task.exception() is not None:
            late.set()  # the queue's turn job (held back until the window closed) takes over
            return []
        replies = await self.parts.claim_for_response(bot.tenant_id, [m.id for m in inbound])
        conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
        if conversation is None:
            return []
        reply_to = dict(inbound[-1].metadata)
        return [
            part
            for reply in replies
            for part in self.parts_of(adapter, config, self.outbound(bot, conversation, reply, reply_to), reply.id)
        ]

    async def _inline_turn(self, bot: Bot, conversation_id: str, late: asyncio.Event) -> None:
        async with self._inline:
            await self.runner.process(bot, conversation_id)
        if late.is_set():
            await self.schedule(bot.tenant_id, conversation_id, trigger=f"late-{uuid.uuid4().hex[:12]}")

    async def close(self, grace: float = 5.0) -> None:
        """Let turns still running for webhooks finish (up to ``grace`` seconds), then cancel them.

        A cancelled turn runs again from the queue: its message is still unanswered.
        """
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a turn run for a webhook failed; the queue runs it again", exc_info=task.exception())

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
        found = await channel_setting(self.store, self.host, bot, conversation.channel)
        if found is not None and found[0].delivery != "push":
            return 0  # replies go in the channel's responses
        sent = 0
        while True:
            async with self.runner.locks.try_hold(f"deliver:{conversation_id}") as free:
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
        found: tuple[ChannelAdapter, dict[str, Any]] | None,
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
                await self._send(bot, found[0], found[1], outbound, message.id, done=started[0])
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
        adapter: ChannelAdapter, config: Any, message: OutboundMessage, stored_id: str
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
        adapter: ChannelAdapter,
        config: Any,
        outbound: OutboundMessage,
        stored_id: str,
        *,
        done: set[int],
    ) -> None:
        """Hand each part of a reply not sent yet to the channel, recording each as it goes."""
        for index, part in enumerate(self.parts_of(adapter, config, outbound, stored_id)):
            if index in done:
                continue
            try:
                provider_id = await asyncio.wait_for(adapter.send(part, config), self.policy.send_timeout)
            except TimeoutError:
                raise TimeoutError(f"{adapter.name} took longer than {self.policy.send_timeout:g}s to send") from None
            await self.parts.add_part(bot.tenant_id, stored_id, index, channel=adapter.name, provider_id=provider_id)

    async def _failed(self, bot: Bot, conversation: Conversation, due: OutboundState, exc: Exception) -> bool:
        """Record a failed attempt; ``True`` when it is retried later, ``False`` when it became a dead letter."""
        attempts = due.attempts + 1
        error = f"{type(exc).__name__}: {exc}"
        if getattr(exc, "retryable", True) and attempts < self.policy.attempts:
            wait = self.policy.delay(attempts)
            await self.parts.fail(bot.tenant_id, due.message.id, error, retry_at=utcnow() + timedelta(seconds=wait))
            await self.schedule(bot.tenant_id, conversation.id, trigger=f"{due.message.id}:{attempts}", delay=wait)
            logger.info(
                "delivery of message %s failed (attempt %d), retrying in %.1fs: %s",
                due.message.id,
                attempts,
                wait,
                error,
            )
            return True
        await self.parts.fail(bot.tenant_id, due.message.id, error, retry_at=None)
        logger.warning("message %s is a dead letter after %d attempt(s): %s", due.message.id, attempts, error)
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
        push = [name for name, adapter in self.host.registry.channels.items() if adapter.delivery == "push"]
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

    def jobs(self) -> dict[Kind, dict[str, JobFunction]]:
        """The job functions of each queue, by name."""
        return {"turns": {"turn": self.run_turns}, "deliveries": {"deliver": self.deliver, "recover": self.recover}}


class ChannelUnavailable(Exception):
    """A reply's channel is no longer enabled for its bot; it becomes a dead letter at once."""

    retryable = False
