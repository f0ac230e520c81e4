"""The turn runner: from a stored inbound message to stored replies, one turn at a time.

The path of a turn (see ``docs/architecture.md``):

1. the one inbound path (:mod:`botloom.runtime.inbound`) stores the inbound
   message with its idempotency key; a retried delivery finds the stored one.
2. :meth:`TurnRunner.process` takes the conversation's lock and runs every
   pending message of the conversation in arrival order, so turns of one
   conversation never overlap, whichever process received them.
3. Each turn invokes the bot's graph on the conversation's thread and stores
   the replies (keyed by the turn, so a re-run stores nothing twice); the
   channel layer delivers them.

A turn's id is derived from its inbound message, so a turn re-run after its
process died has the same id, its replies the same keys, and its tools the same
idempotency keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.types import Command, Overwrite

from botloom.core.definitions import TurnSummary
from botloom.core.domain import Bot, Conversation, StoredMessage, UsageEvent
from botloom.core.host import PluginHost
from botloom.core.messages import InboundMessage, OutboundMessage, Refusal, utcnow
from botloom.core.metrics import TURN_SECONDS, TURNS
from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.graphs.context import SearchFn, TurnContext
from botloom.graphs.engines import Engine
from botloom.graphs.registry import GraphRegistry
from botloom.graphs.state import turn_input
from botloom.runtime.locks import ConversationLocks
from botloom.runtime.saver import REDACT_FLAG

logger = logging.getLogger(__name__)

TURN_NAMESPACE = uuid.UUID("6f0b7a52-4b8e-4a39-9a57-3c1f7f0e2b11")


def thread_id(tenant_id: str, bot_id: str, conversation_id: str) -> str:
    """The LangGraph thread of a conversation."""
    return f"{tenant_id}:{bot_id}:{conversation_id}"


def _replacing(graph: Any, values: dict[str, Any]) -> dict[str, Any]:
    """An update that replaces the graph's channels with ``values`` (bypassing reducers)."""
    channels = graph.channels
    return {
        key: Overwrite(value) if isinstance(channels[key], BinaryOperatorAggregate) else value
        for key, value in values.items()
        if key in channels
    }


def turn_id_for(message_id: str) -> str:
    """The id of the turn that answers the inbound message ``message_id`` (stable across re-runs)."""
    return str(uuid.uuid5(TURN_NAMESPACE, message_id))


@dataclass
class TurnResult:
    """What a turn did: the replies stored for delivery and how the turn ended."""

    conversation_id: str
    message_id: str | None
    turn_id: str | None
    replies: list[StoredMessage] = field(default_factory=list)
    intent: str | None = None
    confidence: float = 0.0
    escalated: bool = False
    duplicate: bool = False
    errors: list[str] = field(default_factory=list)
    status: str = "answered"
    """``answered``, ``refused``, ``for_agent`` (the conversation is with a person), ``failed``."""


@dataclass(frozen=True)
class BotView:
    """What a bot enabled: its plugins' configs, and the tools and intents they bring."""

    configs: Mapping[str, Mapping[str, Any]]
    tools: Mapping[str, Any]
    intents: Mapping[str, Any]


