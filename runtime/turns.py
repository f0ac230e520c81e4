"""Running one turn: moderation, the bot's graph on the conversation's thread, the replies, the outcome.

A turn answers one inbound message (or a merged burst of them, see
:mod:`botloom.runtime.bursts`). Its id derives from its first inbound message, so
a turn re-run after its process died has the same id, its replies the same keys
and its tools the same idempotency keys.

**Failures.** A turn that fails for its own reasons (a bug, a plugin's error, the
turn timeout) is the bot's answer: the end user gets the fallback reply and the
message is ``failed``. A turn that fails because PostgreSQL or Redis went away
(:func:`botloom.core.errors.is_transient`) is not: :class:`TurnOutage` is raised,
nothing is answered, the message stays unfinished, and whoever ran it runs it
again (a queued turn job retries with back-off; a REST or web chat request is
answered 503 and retried by its client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botloom.core.definitions import TurnSummary
from botloom.core.domain import Bot, Conversation, StoredMessage
from botloom.core.errors import is_transient
from botloom.core.host import PluginHost
from botloom.core.messages import InboundMessage, OutboundMessage, Refusal
from botloom.core.metrics import TURN_SECONDS, TURNS
from botloom.core.settings import Settings
from botloom.core.statuses import OutboundStatus
from botloom.core.storage.repositories import Store
from botloom.core.storage.repositories.messages import (
    WAITING_SQL,
    store_turn_statement,
    stored_turn,
    waiting_params,
)
from botloom.graphs.registry import GraphRegistry
from botloom.graphs.state import turn_input
from botloom.runtime.checkpointers import (
    CHECKPOINT_BATCH,
    CHECKPOINT_READ,
    CheckpointBatch,
    CheckpointRead,
    batches_writes,
)
from botloom.runtime.handover import Handover, Handovers, paused, with_person
from botloom.runtime.locks import HeldLock
from botloom.runtime.prepared import PREPARED
from botloom.runtime.results import TurnOutage, TurnResult, turn_id_for
from botloom.runtime.state_migration import StateMigrator
from botloom.runtime.turn_context import BotView, TurnContexts, thread_config, thread_id

logger = logging.getLogger(__name__)

Watch = Callable[[], Awaitable[bool]]
"""Asked while a turn's graph runs: ``True`` cancels the turn (the ``interrupt`` burst policy)."""


@dataclass
class Lookahead:
    """What a turn's last statement saw after the turn: its conversation and the inbound messages still pending.

    Saves the turn loop (:mod:`botloom.runtime.bursts`) a round trip to ask again;
    ``pending`` stays ``None`` when the turn did not end with that statement.
    """

    conversation: Conversation | None = None
    pending: list[StoredMessage] | None = None
    released: bool = False
    """The same round trip let the conversation's lock go (nothing waited): the turn loop ends."""


@dataclass
class ReadAhead:
    """What the turn loop read with the conversation's lock, for the first turn it runs (:meth:`Turns.queue_reads`)."""

    view: BotView | None = None
    """The bot's enabled plugins (:meth:`TurnContexts.bot_view`)."""
    checkpoint: CheckpointRead | None = None
    """The conversation's latest checkpoint, when the checkpointer is botloom's PostgreSQL saver."""


