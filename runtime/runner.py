"""The turn runner: from a stored inbound message to stored replies, one turn at a time.

The path of a turn (see ``docs/architecture.md``):

1. the one inbound path (:mod:`botloom.runtime.inbound`) stores the inbound
   message with its idempotency key; a retried delivery finds the stored one.
2. :meth:`TurnRunner.process` takes the conversation's lock and runs every
   pending message of the conversation in arrival order, as the bot's burst
   policy says (:mod:`botloom.runtime.bursts`), so turns of one conversation
   never overlap, whichever process received them.
3. Each turn (:mod:`botloom.runtime.turns`) brings the conversation's state up to
   its graph's version (:mod:`botloom.runtime.state_migration`), invokes the bot's
   graph on the conversation's thread with the turn's context
   (:mod:`botloom.runtime.turn_context`) and stores the replies (keyed by the turn,
   so a re-run stores nothing twice); the channel layer delivers them. A turn that
   ends in ``escalate`` hands the conversation to a person
   (:mod:`botloom.runtime.handover`) until an agent hands it back.

This class only puts those parts together and keeps the names the rest of botloom
calls. A turn's id is derived from its inbound message, so a turn re-run after its
process died has the same id, its replies the same keys, and its tools the same
idempotency keys.
"""

from __future__ import annotations

from typing import Any

from botloom.core.domain import Bot, Conversation, StoredMessage
from botloom.core.host import PluginHost
from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.graphs.context import TurnContext
from botloom.graphs.engines import Engine
from botloom.graphs.registry import GraphRegistry
from botloom.runtime.bursts import Bursts
from botloom.runtime.handover import Handovers
from botloom.runtime.locks import ConversationLocks
from botloom.runtime.results import TurnOutage, TurnResult, TurnStatus, turn_id_for
from botloom.runtime.state_migration import StateMigrator
from botloom.runtime.turn_context import BotView, TurnContexts, thread_config, thread_id
from botloom.runtime.turns import Turns


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
        self.contexts = TurnContexts(host=host, store=store, engine=engine, settings=settings, knowledge=knowledge)
        self.migrator = StateMigrator(host=host, store=store, graphs=graphs)
        self.handovers = Handovers(store=store, graphs=graphs, contexts=self.contexts, locks=locks)
        self.turns = Turns(
            host=host,
            store=store,
            graphs=graphs,
            contexts=self.contexts,
            migrator=self.migrator,
            handovers=self.handovers,
            settings=settings,
        )
        self.bursts = Bursts(store=store, locks=locks, turns=self.turns)

    # -- what a bot sees ---------------------------------------------------------

    thread_config = staticmethod(thread_config)

    async def bot_view(self, bot: Bot) -> BotView:
        """The bot's enabled, installed plugins with their configs and definitions."""
        return await self.contexts.bot_view(bot)

    async def context(self, bot: Bot, conversation: Conversation, view: BotView | None = None) -> TurnContext:
        """The runtime context of a turn of ``conversation``."""
        return await self.contexts.context(bot, conversation, view)

    def state_version(self, bot: Bot) -> int:
        """The version of the state the bot's graph checkpoints (what a new conversation starts with)."""
        return self.migrator.target(bot)

    # -- the path of a turn ------------------------------------------------------

    async def process(self, bot: Bot, conversation_id: str, *, wait: bool = False) -> list[TurnResult]:
        """Run the conversation's pending messages in order as its burst policy says (see :meth:`Bursts.process`)."""
        return await self.bursts.process(bot, conversation_id, wait=wait)

    async def run_or_reject(self, bot: Bot, conversation: Conversation, message: StoredMessage) -> TurnResult:
        """``reject`` policy on a response or socket channel: run the message, or answer busy."""
        return await self.bursts.run_or_reject(bot, conversation, message)

    async def result_of(self, bot: Bot, message_id: str) -> TurnResult:
        """The stored outcome and replies of the turn that answered an inbound message."""
        return await self.bursts.result_of(bot, message_id)

    # -- people ------------------------------------------------------------------

    async def agent_action(
        self, bot: Bot, conversation_id: str, *, text: str = "", handback: bool = False, agent: str = "agent"
    ) -> TurnResult:
        """Resume a conversation paused in ``escalate``: an agent's reply, and/or handing it back to the bot."""
        return await self.handovers.agent_action(bot, conversation_id, text=text, handback=handback, agent=agent)


__all__ = [
    "BotView",
    "TurnOutage",
    "TurnResult",
    "TurnRunner",
    "TurnStatus",
    "thread_config",
    "thread_id",
    "turn_id_for",
]
