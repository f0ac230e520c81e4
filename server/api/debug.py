"""The graph debugger's read API: bots, their graph, conversations by filter, transcripts, turns node by node.

Every route is under ``/api/v1`` with the caller's bearer token, scoped like the rest
of the API: a tenant's key sees its own bots and conversations (another tenant's are
404), the operator's token sees all. Lists are newest first and paged by an opaque
``cursor`` (the previous page's ``next_cursor``); a cursor that is not one is a 400.
The page ``/debug`` (:mod:`botloom.server.debugger`) is built on these routes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, get
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from botloom.core.domain import Bot, Conversation
from botloom.core.pricing import ModelPrice
from botloom.graphs.drawing import draw_svg, graph_json
from botloom.graphs.registry import UnknownGraph
from botloom.runtime.inspection import TurnRow, cost_of, turn_detail, turn_page
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services
from botloom.server.api.common import READ_ERRORS, ApiController, BotRef, IdRef
from botloom.server.api.conversations import visible_conversation
from botloom.server.api.schemas import NO_NUL, ConversationOut, MessageOut
from botloom.server.auth import Principal, visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep

PAGE_ERRORS = [*READ_ERRORS, ValidationException]
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
MAX_PAGE = 100
StatusFilter = Literal[
    "open",
    "escalated",
    "closed",
    "received",
    "processing",
    "answered",
    "refused",
    "rejected",
    "for_agent",
    "failed",
    "merged",
    "pending",
    "sending",
    "sent",
    "delivered",
    "undelivered",
]
Cursor = Annotated[
    str | None,
    QueryParameter(
        description="The `next_cursor` of the previous page (an opaque token: any other value is a 400)",
        max_length=400,
        pattern=CURSOR_PATTERN,
    ),
]
PathNodes = Annotated[
    str | None,
    QueryParameter(
        description="Nodes to highlight, comma-separated, in the order they ran (a turn's `path`, then `__end__` "
        "if it ran to the end)",
        max_length=2000,
        pattern=NO_NUL,
    ),
]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="How many at most")]
CheckpointRef = Annotated[str, PathParameter(description="A checkpoint's id", max_length=100, pattern=NO_NUL)]


class DebugBotOut(msgspec.Struct, frozen=True, kw_only=True):
    """A bot the caller may debug."""

    id: str
    tenant_id: str
    tenant_slug: str
    slug: str
    name: str
    graph: str


class DebugConversationOut(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation in the debugger's list."""

    id: str
    bot_id: str
    channel: str
    external_key: str
    user: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    messages: int
    """How many messages it has (both directions)."""
    last_text: str | None
    """Its newest message."""


class ConversationPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a bot's conversations, most recently active first."""

    items: list[DebugConversationOut]
    next_cursor: str | None


class TranscriptPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a conversation's messages: the newest page first, each page oldest message first."""

    messages: list[MessageOut]
    next_cursor: str | None
    """The cursor of the page of older messages."""


class ModelCallOut(msgspec.Struct, frozen=True, kw_only=True):
    """One model call of a turn: its node, model, tokens, latency and price."""

    node: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    ms: float | None
    cost_usd: float | None
    """Its tokens at the model's list price (``BOTLOOM_MODEL_PRICES``); ``null`` for a model without a price."""


class TurnOut(msgspec.Struct, frozen=True, kw_only=True):
    """One run of the conversation's graph (a turn, or an agent's action resuming a paused one)."""

    checkpoint_id: str
    parent_id: str | None
    created_at: str | None
    source: str | None
    turn_id: str | None
    user_text: str | None
    replies: list[str]
    intent: str | None
    path: list[str]
    """The nodes that ran, in order."""
    next: list[str]
    """The nodes waiting to run (``escalate`` while a person has the conversation)."""
    errors: list[str]
    interrupts: list[Any]
    """What a paused run waits with (a handover's reason and notice)."""
    model_calls: list[ModelCallOut] = []
    """Its model calls in order, each with its cost."""
    tokens: int = 0
    """Tokens of all its model calls (prompt and completion)."""
    cost_usd: float | None = 0.0
    """What its model calls cost; ``null`` when one of them used a model without a price."""
    unpriced_models: list[str] = []
    """The models of its calls that have no price (their cost is unknown, not zero)."""

    @classmethod
    def of(cls, row: TurnRow, prices: Mapping[str, ModelPrice]) -> TurnOut:
        """The answer for a turn row, its model calls costed with ``prices``."""
        costed = cost_of(row.model_calls, prices)
        return msgspec.convert(
            {
                **row.as_dict(),
                "model_calls": costed.calls,
                "tokens": costed.tokens,
                "cost_usd": costed.cost_usd,
                "unpriced_models": costed.unpriced_models,
            },
            cls,
        )


class TurnPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a conversation's turns, newest first."""

    turns: list[TurnOut]
    next_cursor: str | None


class DiffOut(msgspec.Struct, frozen=True, kw_only=True):
    """One state key that differs."""

    key: str
    change: str
    """``added``, ``removed`` or ``changed``."""
    before: Any
    after: Any


class StepOut(msgspec.Struct, frozen=True, kw_only=True):
    """One node of a turn: its trace line, the state keys it wrote, the state's diff across it."""

    index: int
    node: str
    ms: float | None
    summary: str
    wrote: dict[str, Any]
    diff: list[DiffOut]


class TurnDetailOut(msgspec.Struct, frozen=True, kw_only=True):
    """A turn node by node, with the state before and after it and the turn's messages."""

    turn: TurnOut
    steps: list[StepOut]
    before: dict[str, Any]
    """The state at the turn's start (its parent checkpoint)."""
    after: dict[str, Any]
    diff: list[DiffOut]
    input_keys: list[str]
    """State keys the turn's input set and no node changed after."""
    messages: list[MessageOut]
    """The channel messages of this turn: what the user sent, what the bot answered."""


def encode_cursor(*parts: str) -> str:
    """An opaque cursor holding ``parts``."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The parts of a cursor made by :func:`encode_cursor`; 400 when it is not one."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        parts = None
    if not (isinstance(parts, list) and len(parts) == size and all(isinstance(p, str) and p for p in parts)):
        raise ValidationException(
            "invalid cursor: pass a next_cursor this API answered",
            extra=[{"key": "cursor", "message": "not a cursor", "source": "query"}],
        )
    return parts


def _stamped_cursor(cursor: str) -> tuple[datetime, str]:
    stamp, ident = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(stamp), ident
    except ValueError:
        raise ValidationException(
            "invalid cursor: pass a next_cursor this API answered",
            extra=[{"key": "cursor", "message": "not a cursor", "source": "query"}],
        ) from None


async def _drawable(services: Services, principal: Principal, ref: str) -> Any:
    """The drawable graph (``compiled.get_graph()``) of a bot the caller may see."""
    found = await visible_bot(services, principal, ref)
    try:
        return services.graphs.get(found.graph).get_graph()
    except UnknownGraph as exc:
        raise NotFoundException(str(exc)) from None


def _nodes(path: str | None) -> list[str]:
    return [n for n in (path or "").split(",") if n]


async def _bot_of(services: Services, conversation: Conversation) -> Bot:
    bot = await services.store.bots.get(conversation.tenant_id, conversation.bot_id)
    if bot is None:
        raise NotFoundException(f"no conversation {conversation.id!r}")
    return bot


class DebugController(ApiController):
    """What the caller may debug."""

    path = "/debug"
    tags = ("debugger",)

    @get("/bots", summary="List the bots the caller may debug", raises=READ_ERRORS)
    async def debug_bots(self, principal: PrincipalDep, services: ServicesDep) -> list[DebugBotOut]:
        """Every bot of the key's tenant (the operator: of every tenant), by tenant and slug."""
        tenants = await services.store.tenants.list_all()
        found = []
        for tenant in sorted(tenants, key=lambda t: t.slug):
            if not principal.sees(tenant.id):
                continue
            for bot in sorted(await services.store.bots.list_all(tenant.id), key=lambda b: b.slug):
                found.append(
                    DebugBotOut(
                        id=bot.id,
                        tenant_id=tenant.id,
                        tenant_slug=tenant.slug,
                        slug=bot.slug,
                        name=bot.name,
                        graph=bot.graph,
                    )
                )
        return found


