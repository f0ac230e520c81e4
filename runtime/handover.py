"""Handover: a conversation passed to a person when its turn ends in ``escalate``, and back.

**One source of truth.** Whether a conversation is with a person is its row's
``status``: ``escalated`` (:data:`WITH_PERSON`) from the turn that ended paused in
the graph's ``escalate`` node until an agent hands it back. Only this module writes
it: :meth:`Handovers.hand_over` when a turn's graph run paused (LangGraph's
``interrupt``) and :meth:`Handovers.agent_action` when an agent's hand-back let the
graph run to its end. Everything else is derived from it, never set on its own:

* the runner reads it before a turn: a message of a conversation with a person is
  not run by the bot; it is stored with the status ``for_agent`` (:meth:`Handovers.hold`);
* a turn's result (:attr:`~botloom.runtime.turns.TurnResult.escalated`), the answer a
  response or socket channel renders, the ``on_turn_end`` summary, the turns metric
  and the ``outcome`` recorded with the inbound message all say what the status was
  when the turn ended;
* the graph's state keeps its own routing (``escalated`` loops the ``escalate`` node,
  ``escalation_reason`` says why it was entered), read by nobody outside the graph;
  the pause itself carries a :class:`Handover` (reason and notice) in its interrupt.

The agent desk (:mod:`botloom.runtime.desk`) is told of each pause (:meth:`Handovers.route`:
it opens the handover record, routes it to a team and an agent, and words the notice the
user gets) and of each message held for the agent; it acts through :meth:`Handovers.agent_action`
(an agent's reply, or handing back with a note, which the graph keeps in ``agent_note``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from langgraph.types import Command, Overwrite

from botloom.core.domain import Bot, Conversation, ConversationStatus, StoredMessage
from botloom.core.statuses import OutboundStatus, TurnStatus
from botloom.core.storage.repositories import Store
from botloom.graphs.registry import GraphRegistry
from botloom.runtime.locks import ConversationLocks
from botloom.runtime.results import TurnResult
from botloom.runtime.turn_context import TurnContexts, thread_config

WITH_PERSON: ConversationStatus = "escalated"
"""The conversation status that means "with a person": the bot does not answer its messages."""
WITH_BOT: ConversationStatus = "open"
"""The status a hand-back returns the conversation to."""
HELD_STATUS: TurnStatus = "for_agent"
"""The status of an inbound message that arrived while its conversation was with a person."""

AgentAction = Literal["reply", "handback"]

AGENT_MESSAGES = uuid.UUID("5b0e1c2a-9d4f-4c1e-8a57-3f6d2b9e7a10")
"""The namespace of the turn ids of agents' messages sent with an idempotency key (``uuid5`` of the key)."""

FRESH_START: dict[str, Any] = {
    "messages": Overwrite([]),
    "slots": {},
    "intent": None,
    "confidence": 0.0,
    "candidates": [],
    "pending_intent": None,
    "passages": [],
    "tool_results": [],
    "escalated": False,
    "escalation_reason": None,
    "failures": 0,
    "agent_note": None,
}
"""The state a resolved conversation's graph is left in: the bot starts its next message with no history."""


class NotWithPerson(ValueError):
    """The conversation is not with a person (any more), or a closed handover's conversation is with one again."""


class KeyReused(ValueError):
    """An agent's idempotency key already names a message with another text."""


@dataclass(frozen=True)
class Handover:
    """Why a conversation went to a person and what its user was told: the payload of the graph's pause."""

    conversation_id: str
    reason: str
    notice: str | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)
    """What the agent is told (reason, intent, slots, last messages, knowledge found): the graph's summary."""

    @classmethod
    def from_interrupt(cls, conversation_id: str, value: Any) -> Handover:
        """The handover an ``interrupt`` value describes (the ``turn`` graph's is a dict with reason and notice)."""
        if not isinstance(value, Mapping):
            return cls(conversation_id=conversation_id, reason=str(value or "handed to a person"))
        notice = value.get("notice")
        summary = value.get("summary")
        return cls(
            conversation_id=str(value.get("conversation_id") or conversation_id),
            reason=str(value.get("reason") or "handed to a person"),
            notice=str(notice) if notice else None,
            summary=dict(summary) if isinstance(summary, Mapping) else {},
        )

    def with_notice(self, notice: str | None) -> Handover:
        """The same handover with another notice for the user."""
        return replace(self, notice=notice)