class Turns:
    """Runs one turn of a conversation (see the module docstring)."""

    def __init__(
        self,
        *,
        host: PluginHost,
        store: Store,
        graphs: GraphRegistry,
        contexts: TurnContexts,
        migrator: StateMigrator,
        handovers: Handovers,
        settings: Settings,
    ) -> None:
        self.host = host
        self.store = store
        self.graphs = graphs
        self.contexts = contexts
        self.migrator = migrator
        self.handovers = handovers
        self.settings = settings
        self.prepared = PREPARED

    async def queue_reads(self, conn: Any, bot: Bot, conversation_id: str) -> Callable[[], Awaitable[ReadAhead]]:
        """Queue on ``conn`` (the lock's, pipeline mode) what a turn of the conversation reads first; how to get it.

        The bot's plugin settings and the conversation's latest checkpoint: sent with the
        lock, they cost no round trip of their own, and start once the lock is held.
        """
        view = await self.contexts.queue_bot_view(conn, bot)
        checkpoint: CheckpointRead | None = None
        checkpoint_read: Callable[[], Awaitable[None]] | None = None
        if batches_writes(self.graphs.checkpointer):
            checkpoint = CheckpointRead(thread_id(bot.tenant_id, bot.id, conversation_id))
            checkpoint_read = await checkpoint.queue(conn)

        async def read() -> ReadAhead:
            ahead = ReadAhead(view=await view(), checkpoint=checkpoint)
            if checkpoint_read is not None:
                await checkpoint_read()
            return ahead

        return read

    async def run(
        self,
        bot: Bot,
        conversation: Conversation,
        messages: Sequence[StoredMessage],
        *,
        watch: Watch | None = None,
        lookahead: Lookahead | None = None,
        claimed: bool = False,
        ahead: ReadAhead | None = None,
        held: HeldLock | None = None,
    ) -> TurnResult | None:
        """One turn answering ``messages`` (one, or a merged burst); ``None`` if ``watch`` cancelled it.

        ``claimed``: the statement that read ``messages`` already marked them
        ``processing`` (their statuses are those from before it); otherwise this does.

        ``watch`` is a callable returning an awaitable ``bool``, asked while the graph
        runs: ``True`` cancels the turn (nothing of it is checkpointed or stored).
        ``lookahead``, when given, is filled with what the turn's last statement saw
        after it (the conversation and its messages still pending), when it saw it.
        ``ahead``: what was read with the conversation's lock (:meth:`queue_reads`), used
        instead of reading it again. ``held``: the conversation's PostgreSQL lock; the turn's
        last round trip goes on its connection and lets it go when nothing waits
        (``lookahead.released``).
        Raises :class:`TurnOutage` when PostgreSQL or Redis went away meanwhile.
        """
        if with_person(conversation):
            return await self.handovers.hold(bot, conversation, messages)
        tenant, first = bot.tenant_id, messages[0]
        turn = turn_id_for(first.id)
        result = TurnResult(
            conversation_id=conversation.id,
            message_id=first.id,
            turn_id=turn,
            conversation_status=conversation.status,
        )
        began = time.perf_counter()
        rerun = any(m.status == "processing" for m in messages)
        if not claimed:
            for message in messages:
                await self.store.messages.set_status(tenant, message.id, "processing", turn_id=turn)
        inbound = InboundMessage(
            channel=first.channel,
            text="\n".join(m.text for m in messages),
            sender=conversation.user or "",
            received_at=first.created_at,
        )
        moderated, problems = await self.host.moderate(inbound, bot)
        result.errors.extend(f"{p.plugin}: {p.stage} {p.message}" for p in problems)
        texts: list[str]
        handover: Handover | None = None
        batch: CheckpointBatch | None = None
        if isinstance(moderated, Refusal):
            texts = [moderated.reply or bot.settings.fallback_reply]
            result.status, result.intent = "refused", None
            result.errors.append(f"refused: {moderated.reason}")
        else:
            batch = CheckpointBatch() if batches_writes(self.graphs.checkpointer) else None
            invoked = await self._invoke(
                bot,
                conversation,
                turn=turn,
                text=moderated.text,
                rerun=rerun,
                result=result,
                watch=watch,
                batch=batch,
                ahead=ahead,
            )
            if invoked is None:
                return None
            texts, handover = invoked
            if handover is not None:  # the agent desk routes it and words its notice
                handover = await self.handovers.route(bot, conversation, handover)
            if handover is not None and handover.notice:
                texts.append(handover.notice)
        if handover is None:  # checkpoint written, replies stored and messages finished in one transaction
            await self._store_turn(
                bot,
                conversation,
                turn,
                texts=texts,
                messages=messages,
                result=result,
                lookahead=lookahead,
                batch=batch,
                held=held,
            )
        else:
            if batch:  # the pause's checkpoint first, as when the graph wrote it itself
                async with self.store.db.connection() as conn, conn.pipeline():
                    await batch.send(conn)
            await self._store_replies(bot, conversation, turn, texts, result)
            # after the replies, before the messages are finished: a re-run of this turn still stores the notice
            result.conversation_status = await self.handovers.hand_over(bot, conversation, handover)
            outcome = result.outcome()
            for message in messages:
                status = result.status if message is first else "merged"
                await self.store.messages.finish(tenant, message.id, status, turn_id=turn, outcome=outcome)
        await self._report(bot, conversation, turn, result, began)
        return result

    async def _store_turn(  # noqa: PLR0913 - the turn's parts, passed through
        self,
        bot: Bot,
        conversation: Conversation,
        turn: str,
        *,
        texts: list[str],
        messages: Sequence[StoredMessage],
        result: TurnResult,
        lookahead: Lookahead | None,
        batch: CheckpointBatch | None = None,
        held: HeldLock | None = None,
    ) -> None:
        """Moderate the replies, then store them and finish ``messages`` together (one round trip).

        With a ``batch`` (the turn's checkpoint write, held back by the saver), its statements
        go first in the same transaction and the same round trip: the checkpoint and the
        turn's replies commit together. With ``held`` (and a ``lookahead`` to tell), all of it
        goes on the lock's connection, followed by the lock's release unless a message waits,
        after the ``COMMIT``: still one round trip.
        """
        outbound = [await self._moderate_out(bot, conversation, text, result) for text in texts]
        first = messages[0]
        end: dict[str, Any] = {
            "channel": conversation.channel,
            "turn_id": turn,
            "replies": outbound,
            "status": self.reply_status(conversation.channel),
            "finished": [(m.id, result.status if m is first else "merged") for m in messages],
            "outcome": result.outcome(),
        }
        if held is not None:
            replies, after, pending, released = await self._end_on(
                held, bot, conversation, end, batch=batch, lookahead=lookahead
            )
            if lookahead is not None:
                lookahead.released = released
        elif batch:
            async with self.store.db.connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    await batch.send(conn)
                    read = await self.store.messages.queue_store_turn(conn, bot.tenant_id, conversation.id, **end)
                replies, after, pending = await read()
        else:
            replies, after, pending = await self.store.messages.store_turn(bot.tenant_id, conversation.id, **end)
        result.replies.extend(replies)
        if lookahead is not None:
            lookahead.conversation, lookahead.pending = after, pending

    async def _end_on(
        self,
        held: HeldLock,
        bot: Bot,
        conversation: Conversation,
        end: dict[str, Any],
        *,
        batch: CheckpointBatch | None,
        lookahead: Lookahead | None,
    ) -> tuple[list[StoredMessage], Conversation, list[StoredMessage], bool]:
        """The turn's end on the lock's connection, as one query string (one round trip, one send).

        ``BEGIN``, the checkpoint's statements, ``store_turn``, ``COMMIT``, then (with a
        ``lookahead`` to tell) the lock's release unless a message waits. Sent as one string of
        statements with their values bound client-side (psycopg's ``AsyncClientCursor``): in
        pipeline mode psycopg would send, flush and convert each statement on its own, about
        twice the CPU. Each statement is prepared once per connection (``PREPARE``, then
        ``EXECUTE``: :mod:`botloom.runtime.prepared`), so PostgreSQL does not parse and plan it
        every turn. A failure rolls the transaction back (the rest is skipped) and is raised.
        Returns the replies, the conversation, what still waits, and whether the lock went.
        """
        import psycopg

        cur = psycopg.AsyncClientCursor(held.conn)
        statements = [*(batch.take() if batch else []), store_turn_statement(bot.tenant_id, conversation.id, **end)]
        if lookahead is not None:
            statements.append(held.release_unless(WAITING_SQL, waiting_params(bot.tenant_id, conversation.id)))
        for attempt in (1, 2):
            try:
                rows = await self._send_end(cur, statements, release=lookahead is not None)
                break
            except BaseException as exc:
                with contextlib.suppress(Exception):  # an aborted transaction, or a connection already gone
                    await held.conn.rollback()
                await self.prepared.forget(held.conn)
                # the server and this record disagree on what the connection prepared (a statement dropped
                # behind our back, or one we thought gone still there): nothing ran, all is dropped: once more
                if attempt == 1 and isinstance(
                    exc, psycopg.errors.InvalidSqlStatementName | psycopg.errors.DuplicatePreparedStatement
                ):
                    logger.warning("the turn's end on a connection whose prepared statements differ: sent again")
                    continue
                raise
        replies, after, pending = stored_turn(rows[0][0] if rows[0] else None, conversation.id)
        return replies, after, pending, held.went(rows[1]) if lookahead is not None else False

    async def _send_end(self, cur: Any, statements: list[tuple[str, Any]], *, release: bool) -> list[list[Any]]:
        """Send the turn's end (``statements``, the last one the lock's release if ``release``) as one string.

        Returns the rows of the statements that return rows (``store_turn``'s, the release's).
        """
        rendered = [self.prepared.render(cur, sql, params) for sql, params in statements]
        prepares = [part for r in rendered for part in r[:-1]]  # first time on this connection; not transactional
        executes = [r[-1] for r in rendered]
        body = ["BEGIN", *executes, "COMMIT"]
        if release:  # the release goes after the COMMIT
            body = ["BEGIN", *executes[:-1], "COMMIT", executes[-1]]
        rows: list[list[Any]] = []
        await cur.execute(";\n".join([*prepares, *body]))
        while True:
            if cur.description is not None:  # the statements returning rows: store_turn, the release
                rows.append(await cur.fetchall())
            if not cur.nextset():
                break
        return rows

    async def _store_replies(
        self, bot: Bot, conversation: Conversation, turn: str, texts: list[str], result: TurnResult
    ) -> None:
        """Moderate and store the turn's replies (keyed by the turn: a re-run stores nothing twice)."""
        status = self.reply_status(conversation.channel)
        for index, text in enumerate(texts):
            outbound = await self._moderate_out(bot, conversation, text, result)
            stored, _ = await self.store.messages.add_outbound(
                bot.tenant_id,
                conversation.id,
                channel=conversation.channel,
                text=outbound,
                turn_id=turn,
                idempotency_key=f"{turn}:{index:03d}",
                status=status,
            )
            result.replies.append(stored)

    async def _report(self, bot: Bot, conversation: Conversation, turn: str, result: TurnResult, began: float) -> None:
        """Metrics and the ``on_turn_end`` observers."""
        summary = TurnSummary(
            tenant_id=bot.tenant_id,
            bot_id=bot.id,
            conversation_id=conversation.id,
            turn_id=turn,
            channel=conversation.channel,
            intent=result.intent,
            confidence=result.confidence,
            replies=tuple(r.text for r in result.replies),
            escalated=result.escalated,
            errors=tuple(result.errors),
            latency_ms=(time.perf_counter() - began) * 1000,
        )
        TURN_SECONDS.labels(conversation.channel).observe(summary.latency_ms / 1000)
        TURNS.labels(conversation.channel, "escalated" if result.escalated else result.status).inc()
        await self.host.notify_turn_end(summary)

    async def _invoke(  # noqa: PLR0913 - the turn's parts, passed through
        self,
        bot: Bot,
        conversation: Conversation,
        *,
        turn: str,
        text: str,
        rerun: bool,
        result: TurnResult,
        watch: Watch | None = None,
        batch: CheckpointBatch | None = None,
        ahead: ReadAhead | None = None,
    ) -> tuple[list[str], Handover | None] | None:
        """Run the graph for one user text; the reply texts and the handover it paused for; fills ``result``.

        With ``watch``, the turn is cancelled, and ``None`` returned, as soon as it says so.
        With ``batch``, the saver queues the run's checkpoint write there instead of running it
        (the caller writes it with the turn's replies). ``ahead``: the bot's plugins and the
        conversation's checkpoint as read with the lock (the checkpoint is used only when no
        state migration writes the thread before the run).
        """
        config = thread_config(bot, conversation.id)
        try:
            graph = self.graphs.get(bot.graph)
            ctx = await self.contexts.context(bot, conversation, ahead.view if ahead is not None else None)
            state: dict[str, Any] | None = None
            if rerun:  # the process that ran this turn died: did the graph finish before it did?
                snapshot = await graph.aget_state(config)
                if snapshot.values.get("turn_id") == turn and not snapshot.next:
                    state = dict(snapshot.values)
            if state is None:
                version = self.migrator.target(bot)
                unmigrated = conversation.state_version == version  # upgrade() writes nothing
                result.errors.extend(await self.migrator.upgrade(bot, conversation, graph, config))
                extra: dict[str, Any] = {}
                if batch is not None:
                    extra[CHECKPOINT_BATCH] = batch
                if ahead is not None and ahead.checkpoint is not None and unmigrated:
                    extra[CHECKPOINT_READ] = ahead.checkpoint
                run_config = {**config, "configurable": {**config["configurable"], **extra}} if extra else config
                run = graph.ainvoke(turn_input(turn, text, version=version), run_config, context=ctx, durability="exit")
                if watch is None:
                    state = await asyncio.wait_for(run, self.settings.turn_timeout)
                else:
                    state = await self._interruptible(run, watch, conversation.id)
                    if state is None:
                        return None
        except Exception as exc:
            if is_transient(exc):
                logger.warning("turn %s of conversation %s: the database went away: %s", turn, conversation.id, exc)
                raise TurnOutage(f"turn {turn} of conversation {conversation.id}: {type(exc).__name__}: {exc}") from exc
            logger.exception("turn %s of conversation %s failed", turn, conversation.id)
            result.errors.append(f"turn failed: {type(exc).__name__}: {exc}")
            result.status = "failed"
            return [bot.settings.fallback_reply], None
        assert state is not None
        return self._outcome(state, result), paused(state, conversation.id)

    async def _interruptible(
        self, run: Awaitable[dict[str, Any]], watch: Watch, conversation_id: str, poll: float = 0.05
    ) -> dict[str, Any] | None:
        """Run the graph, cancelling it (``None``) when ``watch()`` says so."""
        task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(run)
        deadline = time.monotonic() + self.settings.turn_timeout
        try:
            while not task.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the turn took longer than {self.settings.turn_timeout:g}s")
                done, _ = await asyncio.wait({task}, timeout=poll)
                if not done and await watch():
                    task.cancel()
                    logger.info("turn of conversation %s interrupted by a newer message", conversation_id)
                    return None
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @staticmethod
    def _outcome(state: Mapping[str, Any], result: TurnResult) -> list[str]:
        result.intent = state.get("intent")
        result.confidence = float(state.get("confidence") or 0.0)
        result.errors.extend(state.get("errors") or [])
        return [t for t in state.get("replies") or [] if t]

    async def _moderate_out(self, bot: Bot, conversation: Conversation, text: str, result: TurnResult) -> str:
        outbound = OutboundMessage(
            channel=conversation.channel, text=text, recipient=conversation.user or "", conversation_id=conversation.id
        )
        moderated, problems = await self.host.moderate(outbound, bot)
        result.errors.extend(f"{p.plugin}: {p.stage} {p.message}" for p in problems)
        if isinstance(moderated, Refusal):
            result.errors.append(f"reply refused: {moderated.reason}")
            return moderated.reply or bot.settings.fallback_reply
        return moderated.text

    def reply_status(self, channel: str) -> OutboundStatus:
        """The status a turn's reply is stored with: ``sent`` on a response or socket channel.

        Those (REST and web chat) hand the replies to the caller of the turn; push
        channels keep them ``pending`` until a delivery job sends them.
        """
        adapter = self.host.registry.channels.get(channel)
        return "sent" if adapter is not None and adapter.kind != "push" else "pending"


__all__ = ["Lookahead", "ReadAhead", "TurnOutage", "TurnResult", "Turns", "Watch", "turn_id_for"]
