"""The one inbound path: every channel's messages are stored and turned into turns here.

Whatever the channel (DESIGN.md, "The path of one turn"):

1. :meth:`ChannelBindings.find` looks up the bot, its enabled channel and its
   config of it, in one query, and validates the config once (the channel gets
   its plugin's config Struct);
2. :meth:`Inbound.read` has the channel verify and parse the request; a forged
   or malformed request, or a message with an identifier botloom cannot keep
   (a NUL character), is refused with a 4xx naming the problem, and nothing is stored;
3. :meth:`Inbound.receive` stores each message with its idempotency key (a retried
   delivery finds the stored message);
4. its turn runs: queued as a ``turn`` job for a push channel (:meth:`Inbound.accept`,
   before the provider gets its answer), or at once for a response or socket channel
   (:meth:`Inbound.answer`), whose caller gets the replies.

The server's routes and the polling jobs only adapt their transport to this
path; replies of push channels leave through :mod:`botloom.runtime.delivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from botloom.core.channels import (
    ChannelAdapter,
    ChannelConversation,
    ChannelHost,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    HistoryMessage,
    TurnAnswer,
    TurnReply,
)
from botloom.core.domain import Bot, Conversation, PluginSetting, StoredMessage
from botloom.core.errors import is_transient
from botloom.core.host import PluginHost
from botloom.core.messages import InboundMessage, OutboundMessage
from botloom.core.statuses import UNFINISHED_INBOUND
from botloom.core.storage.repositories import ChannelRouteRepository, Store
from botloom.core.storage.repositories.inbound import INBOX_CHANNEL, InboxRow
from botloom.runtime.queue import JobFunction, JobQueue
from botloom.runtime.results import TurnResult
from botloom.runtime.runner import TurnRunner

if TYPE_CHECKING:
    from botloom.runtime.delivery import Deliveries

logger = logging.getLogger(__name__)
T = TypeVar("T")

UNFINISHED = frozenset(UNFINISHED_INBOUND)
"""Inbound statuses of a message whose turn has not finished."""
HOLD_GRACE = 2.0
"""Seconds past a channel's response window before the queue takes over a turn the webhook was running."""
HISTORY_LIMIT = 200
OUTAGE_FIRST_WAIT = 0.25
"""Seconds a turn job waits before running again after PostgreSQL or Redis went away (then twice as long)."""
OUTAGE_MAX_WAIT = 2.0
"""The longest wait between two runs of a turn job during an outage: the turn runs within this of the return."""
OUTAGE_PATIENCE = 300.0
"""Seconds a turn job keeps running again during an outage before it fails (and the queue retries it)."""
INBOX_POLL = 1.0
"""Seconds between two looks at the webhook inbox without a notification (rows of a worker that died mid-ingest,
a notification lost while the listening connection was down)."""
INBOX_BATCH = 50
"""Inbox rows one ingest takes (and holds locked) at a time."""


@dataclass(frozen=True)
class ChannelBinding:
    """A bot's enabled channel and its config of it, validated: what every inbound request starts from."""

    bot: Bot
    adapter: ChannelAdapter[Any]
    plugin: str
    """The plugin that registered the channel (whose config the bot enabled)."""
    config: Any
    """The plugin's config Struct, or ``None`` when the plugin takes no config."""
    ref: str
    """The bot as the caller named it (an id or ``tenant-slug/bot-slug``)."""


