"""Conversations: a bot's recent ones, one transcript, and its LangGraph checkpoints (for the debugger)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import delete, get
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter

from botloom.core.domain import Bot, Conversation
from botloom.graphs.registry import UnknownGraph
from botloom.runtime.erasure import erase_conversation, record_action
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, ApiController, BotRef, IdRef
from botloom.server.api.contacts import ErasureOut, actor
from botloom.server.api.schemas import (
    NO_NUL,
    CheckpointOut,
    ConversationDetail,
    ConversationOut,
    InterruptOut,
    MessageOut,
)
from botloom.server.auth import Principal, visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep

MAX_CHECKPOINTS = 100


async def visible_conversation(services: Services, principal: Principal, conversation_id: str) -> Conversation:
    """The conversation with this id, if the caller may see it; 404 otherwise."""
    conversations = services.store.conversations
    if principal.tenant_id is not None:
        found = await conversations.get(principal.tenant_id, conversation_id)
    else:  # the operator: find the owning tenant first, then read as that tenant
        tenant_id = await conversations.tenant_of(conversation_id)
        found = await conversations.get(tenant_id, conversation_id) if tenant_id is not None else None
    if found is None:
        raise NotFoundException(f"no conversation {conversation_id!r}")
    return found


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; anything else becomes its ``repr``."""
    return msgspec.to_builtins(value, enc_hook=repr, str_keys=True)


def checkpoint_out(snapshot: Any) -> CheckpointOut:
    """A LangGraph ``StateSnapshot`` as the debugger reads it."""
    configurable = (snapshot.config or {}).get("configurable", {})
    parent = (snapshot.parent_config or {}).get("configurable", {})
    metadata = snapshot.metadata or {}
    step = metadata.get("step")
    values = snapshot.values if isinstance(snapshot.values, dict) else {"value": snapshot.values}
    return CheckpointOut(
        checkpoint_id=configurable.get("checkpoint_id"),
        parent_id=parent.get("checkpoint_id"),
        created_at=snapshot.created_at,
        step=step if isinstance(step, int) else None,
        source=metadata.get("source"),
        next=list(snapshot.next or ()),
        interrupts=[
            InterruptOut(id=getattr(i, "id", None), value=jsonable(getattr(i, "value", None)))
            for i in getattr(snapshot, "interrupts", ()) or ()
        ],
        values=jsonable(values),
    )


class BotConversationController(ApiController):
    """Conversations of one bot."""

    path = "/bots/{bot:str}/conversations"
    tags = ("conversations",)

    @get(summary="List a bot's conversations", raises=READ_ERRORS)
    async def list_conversations(
        self,
        bot: BotRef,
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="How many conversations at most")] = 50,
    ) -> list[ConversationOut]:
        """The bot's conversations, most recently active first."""
        found = await visible_bot(services, principal, bot)
        rows = await services.store.conversations.list_all(found.tenant_id, found.id, limit=limit)
        return [ConversationOut.of(c) for c in rows]


class ConversationController(ApiController):
    """One conversation, by id."""

    path = "/conversations/{conversation_id:str}"
    tags = ("conversations",)

    @get(summary="Get a conversation and its messages", raises=READ_ERRORS)
    async def get_conversation(
        self,
        conversation_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="How many messages at most")] = 500,
    ) -> ConversationDetail:
        """The conversation's status and its messages in order, with each turn's intent and outcome."""
        conversation = await visible_conversation(services, principal, conversation_id)
        messages = await services.store.messages.list_all(conversation.tenant_id, conversation.id, limit=limit)
        base = msgspec.structs.asdict(ConversationOut.of(conversation))
        return ConversationDetail(**base, messages=[MessageOut.of(m) for m in messages])

    @get("/checkpoints", summary="List a conversation's checkpoints", raises=READ_ERRORS)
    async def list_checkpoints(
        self,
        conversation_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_CHECKPOINTS, description="How many checkpoints at most")
        ] = 20,
        before: Annotated[
            str | None,
            QueryParameter(
                description="Only checkpoints older than this one (a page's last `checkpoint_id`)",
                max_length=100,
                pattern=NO_NUL,
            ),
        ] = None,
    ) -> list[CheckpointOut]:
        """The LangGraph checkpoints of the conversation's thread, newest first: step, next nodes, interrupts, state.

        Page with ``before``: one page is one read of the checkpointer, however long the history.
        """
        conversation = await visible_conversation(services, principal, conversation_id)
        bot = await services.store.bots.get(conversation.tenant_id, conversation.bot_id)
        if bot is None:
            raise NotFoundException(f"no conversation {conversation_id!r}")
        return await checkpoints(services, bot, conversation, limit, before=before)

    @delete(
        status_code=200,
        summary="Erase one conversation and everything stored about it",
        description=(
            "For end users a contact's address cannot name (every anonymous REST user is `rest-user`): erases "
            "this conversation exactly as `DELETE /api/v1/tenants/{tenant}/contacts` erases each of a contact's "
            "(messages, delivery records, handovers, events, debug forks and every checkpoint thread; usage rows "
            "stay with their counts), while holding its lock. Answers what was erased. A second call gets 404: "
            "the conversation is gone. Recorded as a `conversation.erased` event of the tenant with the counts "
            "and ids (no text)."
        ),
        raises=READ_ERRORS,
    )
    async def erase(self, conversation_id: IdRef, principal: PrincipalDep, services: ServicesDep) -> ErasureOut:
        """Erase the conversation; what was erased."""
        conversation = await visible_conversation(services, principal, conversation_id)
        report = await erase_conversation(services, conversation, actor=actor_of(principal))
        if not report.conversations:  # erased meanwhile by a concurrent call
            raise NotFoundException(f"no conversation {conversation_id!r}")
        counts = report.as_dict()
        await record_action(
            services,
            conversation.tenant_id,
            "conversation.erased",
            by=actor(principal),
            channel=conversation.channel,
            data={"conversation_id": conversation.id, "bot_id": conversation.bot_id, **counts},
        )
        return msgspec.convert(counts, ErasureOut)


async def checkpoints(
    services: Services, bot: Bot, conversation: Conversation, limit: int, *, before: str | None = None
) -> list[CheckpointOut]:
    """The newest ``limit`` checkpoints of a conversation's thread (older than checkpoint ``before``)."""
    if services.graphs.checkpointer is None:
        return []
    try:
        graph = services.graphs.get(bot.graph)
    except UnknownGraph as exc:
        raise NotFoundException(str(exc)) from None
    config: Any = {"configurable": {"thread_id": thread_id(bot.tenant_id, bot.id, conversation.id)}}
    older: Any = {"configurable": {**config["configurable"], "checkpoint_id": before}} if before else None
    return [checkpoint_out(s) async for s in graph.aget_state_history(config, before=older, limit=limit)]