class BotDebugController(ApiController):
    """A bot's graph and its conversations, for the debugger."""

    path = "/bots/{bot:str}"
    tags = ("debugger",)

    @get(
        "/graph",
        summary="Draw a bot's graph as SVG",
        raises=READ_ERRORS,
        responses={
            200: ResponseSpec(
                data_container=str, media_type="image/svg+xml", description="An SVG document", generate_examples=False
            )
        },
    )
    async def bot_graph(
        self, bot: BotRef, principal: PrincipalDep, services: ServicesDep, path: PathNodes = None
    ) -> Response[str]:
        """The bot's compiled graph, conditional edges dashed and labelled; ``path`` drawn highlighted."""
        drawable = await _drawable(services, principal, bot)
        return Response(draw_svg(drawable, path=_nodes(path)), media_type="image/svg+xml")

    @get("/graph/json", summary="A bot's graph as nodes and edges", raises=READ_ERRORS)
    async def bot_graph_json(
        self, bot: BotRef, principal: PrincipalDep, services: ServicesDep, path: PathNodes = None
    ) -> dict[str, Any]:
        """The compiled graph's nodes and edges (conditional or not, with labels), each marked if ``path`` took it."""
        return graph_json(await _drawable(services, principal, bot), _nodes(path))

    @get("/debug/conversations", summary="Find a bot's conversations", raises=PAGE_ERRORS)
    async def find_conversations(
        self,
        *,
        bot: BotRef,
        principal: PrincipalDep,
        services: ServicesDep,
        channel: Annotated[
            str | None, QueryParameter(description="Only this channel", max_length=64, pattern=NO_NUL)
        ] = None,
        status: Annotated[
            StatusFilter | None,
            QueryParameter(description="A conversation status, or a status one of its messages has (`failed`...)"),
        ] = None,
        q: Annotated[
            str | None,
            QueryParameter(description="Text in its messages, channel key or user", max_length=200, pattern=NO_NUL),
        ] = None,
        cursor: Cursor = None,
        limit: Limit = 25,
    ) -> ConversationPage:
        """The bot's conversations, most recently active first, filtered, one page."""
        found = await visible_bot(services, principal, bot)
        after = _stamped_cursor(cursor) if cursor else None
        rows = await services.store.inspection.find_conversations(
            found.tenant_id, found.id, channel=channel, status=status, text=q, after=after, limit=limit + 1
        )
        more, rows = len(rows) > limit, rows[:limit]
        items = [
            DebugConversationOut(
                **msgspec.structs.asdict(ConversationOut.of(r.conversation)), messages=r.messages, last_text=r.last_text
            )
            for r in rows
        ]
        last = rows[-1].conversation if rows else None
        next_cursor = encode_cursor(last.updated_at.isoformat(), last.id) if more and last else None
        return ConversationPage(items=items, next_cursor=next_cursor)


class ConversationDebugController(ApiController):
    """A conversation's transcript and turns, for the debugger."""

    path = "/conversations/{conversation_id:str}"
    tags = ("debugger",)

    @get("/transcript", summary="Page through a conversation's transcript", raises=PAGE_ERRORS)
    async def transcript(
        self,
        conversation_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> TranscriptPage:
        """The newest messages first page, then older ones; each page in the order they were sent."""
        conversation = await visible_conversation(services, principal, conversation_id)
        before = _stamped_cursor(cursor) if cursor else None
        rows = await services.store.inspection.transcript_page(
            conversation.tenant_id, conversation.id, before=before, limit=limit + 1
        )
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id) if more and rows else None
        return TranscriptPage(messages=[MessageOut.of(m) for m in reversed(rows)], next_cursor=next_cursor)

    @get("/turns", summary="Page through a conversation's turns", raises=PAGE_ERRORS)
    async def turns(
        self,
        conversation_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        cursor: Cursor = None,
        limit: Limit = 20,
    ) -> TurnPage:
        """The runs of the conversation's graph, newest first, read one page from the checkpointer."""
        conversation = await visible_conversation(services, principal, conversation_id)
        before = decode_cursor(cursor, 1)[0] if cursor else None
        saver = services.graphs.checkpointer
        if saver is None:
            return TurnPage(turns=[], next_cursor=None)
        bot = await _bot_of(services, conversation)
        rows, last = await turn_page(
            saver, thread_id(bot.tenant_id, bot.id, conversation.id), before=before, limit=limit
        )
        prices = services.settings.model_price_table
        turns = [TurnOut.of(r, prices) for r in rows]
        return TurnPage(turns=turns, next_cursor=encode_cursor(last) if last else None)

    @get("/turns/{checkpoint_id:str}", summary="Step through one turn", raises=READ_ERRORS)
    async def turn(
        self,
        conversation_id: IdRef,
        checkpoint_id: CheckpointRef,
        principal: PrincipalDep,
        services: ServicesDep,
    ) -> TurnDetailOut:
        """Every node of the turn in order: duration, what it did, what it wrote, the state's diff across it."""
        conversation = await visible_conversation(services, principal, conversation_id)
        saver = services.graphs.checkpointer
        bot = await _bot_of(services, conversation)
        detail = (
            await turn_detail(saver, thread_id(bot.tenant_id, bot.id, conversation.id), checkpoint_id)
            if saver is not None
            else None
        )
        if detail is None:
            raise NotFoundException(f"no checkpoint {checkpoint_id!r} in conversation {conversation_id!r}")
        messages = (
            await services.store.inspection.turn_messages(conversation.tenant_id, conversation.id, detail.row.turn_id)
            if detail.row.turn_id
            else []
        )
        turn = TurnOut.of(detail.row, services.settings.model_price_table)
        answer = msgspec.convert({**detail.as_dict(), "turn": msgspec.to_builtins(turn), "messages": []}, TurnDetailOut)
        return msgspec.structs.replace(answer, messages=[MessageOut.of(m) for m in messages])


DEBUG_HANDLERS = [DebugController, BotDebugController, ConversationDebugController]

__all__ = ["DEBUG_HANDLERS", "decode_cursor", "encode_cursor"]