class ChannelBindings:
    """The one lookup of "this bot's enabled channel and its config" (webhooks, chat, sockets, polls, delivery)."""

    def __init__(self, host: PluginHost, routes: ChannelRouteRepository) -> None:
        self.host = host
        self.routes = routes
        self._typed: dict[tuple[str, str], tuple[PluginSetting, Any]] = {}

    def channel(self, name: str) -> tuple[ChannelAdapter[Any], str] | None:
        """The registered channel ``name`` and the plugin that owns it."""
        adapter = self.host.registry.channels.get(name)
        owner = self.host.registry.owner("channel", name)
        return None if adapter is None or owner is None else (adapter, owner)

    async def find(
        self, ref: str, name: str, *, max_age: float = 0.0, visible: Callable[[str], bool] | None = None
    ) -> ChannelBinding:
        """The bot ``ref`` names with its enabled channel ``name``, in one query (or from the last ``max_age`` s).

        Raises :class:`ChannelRejected`: 404 for no such bot or channel (or a bot
        whose tenant ``visible`` does not accept), 403 when the bot has not enabled
        the channel or its stored config no longer fits the plugin's schema.
        """
        found = self.channel(name)
        if found is None:
            raise ChannelRejected(404, f"no channel {name!r}")
        adapter, owner = found
        route = await self.routes.find(ref, owner, max_age=max_age)
        if route is None or (visible is not None and not visible(route[0].tenant_id)):
            raise ChannelRejected(404, f"no bot {ref!r}")
        bot, setting = route
        if setting is None or not setting.enabled:
            raise ChannelRejected(403, f"the {name} channel is not enabled for this bot")
        return ChannelBinding(bot=bot, adapter=adapter, plugin=owner, config=self._config(ref, setting), ref=ref)

    async def of_bot(self, bot: Bot, name: str) -> ChannelBinding | None:
        """The bot's enabled channel ``name``, or ``None`` (not installed, not enabled, config unusable)."""
        try:
            binding = await self.find(bot.id, name)
        except ChannelRejected:
            return None
        return binding if binding.bot.tenant_id == bot.tenant_id else None

    def _config(self, ref: str, setting: PluginSetting) -> Any:
        """The setting's config as the plugin's Struct: validated once per stored version the process reads."""
        key = (ref, setting.plugin)
        cached = self._typed.get(key)
        if cached is not None and cached[0] is setting:
            return cached[1]
        schema = self.host.config_schema(setting.plugin)
        try:
            typed = None if schema is None else msgspec.convert(dict(setting.config), schema, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ChannelRejected(
                403, f"the bot's config of plugin {setting.plugin!r} is not valid ({exc}): store it again"
            ) from None
        if len(self._typed) >= 10_000:
            self._typed.clear()
        self._typed[key] = (setting, typed)
        return typed


def channel_call(adapter: ChannelAdapter[Any], method: Callable[..., T], *args: Any) -> T:
    """Call one of a channel's methods on a request, with its failures as the request's 4xx.

    :class:`ChannelRejected` is the channel's own answer; a ``ValueError`` (an
    ``InboundMessage`` refusing an identifier it cannot keep, a value the channel
    could not read) is a 400 naming the problem; any other exception is a 400
    too, logged as the channel's bug.
    """
    try:
        return method(*args)
    except ChannelRejected:
        raise
    except ValueError as exc:
        raise ChannelRejected(400, f"invalid {adapter.name} message: {exc}") from None
    except Exception as exc:  # a channel's bug on a strange request is still the request's 4xx
        logger.exception("the %s channel failed on a request", adapter.name)
        raise ChannelRejected(400, f"the {adapter.name} channel could not read this request") from exc


def turn_answer(result: TurnResult) -> TurnAnswer:
    """What a response or socket channel renders of a turn's result."""
    return TurnAnswer(
        conversation_id=result.conversation_id,
        message_id=result.message_id,
        replies=tuple(TurnReply(id=r.id, text=r.text) for r in result.replies),
        intent=result.intent,
        confidence=result.confidence,
        escalated=result.escalated,
        duplicate=result.duplicate,
        status=result.status,
    )


class Inbound:
    """Stores every channel's inbound messages and turns them into turns (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        host: PluginHost,
        runner: TurnRunner,
        queue: JobQueue,
        deliveries: Deliveries,
        bindings: ChannelBindings,
        inline_turns: int = 4,
        inbox: bool = False,
    ) -> None:
        self.store = store
        self.inbox = inbox
        """Whether a push channel's webhook acknowledges after storing its messages in the inbox alone (one row each;
        the workers' ingest stores conversation, message and turn job), unless it answers in its response."""
        self.host = host
        self.runner = runner
        self.queue = queue
        self.deliveries = deliveries
        self.bindings = bindings
        self._inline = asyncio.Semaphore(inline_turns)
        self._background: set[asyncio.Task[Any]] = set()

    # -- reading a request -----------------------------------------------------------

    def read(self, binding: ChannelBinding, request: ChannelRequest) -> list[InboundMessage]:
        """Have the channel verify and parse ``request``; :class:`ChannelRejected` (a 4xx) when it refuses."""
        adapter, config = binding.adapter, binding.config
        channel_call(adapter, adapter.verify, request, config)
        return channel_call(adapter, adapter.parse, request, config)

    # -- storing: every channel's messages come through here -------------------------

    async def receive(
        self,
        bot: Bot,
        message: InboundMessage,
        *,
        conversation_id: str | None = None,
        new: bool = False,
    ) -> tuple[Conversation, StoredMessage, bool]:
        """Store an inbound message; returns its conversation, the stored message, and whether it is new.

        ``new`` starts a conversation whose key is its own id (REST and web chat);
        ``conversation_id`` continues one of the bot's conversations; otherwise the
        channel's conversation key (or the sender) finds or starts one, in the same
        statement that stores the message. A message whose idempotency key was seen
        before is not stored again. Raises ``LookupError`` for a conversation the
        bot does not have.
        """
        version = self.runner.state_version(bot)
        if new or conversation_id is not None:
            if new:
                conversation: Conversation | None = await self.store.conversations.create(
                    bot.tenant_id, bot.id, message.channel, message.sender, state_version=version
                )
            else:
                assert conversation_id is not None
                conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
            if conversation is None or conversation.bot_id != bot.id:
                raise LookupError(f"conversation {conversation_id} not found")
            stored, fresh = await self.store.messages.add_inbound(bot.tenant_id, bot.id, conversation.id, message)
            return conversation, stored, fresh
        return await self.store.messages.receive(bot.tenant_id, bot.id, message, state_version=version)

    # -- push channels: stored, then queued ------------------------------------------

    async def accept(self, bot: Bot, message: InboundMessage, *, hold: float = 0.0) -> tuple[StoredMessage, bool]:
        """Store an inbound message and queue its turn; returns the stored message and whether it is new.

        ``hold`` delays the queued turn while the webhook tries to answer in its
        response. On the PostgreSQL queue a new message and its turn's job are
        stored in one statement (``store.inbound``): both commit or
        neither. A retried message whose turn has not finished is queued again
        (a no-op while its job waits), so a crash between storing and queueing
        (Redis queue) loses nothing.
        """
        delay = hold + HOLD_GRACE if hold else 0.0
        # on PostgreSQL, a new message and its turn's job in one statement (one round trip, one commit)
        job = await self.queue.job_row(
            "turns", "turn", key="", delay=delay, tenant_id=bot.tenant_id, bot_id=bot.id, conversation_id=""
        )
        if job is not None:
            version = self.runner.state_version(bot)
            done = await self.store.inbound.receive_and_queue(
                bot.tenant_id, bot.id, message, state_version=version, job=job
            )
            if done is not None:
                stored, queued = done
                if not queued:  # pragma: no cover - a new message's id is a new job key
                    await self.queue_turn(bot, stored.conversation_id, stored.id, delay=delay)
                return stored, True
        _, stored, new = await self.receive(bot, message)  # a retried delivery (or the Redis queue)
        if stored.status in UNFINISHED:
            await self.queue_turn(bot, stored.conversation_id, stored.id, delay=delay)
        return stored, new

    async def queue_turn(self, bot: Bot, conversation_id: str, key: str, *, delay: float = 0.0) -> None:
        """Queue a ``turn`` job for the conversation (``key`` tells jobs apart: a job already waiting is kept)."""
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
        """Job: run the conversation's pending turns, then deliver their replies; how many turns ran.

        A run that fails because PostgreSQL or Redis went away (:func:`~botloom.core.errors.is_transient`)
        is run again in the job itself, backing off from :data:`OUTAGE_FIRST_WAIT` to
        :data:`OUTAGE_MAX_WAIT` seconds, for up to :data:`OUTAGE_PATIENCE` seconds: its messages
        stay unanswered meanwhile (never the fallback), and it needs nothing of the queue to
        run again (when Redis restarts, the queue cannot record a failed job's retry). Past
        that, or for any other error, the job fails and the queue retries it with back-off.
        """
        wait, deadline = OUTAGE_FIRST_WAIT, time.monotonic() + OUTAGE_PATIENCE
        while True:
            try:
                bot = await self.store.bots.get(tenant_id, bot_id)
                if bot is None:
                    return 0
                results = await self.runner.process(bot, conversation_id)
                await self.deliveries.deliver(tenant_id, conversation_id, bot=bot)
                return len(results)
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() + wait > deadline:
                    raise
                logger.warning(
                    "turns of conversation %s wait for the database or Redis (%s: %s); again in %gs",
                    conversation_id,
                    type(exc).__name__,
                    exc,
                    wait,
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, OUTAGE_MAX_WAIT)

    async def webhook(self, binding: ChannelBinding, request: ChannelRequest) -> ChannelResponse:
        """A push channel's request: verify, parse, record a status report, store and queue; the channel's answer.

        ``binding`` may be up to a second old: a request it refuses as forged (403)
        is checked again with the stored config, so a rotated token is never refused.
        """
        try:
            messages = self.read(binding, request)
        except ChannelRejected as exc:
            if exc.status != 403:
                raise
            fresh = await self.bindings.find(binding.ref, binding.adapter.name)
            if fresh.config == binding.config:
                raise
            binding = fresh
            messages = self.read(binding, request)
        adapter, config, bot = binding.adapter, binding.config, binding.bot
        wait, report = 0.0, None
        if adapter.capabilities.delivery_reports:
            report = channel_call(adapter, adapter.delivery_report, request, config)
        if adapter.capabilities.answers_in_response:
            wait = max(0.0, float(channel_call(adapter, adapter.response_window, request, config)))
        if report is not None and not await self.deliveries.record(bot, adapter.name, report):
            logger.info("a %s status report named no message of bot %s", adapter.name, bot.id)
        if self.inbox and not wait:  # one durable row each; the workers' ingest does the rest (self.ingest)
            for message in messages:
                await self.store.inbound.to_inbox(bot.tenant_id, bot.id, message)
            return channel_call(adapter, adapter.acknowledge, request, None, config)
        stored = [(await self.accept(bot, message, hold=wait))[0] for message in messages]
        replies = await self.answer_in_response(binding, stored, wait) if wait else []
        return channel_call(adapter, adapter.acknowledge, request, replies or None, config)

    # -- the webhook inbox: stored by the acknowledgement, ingested by the workers ----------

    async def ingest(self, row: InboxRow, bots: dict[str, Bot | None] | None = None) -> bool:
        """Turn one inbox row into its conversation, message and turn job, as :meth:`accept` stores a message.

        Idempotent (the message's idempotency key, its job's key): an ingest done
        before, wholly or in part, stores nothing twice. The message keeps the time it
        was received (the burst policies time from it). ``True``: the row is done.
        ``bots``: the bots read already in this batch, by id (one read per bot a batch).
        """
        bots = {} if bots is None else bots
        if row.bot_id not in bots:
            bots[row.bot_id] = await self.store.bots.get(row.tenant_id, row.bot_id)
        bot = bots[row.bot_id]
        if bot is None or bot.tenant_id != row.tenant_id:  # a deleted bot (its inbox rows go with it)
            return True
        await self.accept(bot, row.message)
        return True

    async def ingest_inbox(self) -> int:
        """Ingest every message waiting in the webhook inbox (other workers take other rows); how many rows."""
        total = 0
        while True:
            bots: dict[str, Bot | None] = {}
            taken = await self.store.inbound.ingest_inbox(partial(self.ingest, bots=bots), limit=INBOX_BATCH)
            total += taken
            if taken < INBOX_BATCH:
                return total

    @asynccontextmanager
    async def ingesting(self, *, every: float = INBOX_POLL, grace: float = 5.0) -> AsyncIterator[None]:
        """Ingest the webhook inbox while the block runs: at each notification, and every ``every`` seconds.

        Every worker process runs this, whatever its own ``inbox`` setting (a server
        with the inbox on may run beside workers without it). At the block's end the
        ingest under way may finish for ``grace`` seconds; a cancelled one rolls back,
        leaving its rows to the next worker.
        """
        stop = asyncio.Event()
        task = asyncio.create_task(self._ingest_loop(every, stop), name="botloom-inbox")
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), grace)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _ingest_loop(self, every: float, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake), name="botloom-inbox-listen")
        down = False  # an outage is logged once, when it begins
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    await self.ingest_inbox()
                    down = False
                except Exception as exc:  # an outage: the rows stay, and the next look takes them
                    if not is_transient(exc):
                        logger.exception("the webhook inbox's ingest failed; it tries again")
                    elif not down:
                        logger.warning("the webhook inbox waits for the database (%s)", type(exc).__name__)
                    down = down or is_transient(exc)
                waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waits, timeout=every, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, wake: asyncio.Event) -> None:
        """Set ``wake`` at each inbox notification (a connection of its own, opened again when it is lost)."""
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.store.db.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {INBOX_CHANNEL}")
                    wake.set()  # rows stored before the LISTEN
                    async for _ in conn.notifies():
                        wake.set()
            except Exception as exc:  # noqa: BLE001 - the polling goes on meanwhile
                logger.debug("the webhook inbox's listener reconnects (%s)", type(exc).__name__)
            await asyncio.sleep(INBOX_POLL)

    async def answer_in_response(
        self, binding: ChannelBinding, inbound: list[StoredMessage], wait: float
    ) -> list[OutboundMessage]:
        """Run the turns of ``inbound`` now; their replies, claimed from the queue, split for the response.

        Returns nothing when the turns take longer than ``wait`` seconds (they go
        on, and the queue delivers their replies) or when too many turns run in
        requests already (the queue runs this one at once). A retried request gets
        the replies its first answer carried.
        """
        if not inbound:
            return []
        bot = binding.bot
        conversation_id = inbound[0].conversation_id
        if self._inline.locked():
            await self.queue_turn(bot, conversation_id, f"{inbound[0].id}:now")
            return []
        late = asyncio.Event()
        task = asyncio.create_task(self._inline_turn(bot, conversation_id, late))
        self._background.add(task)
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=wait)
        if not done or task.cancelled() or task.exception() is not None:
            late.set()  # the queue's turn job (held back until the window closed) takes over
            return []
        deliveries = self.deliveries
        replies = await deliveries.parts.claim_for_response(bot.tenant_id, [m.id for m in inbound])
        conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
        if conversation is None:
            return []
        reply_to = dict(inbound[-1].metadata)
        return [
            part
            for reply in replies
            for part in deliveries.parts_of(
                binding.adapter, binding.config, deliveries.outbound(bot, conversation, reply, reply_to), reply.id
            )
        ]

    async def _inline_turn(self, bot: Bot, conversation_id: str, late: asyncio.Event) -> None:
        async with self._inline:
            await self.runner.process(bot, conversation_id)
        if late.is_set():
            await self.deliveries.schedule(bot.tenant_id, conversation_id, trigger=f"late-{uuid.uuid4().hex[:12]}")

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
        error = None if task.cancelled() else task.exception()
        if error is not None and is_transient(error):
            logger.warning("a turn run for a webhook met an outage (%s); the queue runs it again", error)
        elif error is not None:
            logger.error("a turn run for a webhook failed; the queue runs it again", exc_info=error)

    # -- response and socket channels: stored, then run now ---------------------------

    async def answer(
        self, bot: Bot, message: InboundMessage, *, conversation_id: str | None = None, new: bool = False
    ) -> TurnResult:
        """Store a message and run its turn now; a duplicate gets the replies of its first delivery.

        With the ``reject`` burst policy, a message that arrives while a turn of
        its conversation runs gets the bot's busy reply instead. Raises
        ``LookupError`` for a conversation the bot does not have.
        """
        conversation, stored, fresh = await self.receive(bot, message, conversation_id=conversation_id, new=new)
        if fresh and bot.settings.burst_policy == "reject":
            return await self.runner.run_or_reject(bot, conversation, stored)
        ran = await self.runner.process(bot, conversation.id, wait=True)
        # the turn that answered this message is in hand unless it merged it or ran elsewhere
        own = next((r for r in ran if r.message_id == stored.id), None)
        result = own if own is not None else await self.runner.result_of(bot, stored.id)
        result.duplicate = not fresh
        return result

    def channel_host(self, binding: ChannelBinding) -> ChannelHost:
        """What a response or socket channel may ask of the host while it serves ``binding``'s bot."""
        return _Host(self, binding)

    async def respond(self, binding: ChannelBinding, request: ChannelRequest) -> ChannelResponse:
        """A response channel's request: verify, parse, run each message's turn now, render the answers."""
        messages = self.read(binding, request)
        host = self.channel_host(binding)
        answers = [await host.answer(message) for message in messages]
        return channel_call(binding.adapter, binding.adapter.render, request, answers, binding.config)

    def jobs(self) -> dict[str, JobFunction]:
        """The job functions of the turns queue, by name."""
        return {"turn": self.run_turns}