class DeskRouting(Protocol):
    """What the agent desk does when a conversation goes to a person (:class:`botloom.runtime.desk.Desk`)."""

    async def opened(self, bot: Bot, conversation: Conversation, handover: Handover) -> Handover:
        """Open, route and assign the handover; the handover with the notice its user gets."""
        ...

    async def held(self, bot: Bot, conversation: Conversation, messages: Sequence[StoredMessage]) -> None:
        """The user wrote while the conversation is with a person."""
        ...


def with_person(conversation: Conversation) -> bool:
    """Whether ``conversation`` is with a person (the one reading of the one source of truth)."""
    return conversation.status == WITH_PERSON


def keyed_turn(conversation_id: str, key: str) -> str:
    """The turn id of the agent's message sent with the idempotency ``key`` in the conversation."""
    return str(uuid.uuid5(AGENT_MESSAGES, f"{conversation_id}:{key}"))


def paused(state: Mapping[str, Any], conversation_id: str) -> Handover | None:
    """The handover a graph run's output says it paused for, or ``None`` when the run ended."""
    interrupts = state.get("__interrupt__") or []
    return Handover.from_interrupt(conversation_id, interrupts[0].value) if interrupts else None


class Handovers:
    """Writes and reads the handover state of conversations (see the module docstring)."""

    def __init__(
        self, *, store: Store, graphs: GraphRegistry, contexts: TurnContexts, locks: ConversationLocks
    ) -> None:
        self.store = store
        self.graphs = graphs
        self.contexts = contexts
        self.locks = locks
        self.desk: DeskRouting | None = None
        """The agent desk, set by the composition root (``None``: pauses are only recorded on the conversation)."""

    async def route(self, bot: Bot, conversation: Conversation, handover: Handover) -> Handover:
        """A turn's graph paused for ``handover``: the desk opens and routes it; the notice the user gets."""
        if self.desk is None:
            return handover
        return await self.desk.opened(bot, conversation, handover)

    async def hold(self, bot: Bot, conversation: Conversation, messages: Sequence[StoredMessage]) -> TurnResult:
        """Keep ``messages`` of a conversation with a person for the agent: no turn, no reply."""
        for message in messages:
            await self.store.messages.finish(
                bot.tenant_id, message.id, HELD_STATUS, turn_id=None, outcome={"escalated": True}
            )
        if self.desk is not None and messages:
            await self.desk.held(bot, conversation, messages)
        return TurnResult(
            conversation_id=conversation.id,
            message_id=messages[0].id if messages else None,
            turn_id=None,
            status=HELD_STATUS,
            conversation_status=WITH_PERSON,
        )

    async def hand_over(self, bot: Bot, conversation: Conversation, handover: Handover) -> ConversationStatus:
        """A turn's graph paused for ``handover``: the conversation is with a person from now on; its status."""
        if conversation.status != WITH_PERSON:
            await self.store.conversations.set_status(bot.tenant_id, conversation.id, WITH_PERSON)
        return WITH_PERSON

    async def waiting(self, bot: Bot, conversation: Conversation) -> Handover | None:
        """The pause a conversation with a person waits in, read from its checkpoint (``None``: not with a person)."""
        if not with_person(conversation):
            return None
        snapshot = await self.graphs.get(bot.graph).aget_state(thread_config(bot, conversation.id))
        interrupts = getattr(snapshot, "interrupts", ()) or ()
        return Handover.from_interrupt(conversation.id, interrupts[0].value) if interrupts else None

    async def agent_action(  # noqa: PLR0913 - keyword-only: what an agent's action carries
        self,
        bot: Bot,
        conversation_id: str,
        *,
        text: str = "",
        handback: bool = False,
        fresh: bool = False,
        closing: bool = False,
        agent: str = "agent",
        note: str | None = None,
        key: str | None = None,
        reply_status: OutboundStatus = "pending",
        metadata: Mapping[str, Any] | None = None,
    ) -> TurnResult:
        """Resume a conversation paused in ``escalate``: an agent's reply, and/or handing it back to the bot.

        ``note`` (with ``handback``) stays in the graph's state for the bot's next turns; ``fresh``
        (with ``handback``: the matter is resolved) leaves the state with no history, slots or note,
        so the bot starts the next message afresh. ``closing``: the resume of a handover already
        closed, refused (:class:`NotWithPerson`) when the conversation has an open handover again (its pause
        is that one's). ``key``: an idempotency key; a second action with it stores and resumes
        nothing and answers the stored reply (``duplicate``), or raises :class:`KeyReused` for another
        text. The replies are stored with ``reply_status`` (``pending``: a delivery job sends them)
        and ``metadata``. Raises ``LookupError`` for a conversation the bot does not have,
        :class:`NotWithPerson` for one that is not with a person.
        """
        async with self.locks.hold(conversation_id):
            conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
            if conversation is None or conversation.bot_id != bot.id:
                raise LookupError(f"conversation {conversation_id} not found")
            turn = keyed_turn(conversation.id, key) if key else str(uuid.uuid4())
            if key:
                sent = await self.sent_with_key(bot, conversation, key)
                if sent is not None:
                    if sent.text != text:
                        raise KeyReused(f"the idempotency key {key!r} was used for another message")
                    return TurnResult(
                        conversation_id=conversation.id,
                        message_id=None,
                        turn_id=turn,
                        replies=[sent],
                        duplicate=True,
                        conversation_status=conversation.status,
                    )
            if not with_person(conversation):
                raise NotWithPerson(f"conversation {conversation_id} is not with a person")
            if closing and await self.store.handovers.open_of(bot.tenant_id, conversation.id) is not None:
                raise NotWithPerson(f"conversation {conversation_id} is with a person again")
            graph = self.graphs.get(bot.graph)
            config = thread_config(bot, conversation.id)
            ctx = await self.contexts.context(bot, conversation)
            action: dict[str, Any] = {"action": "handback" if handback else "reply", "text": text, "agent": agent}
            if note:
                action["note"] = note
            state = await graph.ainvoke(Command(resume=action), config, context=ctx, durability="exit")
            still = paused(state, conversation.id) is not None
            if fresh and not still:
                channels = getattr(graph, "channels", {})
                await graph.aupdate_state(config, {k: v for k, v in FRESH_START.items() if k in channels})
            result = TurnResult(
                conversation_id=conversation.id,
                message_id=None,
                turn_id=turn,
                conversation_status=WITH_PERSON if still else WITH_BOT,
            )
            texts = [t for t in state.get("replies") or [] if t] if text else []
            for index, reply in enumerate(texts):
                stored, _ = await self.store.messages.add_outbound(
                    bot.tenant_id,
                    conversation.id,
                    channel=conversation.channel,
                    text=reply,
                    turn_id=turn,
                    idempotency_key=f"{turn}:{index:03d}",
                    status=reply_status,
                    metadata={"agent": agent, **(metadata or {})},
                )
                result.replies.append(stored)
            if not still:
                await self.store.conversations.set_status(bot.tenant_id, conversation.id, WITH_BOT)
            return result

    async def sent_with_key(self, bot: Bot, conversation: Conversation, key: str) -> StoredMessage | None:
        """The agent's message stored with the idempotency ``key``, if any."""
        stored_key = f"{keyed_turn(conversation.id, key)}:000"
        return await self.store.messages.find(bot.tenant_id, bot.id, conversation.channel, "outbound", stored_key)

    async def give_back(self, bot: Bot, conversation_id: str) -> bool:
        """The conversation of a closed handover is the bot's again without the graph's resume (it kept failing).

        The graph's pause stays in its checkpoint; the next message starts a new run from its
        input. Nothing happens when the conversation has an open handover again or is not with a
        person; whether it was given back.
        """
        async with self.locks.hold(conversation_id):
            conversation = await self.store.conversations.get(bot.tenant_id, conversation_id)
            if conversation is None or not with_person(conversation):
                return False
            if await self.store.handovers.open_of(bot.tenant_id, conversation.id) is not None:
                return False
            await self.store.conversations.set_status(bot.tenant_id, conversation.id, WITH_BOT)
            return True


__all__ = [
    "AGENT_MESSAGES",
    "FRESH_START",
    "HELD_STATUS",
    "WITH_BOT",
    "WITH_PERSON",
    "AgentAction",
    "DeskRouting",
    "Handover",
    "Handovers",
    "KeyReused",
    "NotWithPerson",
    "keyed_turn",
    "paused",
    "with_person",
]