class TurnRunner:
    """Runs turns for every bot of the deployment (see the module docstring)."""

    def __init__(
        self,
        *,
        host: PluginHost,
        store: Store,
        graphs: GraphRegistry,
        engine: Engine,
        locks: ConversationLocks,
        settings: Settings,
        knowledge: Any | None = None,
    ) -> None:
        self.host = host
        self.store = store
        self.graphs = graphs
        self.engine = engine
        self.locks = locks
        self.settings = settings
        self.knowledge = knowledge

    # -- what a bot sees ---------------------------------------------------------

    @staticmethod
    def thread_config(bot: Bot, conversation_id: str) -> dict[str, Any]:
        """The LangGraph config of a conversation's thread (with the bot's redaction flag)."""
        configurable: dict[str, Any] = {"thread_id": thread_id(bot.tenant_id, bot.id, conversation_id)}
        if bot.settings.redact_personal_data:
            configurable[REDACT_FLAG] = True
        return {"configurable": configurable}

    async def bot_view(self, bot: Bot) -> BotView:
        """The bot's enabled, installed plugins with their configs and definitions."""
        settings = await self.store.plugin_settings.list_all(bot.tenant_id, bot.id)
        configs = {s.plugin: s.config for s in settings if s.enabled and s.plugin in self.host.infos}
        return BotView(
            configs=configs,
            tools=self.host.owned("tool", configs),
            intents=self.host.owned("intent", configs),
        )

    def _search(self, bot: Bot) -> SearchFn | None:
        if self.knowledge is None:
            return None
        knowledge = self.knowledge
        threshold = bot.settings.knowledge_threshold or None

        async def search(query: str, limit: int) -> list[Any]:
            result: list[Any] = await knowledge.search(bot.tenant_id, bot.id, query, limit=limit, threshold=threshold)
            return result

        return search

    async def context(self, bot: Bot, conversation: Conversation, view: BotView | None = None) -> TurnContext:
        """The runtime context of a turn of ``conversation``."""
        view = view or await self.bot_view(bot)
        return TurnContext(
            tenant_id=bot.tenant_id,
            bot=bot,
            conversation_id=conversation.id,
            channel=conversation.channel,
            engine=self.engine,
            tools=view.tools,
            tool_owners={name: self.host.registry.owner("tool", name) or "" for name in view.tools},
            intents=view.intents,
            plugin_configs=view.configs,
            search=self._search(bot),
            passages=int(view.configs.get("knowledge", {}).get("passages", 3)),
            record_usage=self._record_usage(conversation),
            tool_timeout=self.settings.tool_timeout,
        )

    def _record_usage(self, conversation: Conversation) -> Any:
        async def record(event: UsageEvent) -> None:
            await self.store.usage.record(
                msgspec.structs.replace(event, bot_id=conversation.bot_id, conversation_id=conversation.id)
            )

        return record

    # -- the path of a turn ------------------------------------------------------

    def state_version(self, bot: Bot) -> int:
        """The version of the state the bot's graph checkpoints (what a new conversation starts with)."""
        definition = self.host.registry.graphs.get(bot.graph)
        return definition.state_version if definition is not None else 1

    async def process(self, bot: Bot, conversation_id: str) -> list[TurnResult]:
        """Run the conversation's pending messages in order, holding its lock, as its burst policy says.

        ``enqueue``: each message is its own turn. ``merge``: messages within the
        bot's burst window of each other (and all that waited for the lock) are one
        turn. ``interrupt``: a message arriving while a turn runs cancels that turn
        (nothing of it is checkpointed) and one new turn answers every pending
        message. ``reject``: see :meth:`run_or_reject`; here it behaves like ``enqueue``.
        """
        async with self.locks.hold(conversation_id):
            return await self._process_locked(bot, conversation_id)

    async def _process_locked(self, bot: Bot, conversation_id: str, *, only: str | None = None) -> list[TurnResult]:
        """:meth:`process`'s work, with the lock held; ``only`` restricts it to one message."""
        policy = bot.settings.burst_policy
        results: list[TurnResult] = []
        while True:
            pending = await self.store.messages.pending_inbound(bot.tenant_id, conversation_id)
            if only is not None:
                pending = [m for m in pending if m.id == only]
            if not pending:
                break
            if policy == "merge":
                pending = await self._settle(bot, conversation_id, pending)
            batch = pending if policy in ("merge", "interrupt") else pending[:1]
            conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
            if conversation is None:
                break
            result = await self._run(bot, conversation, batch, watch=policy == "interrupt")
            if result is not None:
                results.append(result)
        return results

    async def _settle(self, bot: Bot, conversation_id: str, pending: list[StoredMessage]) -> list[StoredMessage]:
        """Wait until no message arrived for the burst window (at most five windows), then return all pending."""
        window = bot.settings.burst_window_ms / 1000
        deadline = time.monotonic() + 5 * window
        while window > 0 and time.monotonic() < deadline:
            newest = max(m.created_at for m in pending)
            quiet = window - (utcnow() - newest).total_seconds()
            if quiet <= 0:
                break
            await asyncio.sleep(min(quiet, deadline - time.monotonic()))
            pending = await self.store.messages.pending_inbound(bot.tenant_id, conversation_id)
        return pending

    async def run_or_reject(self, bot: Bot, conversation: Conversation, message: StoredMessage) -> TurnResult:
        """``reject`` policy: run the message if no turn of its conversation runs, else answer busy.

        :meth:`botloom.runtime.inbound.Inbound.answer` calls this for a new message of a ``reject`` bot.
        """
        async with self.locks.try_hold(conversation.id) as free:
            if free:
                await self._process_locked(bot, conversation.id, only=message.id)
                return await self.result_of(bot, message.id)
            if not await self.store.messages.claim(bot.tenant_id, message.id, "rejected", expected=["received"]):
                return await self.result_of(bot, message.id)
            turn = turn_id_for(message.id)
            reply, _ = await self.store.messages.add_outbound(
                bot.tenant_id,
                conversation.id,
                channel=conversation.channel,
                text=bot.settings.busy_reply,
                turn_id=turn,
                idempotency_key=f"{turn}:000",
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
            escalated=bool(outcome.get("escalated")),
            errors=list(outcome.get("errors") or []),
            status=message.status,
        )

    async def _run(
        self, bot: Bot, conversation: Conversation, messages: list[StoredMessage], *, watch: bool = False
    ) -> TurnResult | None:
        """One turn answering ``messages`` (one, or a merged burst); ``None`` if a newer message interrupted it."""
        tenant = bot.tenant_id
        first = messages[0]
        turn = turn_id_for(first.id)
        result = TurnResult(conversation_id=conversation.id, message_id=first.id, turn_id=turn)
        if conversation.status == "escalated":
            for message in messages:
                await self.store.messages.finish(
                    tenant, message.id, "for_agent", turn_id=None, outcome={"escalated": True}
                )
            result.status, result.escalated = "for_agent", True
            return result
        began = time.perf_counter()
        rerun = any(m.status == "processing" for m in messages)
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
        if isinstance(moderated, Refusal):
            texts = [moderated.reply or bot.settings.fallback_reply]
            result.status, result.intent = "refused", None
            result.errors.append(f"refused: {moderated.reason}")
        else:
            watched = messages[-1].id if watch else None
            invoked = await self._invoke(
                bot, conversation, turn=turn, text=moderated.text, rerun=rerun, result=result, watched=watched
            )
            if invoked is None:
                return None
            texts = invoked
        for index, text in enumerate(texts):
            outbound = await self._moderate_out(bot, conversation, text, result)
            stored, _ = await self.store.messages.add_outbound(
                tenant,
                conversation.id,
                channel=conversation.channel,
                text=outbound,
                turn_id=turn,
                idempotency_key=f"{turn}:{index:03d}",
                status=self._reply_status(conversation.channel),
            )
            result.replies.append(stored)
        if result.escalated:
            await self.store.conversations.set_status(tenant, conversation.id, "escalated")
        outcome = {
            "intent": result.intent,
            "confidence": result.confidence,
            "escalated": result.escalated,
            "errors": result.errors,
        }
        for message in messages:
            status = result.status if message is first else "merged"
            await self.store.messages.finish(tenant, message.id, status, turn_id=turn, outcome=outcome)
        summary = TurnSummary(
            tenant_id=tenant,
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
        return result

    async def _invoke(
        self,
        bot: Bot,
        conversation: Conversation,
        *,
        turn: str,
        text: str,
        rerun: bool,
        result: TurnResult,
        watched: str | None = None,
    ) -> list[str] | None:
        """Run the graph for one user text; returns the reply texts and fills ``result``.

        With ``watched`` (a message id), the turn is cancelled, and ``None``
        returned, as soon as a newer message of the conversation arrives.
        """
        config = self.thread_config(bot, conversation.id)
        try:
            graph = self.graphs.get(bot.graph)
            ctx = await self.context(bot, conversation)
            state: dict[str, Any] | None = None
            if rerun:  # the process that ran this turn died: did the graph finish before it did?
                snapshot = await graph.aget_state(config)
                if snapshot.values.get("turn_id") == turn and not snapshot.next:
                    state = dict(snapshot.values)
            if state is None:
                await self._upgrade_state(bot, conversation, graph, config, result)
                run = graph.ainvoke(turn_input(turn, text), config, context=ctx, durability="exit")
                if watched is None:
                    state = await asyncio.wait_for(run, self.settings.turn_timeout)
                else:
                    state = await self._interruptible(run, bot.tenant_id, conversation.id, watched)
                    if state is None:
                        return None
        except Exception as exc:
            logger.exception("turn %s of conversation %s failed", turn, conversation.id)
            result.errors.append(f"turn failed: {type(exc).__name__}: {exc}")
            result.status = "failed"
            return [bot.settings.fallback_reply]
        return self._outcome(state, result)

    async def _upgrade_state(
        self, bot: Bot, conversation: Conversation, graph: Any, config: dict[str, Any], result: TurnResult
    ) -> None:
        """Bring the conversation's checkpointed state up to its graph's version (see ``docs/graphs.md``).

        Registered migrations run one version at a time; the result overwrites the
        state in a new checkpoint, so the history stays. A state that cannot be
        migrated is recorded as an error and the conversation starts afresh.
        """
        target = self.state_version(bot)
        if conversation.state_version == target:
            return
        saved = await self.graphs.checkpointer.aget_tuple(config) if self.graphs.checkpointer else None
        values = dict(saved.checkpoint["channel_values"]) if saved is not None else {}
        version = int(values.get("schema_version") or conversation.state_version or 1) if values else target
        if values and version != target:
            try:
                while version < target:
                    migration = self.host.registry.migrations.get(f"{bot.graph}-v{version}")
                    if migration is None:
                        raise LookupError(f"no migration of graph {bot.graph!r} from state version {version}")
                    values = migration.migrate(values)
                    version += 1
                if version != target:
                    raise ValueError(f"state version {version} is newer than the graph's {target}")
                await graph.aupdate_state(config, _replacing(graph, values), as_node="respond")
            except Exception as exc:
                logger.exception("conversation %s: state migration failed; starting afresh", conversation.id)
                result.errors.append(f"state migration failed, conversation restarted: {type(exc).__name__}: {exc}")
                await self.graphs.checkpointer_delete_thread(config["configurable"]["thread_id"])
        await self.store.conversations.set_state_version(bot.tenant_id, conversation.id, target)

    def _reply_status(self, channel: str) -> str:
        """The status a turn's reply is stored with: ``sent`` on a response or socket channel.

        Those (REST and web chat) hand the replies to the caller of the turn; push
        channels keep them ``pending`` until a delivery job sends them.
        """
        adapter = self.host.registry.channels.get(channel)
        return "sent" if adapter is not None and adapter.kind != "push" else "pending"

    async def _interruptible(
        self, run: Any, tenant_id: str, conversation_id: str, watched: str, poll: float = 0.05
    ) -> dict[str, Any] | None:
        """Run the graph, cancelling it when a message newer than ``watched`` arrives (``None``)."""
        task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(run)
        deadline = time.monotonic() + self.settings.turn_timeout
        try:
            while not task.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the turn took longer than {self.settings.turn_timeout:g}s")
                done, _ = await asyncio.wait({task}, timeout=poll)
                if not done and await self.store.messages.received_after(tenant_id, conversation_id, watched):
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
        texts = [t for t in state.get("replies") or [] if t]
        interrupts = state.get("__interrupt__") or []
        if interrupts:
            result.escalated = True
            value = interrupts[0].value
            notice = value.get("notice") if isinstance(value, dict) else None
            if notice:
                texts.append(str(notice))
        return texts

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

    # -- people ------------------------------------------------------------------

    async def agent_action(
        self, bot: Bot, conversation_id: str, *, text: str = "", handback: bool = False, agent: str = "agent"
    ) -> TurnResult:
        """Resume a conversation paused in ``escalate``: an agent's reply, and/or handing it back to the bot."""
        async with self.locks.hold(conversation_id):
            conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
            if conversation is None or conversation.bot_id != bot.id:
                raise LookupError(f"conversation {conversation_id} not found")
            if conversation.status != "escalated":
                raise ValueError(f"conversation {conversation_id} is not with a person")
            graph = self.graphs.get(bot.graph)
            config = self.thread_config(bot, conversation.id)
            ctx = await self.context(bot, conversation)
            action = {"action": "handback" if handback else "reply", "text": text, "agent": agent}
            state = await graph.ainvoke(Command(resume=action), config, context=ctx, durability="exit")
            turn = str(uuid.uuid4())
            result = TurnResult(conversation_id=conversation.id, message_id=None, turn_id=turn)
            texts = [t for t in state.get("replies") or [] if t] if text else []
            result.escalated = bool(state.get("__interrupt__"))
            for index, reply in enumerate(texts):
                stored, _ = await self.store.messages.add_outbound(
                    bot.tenant_id,
                    conversation.id,
                    channel=conversation.channel,
                    text=reply,
                    turn_id=turn,
                    idempotency_key=f"{turn}:{index:03d}",
                    metadata={"agent": agent},
                )
                result.replies.append(stored)
            if not result.escalated:
                await self.store.conversations.set_status(bot.tenant_id, conversation.id, "open")
            return result