class _Host(ChannelHost):
    """The host as one response or socket channel's request sees it."""

    def __init__(self, inbound: Inbound, binding: ChannelBinding) -> None:
        self.inbound = inbound
        self.binding = binding
        self.bot = binding.bot

    async def open_conversation(self, conversation_id: str | None, user: str) -> ChannelConversation:
        """The bot's conversation ``conversation_id`` on this channel with its history, or a new one."""
        store, bot, channel = self.inbound.store, self.bot, self.binding.adapter.name
        conversation = None
        if conversation_id:
            conversation = await store.conversations.get(bot.tenant_id, conversation_id)
            if conversation is not None and (conversation.bot_id != bot.id or conversation.channel != channel):
                conversation = None
        if conversation is None:
            version = self.inbound.runner.state_version(bot)
            conversation = await store.conversations.create(bot.tenant_id, bot.id, channel, user, state_version=version)
            return ChannelConversation(id=conversation.id)
        history = await store.messages.list_all(bot.tenant_id, conversation.id, limit=HISTORY_LIMIT)
        return ChannelConversation(
            id=conversation.id,
            history=tuple(
                HistoryMessage(
                    role="user" if m.direction == "inbound" else "bot", text=m.text, id=m.idempotency_key or m.id
                )
                for m in history
            ),
        )

    async def answer(self, message: InboundMessage) -> TurnAnswer:
        """Store the message and run its turn now (see :meth:`ChannelHost.answer`)."""
        adapter = self.binding.adapter
        if message.channel != adapter.name:
            message = msgspec.structs.replace(message, channel=adapter.name)
        by_id = adapter.conversations == "id"
        conversation_id = message.conversation_key if by_id else None
        try:
            result = await self.inbound.answer(
                self.bot, message, conversation_id=conversation_id, new=by_id and conversation_id is None
            )
        except LookupError:
            raise ChannelRejected(404, f"no conversation {conversation_id!r} for this bot") from None
        for reply in result.replies:  # handed to the caller: delivered
            if reply.status == "pending":
                await self.inbound.store.messages.set_status(self.bot.tenant_id, reply.id, "sent")
        return turn_answer(result)


__all__ = ["ChannelBinding", "ChannelBindings", "Inbound", "channel_call", "turn_answer"]
