"""The LangGraph Server API's routes under ``/langgraph``: assistants, threads, runs and ``/info``.

Bodies are read as JSON whatever their ``Content-Type`` (LangGraph Studio sends
``text/plain``); unknown fields are ignored as LangGraph servers ignore them, a
field of the wrong type is a 422 naming it, a body that is not JSON a 400. Every
route but ``/info`` and ``/ok`` needs a key (:mod:`.access`), and everything it
reads is the key's tenant's.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from botloom.core.domain import Bot, Conversation
from botloom.graphs.registry import UnknownGraph
from botloom.runtime.runner import thread_config
from botloom.runtime.services import Services
from botloom.server.auth import Principal
from botloom.server.deps import ServicesDep
from botloom.server.langgraph_api import runs as run_ops
from botloom.server.langgraph_api.access import caller, find_assistant, find_thread, visible_bots
from botloom.server.langgraph_api.shapes import (
    assistant_out,
    has_checkpoint,
    jsonable,
    run_from_message,
    state_messages,
    state_out,
    thread_out,
)

T = TypeVar("T")
MAX_BODY = 262_144
"""Largest request body of the LangGraph API (256 KiB)."""
MAX_PAGE = 100
MAX_HISTORY = 1000
ID = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
AUTH: dict[str, Any] = {"guards": [caller], "request_max_body_size": MAX_BODY}
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
CHANNEL = run_ops.CHANNEL


def refused(status: int, detail: str) -> HTTPException:
    """An HTTP error with this status and detail."""
    return HTTPException(status_code=status, detail=detail)


async def body_of(request: Request[Any, Any, Any], kind: type[T]) -> T:
    """The JSON body as ``kind`` (any content type; an empty body is ``{}``)."""
    raw = await request.body()
    try:
        return msgspec.json.decode(raw if raw.strip() else b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise refused(422, f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise refused(400, "the body is not JSON") from None


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The caller the guard authenticated."""
    principal: Principal = request.state.principal
    return principal


def graph_of(services: Services, bot: Bot) -> Any:
    """The bot's compiled graph; 404 when its graph is not installed."""
    try:
        return services.graphs.get(bot.graph)
    except UnknownGraph as exc:
        raise NotFoundException(str(exc)) from None


def matches(have: dict[str, Any], want: dict[str, Any] | None) -> bool:
    """Whether every key of ``want`` has the same value in ``have``."""
    return all(have.get(k) == v for k, v in (want or {}).items())


# -- bodies ---------------------------------------------------------------------------


class AssistantSearch(msgspec.Struct, kw_only=True):
    """``POST /assistants/search`` and ``/assistants/count``."""

    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class ThreadCreate(msgspec.Struct, kw_only=True):
    """``POST /threads``."""

    thread_id: ID | None = None
    metadata: dict[str, Any] | None = None
    if_exists: str | None = None
    graph_id: str | None = None


class ThreadSearch(msgspec.Struct, kw_only=True):
    """``POST /threads/search`` and ``/threads/count``."""

    metadata: dict[str, Any] | None = None
    ids: list[ID] | None = None
    status: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 10
    offset: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0


class CheckpointRef(msgspec.Struct, kw_only=True):
    """A ``Checkpoint`` as a client names it."""

    checkpoint_id: ID | None = None
    thread_id: str | None = None
    checkpoint_ns: str | None = None


class StateAt(msgspec.Struct, kw_only=True):
    """``POST /threads/{id}/state/checkpoint``."""

    checkpoint: CheckpointRef
    subgraphs: bool = False


class StateUpdate(msgspec.Struct, kw_only=True):
    """``POST /threads/{id}/state``."""

    values: dict[str, Any] | None = None
    as_node: str | None = None
    checkpoint_id: ID | None = None
    checkpoint: CheckpointRef | None = None


class HistoryQuery(msgspec.Struct, kw_only=True):
    """``POST /threads/{id}/history``."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY)] = 10
    before: ID | dict[str, Any] | None = None
    """A checkpoint id, or a ``Checkpoint`` (or a config) naming one."""
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class RunCreate(msgspec.Struct, kw_only=True):
    """``POST .../runs``, ``.../runs/wait`` and ``.../runs/stream`` (fields botloom does not use are ignored)."""

    assistant_id: ID
    input: dict[str, Any] | None = None
    command: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: str | list[str] | None = None
    interrupt_before: str | list[str] | None = None
    interrupt_after: str | list[str] | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: ID | None = None
    webhook: str | None = None
    after_seconds: int | None = None
    if_not_exists: str | None = None


def unsupported(body: RunCreate) -> str | None:
    """What of a run request botloom does not do (a 422 says so), or ``None``."""
    if body.command:
        return "command (resuming an interrupt): a person answers an escalated conversation through the agent desk"
    if body.interrupt_before or body.interrupt_after:
        return "interrupt_before/interrupt_after (breakpoints): use the debugger's fork at /debug"
    if body.webhook:
        return "webhook: botloom does not call URLs a run names"
    if body.after_seconds:
        return "after_seconds: runs start at once"
    return None


# -- info -------------------------------------------------------------------------------


@get("/info", sync_to_thread=False)
def info() -> dict[str, Any]:
    """What this server is: botloom's LangGraph API (assistants, threads, runs; no crons, store or LangSmith)."""
    from importlib.metadata import version

    from botloom import __version__

    return {
        "version": __version__,
        "langgraph_py_version": version("langgraph"),
        "flags": {"assistants": True, "crons": False, "langsmith": False, "langsmith_tracing_replicas": False},
        "host": {"kind": "botloom", "project_id": None, "revision_id": None, "tenant_id": None},
    }


@get("/ok", sync_to_thread=False)
def ok() -> dict[str, bool]:
    """Liveness, as LangGraph servers answer it."""
    return {"ok": True}


# -- assistants -----------------------------------------------------------------------


async def _assistants(services: Services, principal: Principal, query: AssistantSearch) -> list[Bot]:
    bots = await visible_bots(services, principal)
    return [
        b
        for b in bots
        if (query.graph_id is None or b.graph == query.graph_id)
        and (query.name is None or query.name.lower() in b.name.lower())
        and matches(assistant_out(b)["metadata"], query.metadata)
    ]


@post("/assistants/search", status_code=200, **AUTH)
async def search_assistants(request: Request[Any, Any, Any], services: ServicesDep) -> Response[Any]:
    """The caller's bots as assistants, oldest first (``X-Pagination-Next`` when there are more)."""
    query = await body_of(request, AssistantSearch)
    found = await _assistants(services, principal_of(request), query)
    page = found[query.offset : query.offset + query.limit]
    more = query.offset + query.limit < len(found)
    headers = {"X-Pagination-Next": str(query.offset + query.limit)} if more else {}
    return Response([assistant_out(b) for b in page], headers=headers)


@post("/assistants/count", status_code=200, **AUTH)
async def count_assistants(request: Request[Any, Any, Any], services: ServicesDep) -> int:
    """How many of the caller's bots match."""
    return len(await _assistants(services, principal_of(request), await body_of(request, AssistantSearch)))


@get("/assistants/{assistant_id:str}", **AUTH)
async def get_assistant(
    request: Request[Any, Any, Any], services: ServicesDep, assistant_id: FromPath[str]
) -> dict[str, Any]:
    """One bot as an assistant."""
    return assistant_out(await find_assistant(services, principal_of(request), assistant_id))


@post("/assistants/{assistant_id:str}/versions", status_code=200, **AUTH)
async def assistant_versions(
    request: Request[Any, Any, Any], services: ServicesDep, assistant_id: FromPath[str]
) -> list[dict[str, Any]]:
    """An assistant's versions: botloom keeps one, the bot as it is."""
    return [assistant_out(await find_assistant(services, principal_of(request), assistant_id))]


@get("/assistants/{assistant_id:str}/graph", **AUTH)
async def assistant_graph(request: Request[Any, Any, Any], services: ServicesDep, assistant_id: FromPath[str]) -> Any:
    """The bot's graph drawn from the compiled graph (nodes, edges, conditional edges); ``xray`` as LangGraph's."""
    bot = await find_assistant(services, principal_of(request), assistant_id)
    raw = request.query_params.get("xray", "false").lower()
    xray: bool | int
    if raw in ("true", "false"):
        xray = raw == "true"
    elif raw.isdigit() and len(raw) < 4:
        xray = int(raw)
    else:
        raise refused(422, "xray is true, false or a depth")
    return jsonable(graph_of(services, bot).get_graph(xray=xray).to_json())


@get("/assistants/{assistant_id:str}/subgraphs", **AUTH)
async def assistant_subgraphs(
    request: Request[Any, Any, Any], services: ServicesDep, assistant_id: FromPath[str]
) -> Any:
    """The bot's subgraphs: the ``turn`` graph has none."""
    bot = await find_assistant(services, principal_of(request), assistant_id)
    return {ns: _schemas(bot, g) for ns, g in graph_of(services, bot).get_subgraphs()}


INPUT_SCHEMA = {
    "title": "Input",
    "type": "object",
    "properties": {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "human"]},
                    "type": {"type": "string", "enum": ["human"]},
                    "content": {"type": "string"},
                },
                "required": ["content"],
            },
        }
    },
    "required": ["messages"],
}


def _schemas(bot: Bot, graph: Any) -> dict[str, Any]:
    state: Any = {"type": "object"}
    schema = getattr(getattr(graph, "builder", None), "state_schema", None)
    if schema is not None:
        try:
            state = msgspec.json.schema(schema)
        except Exception:  # noqa: BLE001 - a plugin's graph state msgspec cannot describe: any object
            state = {"type": "object"}
    return {
        "graph_id": bot.graph,
        "input_schema": INPUT_SCHEMA,
        "output_schema": state,
        "state_schema": state,
        "config_schema": None,
        "context_schema": None,
    }


@get("/assistants/{assistant_id:str}/schemas", **AUTH)
async def assistant_schemas(
    request: Request[Any, Any, Any], services: ServicesDep, assistant_id: FromPath[str]
) -> dict[str, Any]:
    """The run input botloom takes (user messages) and the graph's state schema."""
    bot = await find_assistant(services, principal_of(request), assistant_id)
    return _schemas(bot, graph_of(services, bot))


# -- threads --------------------------------------------------------------------------


async def _thread(request: Request[Any, Any, Any], services: Services, thread_id: str) -> tuple[Conversation, Bot]:
    return await find_thread(services, principal_of(request), thread_id)


async def _thread_out(services: Services, conversation: Conversation, bot: Bot) -> dict[str, Any]:
    busy = run_ops.registry(services).busy(conversation.id)
    try:
        graph = services.graphs.get(bot.graph)
    except UnknownGraph:  # its bot's graph is not installed here: the thread without its values
        return thread_out(conversation, bot, busy=busy)
    snapshot = await graph.aget_state(thread_config(bot, conversation.id))
    return thread_out(conversation, bot, busy=busy, snapshot=snapshot)


async def _bot_for_new_thread(services: Services, principal: Principal, body: ThreadCreate) -> Bot:
    """The bot a new thread is for: named in ``metadata`` (``assistant_id`` or ``graph_id``), else the only one.

    "The only one": the caller's only bot, or its only bot that enabled the ``langgraph`` channel.
    """
    metadata = body.metadata or {}
    hint = metadata.get("assistant_id") or metadata.get("graph_id") or body.graph_id
    if isinstance(hint, str) and hint:
        try:
            return await find_assistant(services, principal, hint)
        except NotFoundException:
            named = [b for b in await visible_bots(services, principal) if b.graph == hint]
            if len(named) == 1:
                return named[0]
            raise
    bots = await visible_bots(services, principal)
    if len(bots) > 1:  # the one bot that enabled the langgraph channel, if only one did
        bots = [b for b in bots if await services.inbound.bindings.of_bot(b, CHANNEL) is not None]
    if len(bots) != 1:
        raise refused(
            422, 'name the thread\'s bot: {"metadata": {"assistant_id": "<bot id>"}} (a thread is a conversation)'
        )
    return bots[0]


@post("/threads", status_code=200, **AUTH)
async def create_thread(request: Request[Any, Any, Any], services: ServicesDep) -> dict[str, Any]:
    """A new conversation of the ``langgraph`` channel (of the bot its metadata names)."""
    principal = principal_of(request)
    body = await body_of(request, ThreadCreate)
    if body.thread_id is not None:
        try:
            conversation, bot = await find_thread(services, principal, body.thread_id)
        except NotFoundException:
            raise refused(422, "botloom chooses thread ids: create the thread without one") from None
        if body.if_exists != "do_nothing":
            raise refused(409, f"thread {body.thread_id} exists")
        return await _thread_out(services, conversation, bot)
    bot = await _bot_for_new_thread(services, principal, body)
    await _binding(services, bot)
    conversation = await services.store.conversations.create(
        bot.tenant_id, bot.id, CHANNEL, "langgraph-user", state_version=services.runner.state_version(bot)
    )
    return thread_out(conversation, bot)


async def _binding(services: Services, bot: Bot) -> None:
    try:
        await run_ops.binding_of(services, bot)
    except run_ops.RunRefused as exc:
        raise refused(exc.status, exc.detail) from None


async def _threads(services: Services, principal: Principal, query: ThreadSearch) -> list[dict[str, Any]]:
    bots = {b.id: b for b in await visible_bots(services, principal)}
    tenants = sorted({b.tenant_id for b in bots.values()})
    wanted = query.offset + query.limit if query.ids is None else 10_000
    conversations: list[Conversation] = []
    for tenant in tenants:
        conversations += await services.store.conversations.list_all(tenant, None, limit=wanted)
    conversations.sort(key=lambda c: c.updated_at, reverse=True)
    if query.ids is not None:
        ids = set(query.ids)
        conversations = [c for c in conversations if c.id in ids]
    registry = run_ops.registry(services)
    found = []
    for conversation in conversations:
        bot = bots.get(conversation.bot_id)
        if bot is None:
            continue
        shown = thread_out(conversation, bot, busy=registry.busy(conversation.id))
        if matches(shown["metadata"], query.metadata) and query.status in (None, shown["status"]):
            found.append((conversation, bot))
    page = found[query.offset : query.offset + query.limit]
    return [await _thread_out(services, c, b) for c, b in page]


@post("/threads/search", status_code=200, **AUTH)
async def search_threads(request: Request[Any, Any, Any], services: ServicesDep) -> list[dict[str, Any]]:
    """The caller's conversations (every channel's), most recently active first, with their values."""
    return await _threads(services, principal_of(request), await body_of(request, ThreadSearch))


@post("/threads/count", status_code=200, **AUTH)
async def count_threads(request: Request[Any, Any, Any], services: ServicesDep) -> int:
    """How many of the caller's conversations match (among the 10,000 most recently active)."""
    query = await body_of(request, ThreadSearch)
    query.offset, query.limit = 0, 10_000
    bots = {b.id: b for b in await visible_bots(services, principal_of(request))}
    registry = run_ops.registry(services)
    total = 0
    for tenant in sorted({b.tenant_id for b in bots.values()}):
        for c in await services.store.conversations.list_all(tenant, None, limit=10_000):
            bot = bots.get(c.bot_id)
            if bot is None or (query.ids is not None and c.id not in query.ids):
                continue
            shown = thread_out(c, bot, busy=registry.busy(c.id))
            total += matches(shown["metadata"], query.metadata) and query.status in (None, shown["status"])
    return total


@get("/threads/{thread_id:str}", **AUTH)
async def get_thread(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> dict[str, Any]:
    """One conversation as a thread, with its values."""
    conversation, bot = await _thread(request, services, thread_id)
    return await _thread_out(services, conversation, bot)


def _config(bot: Bot, conversation: Conversation, checkpoint_id: str | None = None) -> Any:
    config = thread_config(bot, conversation.id)
    if checkpoint_id is not None:
        config["configurable"] |= {"checkpoint_ns": "", "checkpoint_id": checkpoint_id}
    return config


async def _state(services: Services, conversation: Conversation, bot: Bot, checkpoint_id: str | None) -> dict[str, Any]:
    snapshot = await graph_of(services, bot).aget_state(_config(bot, conversation, checkpoint_id))
    if checkpoint_id is not None and not has_checkpoint(snapshot):
        raise NotFoundException(f"no checkpoint {checkpoint_id[:200]!r} in thread {conversation.id}")
    return state_out(snapshot, conversation.id)


@get("/threads/{thread_id:str}/state", **AUTH)
async def get_state(request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]) -> dict[str, Any]:
    """The thread's latest state: values, next nodes, checkpoint, pending interrupts."""
    conversation, bot = await _thread(request, services, thread_id)
    return await _state(services, conversation, bot, None)


@get("/threads/{thread_id:str}/state/{checkpoint_id:str}", **AUTH)
async def get_state_at(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str], checkpoint_id: FromPath[str]
) -> dict[str, Any]:
    """The thread's state at one of its checkpoints."""
    conversation, bot = await _thread(request, services, thread_id)
    if len(checkpoint_id) > 200:
        raise NotFoundException("no such checkpoint")
    return await _state(services, conversation, bot, checkpoint_id)


@post("/threads/{thread_id:str}/state/checkpoint", status_code=200, **AUTH)
async def post_state_at(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> dict[str, Any]:
    """The thread's state at the checkpoint the body names."""
    conversation, bot = await _thread(request, services, thread_id)
    body = await body_of(request, StateAt)
    return await _state(services, conversation, bot, body.checkpoint.checkpoint_id)


@post("/threads/{thread_id:str}/state", status_code=200, **AUTH)
async def update_state(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> dict[str, Any]:
    """Change the thread's state as if ``as_node`` had run, from its latest or a given checkpoint (a fork).

    ``as_node="__copy__"`` with no values copies the checkpoint as the newest (Studio's
    "re-run from here"). Only threads of this API can be changed: another channel's
    conversation is a real end user's. Messages given in ``values`` are appended
    (the ``turn`` graph keeps a window of recent messages).
    """
    conversation, bot = await _thread(request, services, thread_id)
    body = await body_of(request, StateUpdate)
    if conversation.channel != CHANNEL:
        raise refused(409, f"thread {conversation.id} is a conversation of the {conversation.channel} channel")
    graph = graph_of(services, bot)
    nodes = set(graph.nodes) - {"__start__"}
    if body.as_node is not None and body.as_node != "__copy__" and body.as_node not in nodes:
        raise refused(422, f"as_node is one of {', '.join(sorted(nodes))} or __copy__")
    values = _checked_values(graph, body.values)
    checkpoint_id = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint else None)
    config = _config(bot, conversation, checkpoint_id)
    if checkpoint_id is not None and not has_checkpoint(await graph.aget_state(config)):
        raise NotFoundException(f"no checkpoint {checkpoint_id!r} in thread {conversation.id}")
    async with services.runner.locks.hold(conversation.id):
        try:
            updated = await graph.aupdate_state(config, values, as_node=body.as_node)
        except (ValueError, TypeError, KeyError) as exc:
            raise refused(422, f"the state update does not fit the graph: {exc}") from None
    configurable = updated.get("configurable", {})
    return {
        "checkpoint": {
            "thread_id": conversation.id,
            "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": configurable.get("checkpoint_id"),
            "checkpoint_map": None,
        }
    }


def _checked_values(graph: Any, values: dict[str, Any] | None) -> dict[str, Any] | None:
    """A state update's values in the graph's own form, checked against its state schema (422 naming the problem)."""
    if values is None:
        return None
    schema = getattr(getattr(graph, "builder", None), "state_schema", None)
    fields = set(getattr(schema, "__annotations__", {}) or ())
    unknown = sorted(set(values) - fields) if fields else []
    if unknown:
        raise refused(422, f"unknown state field {unknown[0]!r}")
    values = dict(values)
    if "messages" in values:
        try:
            values["messages"] = state_messages(values["messages"])
        except ValueError as exc:
            raise refused(422, f"invalid messages: {exc}") from None
    if schema is not None and fields:
        try:
            msgspec.convert(values, schema)
        except (msgspec.ValidationError, TypeError) as exc:
            raise refused(422, f"invalid values: {exc}") from None
    return values


def _before(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    configurable = value.get("configurable", value)
    found = configurable.get("checkpoint_id") if isinstance(configurable, dict) else None
    if found is not None and not isinstance(found, str):
        raise refused(422, "before names a checkpoint by its id")
    return found


async def _history(
    services: Services, conversation: Conversation, bot: Bot, query: HistoryQuery
) -> list[dict[str, Any]]:
    graph = graph_of(services, bot)
    before = _before(query.before)
    start = query.checkpoint.checkpoint_id if query.checkpoint is not None else None
    config = _config(bot, conversation, start)
    options: dict[str, Any] = {"limit": query.limit}
    if before is not None:
        options["before"] = _config(bot, conversation, before)
    if query.metadata:
        options["filter"] = jsonable(query.metadata)
    return [state_out(s, conversation.id) async for s in graph.aget_state_history(config, **options)]


@post("/threads/{thread_id:str}/history", status_code=200, **AUTH)
async def post_history(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> list[dict[str, Any]]:
    """The thread's states, newest first: ``limit`` of them, ``before`` a checkpoint to page back."""
    conversation, bot = await _thread(request, services, thread_id)
    return await _history(services, conversation, bot, await body_of(request, HistoryQuery))


@get("/threads/{thread_id:str}/history", **AUTH)
async def get_history(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> list[dict[str, Any]]:
    """The thread's states, newest first (``?limit=&before=``)."""
    conversation, bot = await _thread(request, services, thread_id)
    params = request.query_params
    raw = params.get("limit", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY:
        raise refused(422, f"limit is a number from 1 to {MAX_HISTORY}")
    query = HistoryQuery(limit=int(raw), before=params.get("before") or None)
    return await _history(services, conversation, bot, query)


# -- runs -----------------------------------------------------------------------------


async def _start(
    request: Request[Any, Any, Any], services: Services, thread_id: str | None
) -> tuple[run_ops.Run, RunCreate]:
    """Check a run request and start its turn (on a new thread when ``thread_id`` is ``None``)."""
    principal = principal_of(request)
    body = await body_of(request, RunCreate)
    problem = unsupported(body)
    if problem is not None:
        raise refused(422, f"not supported by botloom: {problem}")
    try:
        run_ops.stream_modes(body.stream_mode)
    except ValueError as exc:
        raise refused(422, str(exc)) from None
    if thread_id is None:
        bot = await find_assistant(services, principal, body.assistant_id)
        await _binding(services, bot)
        graph_of(services, bot)  # 404 before a conversation is made for a bot whose graph is not installed
        conversation = await services.store.conversations.create(
            bot.tenant_id, bot.id, CHANNEL, "langgraph-user", state_version=services.runner.state_version(bot)
        )
    else:
        conversation, bot = await _thread(request, services, thread_id)
        assistant = await find_assistant(services, principal, body.assistant_id)
        if assistant.id != bot.id:
            raise refused(409, f"thread {conversation.id} is a conversation of another assistant ({bot.id})")
    await _from_latest(services, bot, conversation, body)
    try:
        run = await run_ops.start(services, bot, conversation, body.input, metadata=body.metadata)
    except run_ops.RunRefused as exc:
        raise refused(exc.status, exc.detail) from None
    return run, body


async def _from_latest(services: Services, bot: Bot, conversation: Conversation, body: RunCreate) -> None:
    """422 unless the checkpoint a run names (if any) is the thread's newest: a turn runs on the newest state.

    What Studio does after editing a state (``POST /threads/{id}/state`` answers the new
    checkpoint, the next run names it) works; an older checkpoint is copied first.
    """
    wanted = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint is not None else None)
    if wanted is None:
        return
    latest = await graph_of(services, bot).aget_state(thread_config(bot, conversation.id))
    if (latest.config or {}).get("configurable", {}).get("checkpoint_id") != wanted:
        raise refused(
            422,
            "not supported by botloom: running from a checkpoint that is not the thread's newest; make it the newest "
            "with POST /threads/{id}/state (as_node '__copy__', checkpoint_id), then run",
        )


def _location(run: run_ops.Run) -> dict[str, str]:
    return {"Content-Location": f"/langgraph/threads/{run.thread_id}/runs/{run.run_id}"}


async def _create(request: Request[Any, Any, Any], services: Services, thread_id: str | None) -> Response[Any]:
    run, _ = await _start(request, services, thread_id)
    return Response(run.out(), headers=_location(run))


async def _wait(request: Request[Any, Any, Any], services: Services, thread_id: str | None) -> Response[Any]:
    run, _ = await _start(request, services, thread_id)
    await run_ops.finished(run)
    return Response(run_ops.final_values(run), headers=_location(run))


async def _stream(request: Request[Any, Any, Any], services: Services, thread_id: str | None) -> Stream:
    run, body = await _start(request, services, thread_id)
    modes = run_ops.stream_modes(body.stream_mode)
    headers = {**SSE_HEADERS, **_location(run)}
    return Stream(run_ops.stream(run, modes), media_type="text/event-stream", headers=headers)


@post("/threads/{thread_id:str}/runs", status_code=200, **AUTH)
async def create_run(request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]) -> Response[Any]:
    """Start a run (a turn) in the background; the run."""
    return await _create(request, services, thread_id)


@post("/runs", status_code=200, **AUTH)
async def create_stateless_run(request: Request[Any, Any, Any], services: ServicesDep) -> Response[Any]:
    """Start a run on a new thread of the assistant."""
    return await _create(request, services, None)


@post("/threads/{thread_id:str}/runs/wait", status_code=200, **AUTH)
async def wait_run(request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]) -> Response[Any]:
    """Run a turn and answer the thread's values after it."""
    return await _wait(request, services, thread_id)


@post("/runs/wait", status_code=200, **AUTH)
async def wait_stateless_run(request: Request[Any, Any, Any], services: ServicesDep) -> Response[Any]:
    """Run a turn on a new thread and answer its values."""
    return await _wait(request, services, None)


@post("/threads/{thread_id:str}/runs/stream", status_code=200, **AUTH)
async def stream_run(request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]) -> Stream:
    """Run a turn and stream its events (server-sent events)."""
    return await _stream(request, services, thread_id)


@post("/runs/stream", status_code=200, **AUTH)
async def stream_stateless_run(request: Request[Any, Any, Any], services: ServicesDep) -> Stream:
    """Run a turn on a new thread and stream its events."""
    return await _stream(request, services, None)


async def _run(
    request: Request[Any, Any, Any], services: Services, thread_id: str, run_id: str
) -> tuple[run_ops.Run | None, dict[str, Any], Conversation, Bot]:
    """The run of this thread: the one this process holds, else the one its stored message tells; 404 for none."""
    conversation, bot = await _thread(request, services, thread_id)
    held = run_ops.registry(services).get(run_id, conversation.id)
    if held is not None:
        return held, held.out(), conversation, bot
    stored = None
    if 0 < len(run_id) <= 200 and "\x00" not in run_id:
        stored = await services.store.messages.find(bot.tenant_id, bot.id, CHANNEL, "inbound", run_id)
    if stored is None or stored.conversation_id != conversation.id:
        raise NotFoundException(f"no run {run_id[:200]!r} in thread {conversation.id}")
    return None, run_from_message(stored, bot.id), conversation, bot


@get("/threads/{thread_id:str}/runs", **AUTH)
async def list_runs(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> list[dict[str, Any]]:
    """The thread's runs, newest first (``?limit=&offset=&status=``)."""
    conversation, bot = await _thread(request, services, thread_id)
    params = request.query_params
    limit, offset = params.get("limit", "10"), params.get("offset", "0")
    if not (limit.isdigit() and offset.isdigit() and 1 <= int(limit) <= 1000 and int(offset) <= 100_000):
        raise refused(422, "limit is a number from 1 to 1000, offset from 0")
    held = {r.run_id: r.out() for r in run_ops.registry(services).of_thread(conversation.id)}
    stored = await services.store.messages.list_all(bot.tenant_id, conversation.id, limit=100_000)
    runs = {
        m.idempotency_key: run_from_message(m, bot.id)
        for m in stored
        if m.direction == "inbound" and m.channel == CHANNEL and m.idempotency_key
    }
    runs |= held
    ordered = sorted(runs.values(), key=lambda r: r["created_at"] or "", reverse=True)
    status = params.get("status")
    ordered = [r for r in ordered if status in (None, r["status"])]
    return ordered[int(offset) : int(offset) + int(limit)]


@get("/threads/{thread_id:str}/runs/{run_id:str}", **AUTH)
async def get_run(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str], run_id: FromPath[str]
) -> dict[str, Any]:
    """One run of the thread."""
    _, shown, _, _ = await _run(request, services, thread_id, run_id)
    return shown


@get("/threads/{thread_id:str}/runs/{run_id:str}/join", **AUTH)
async def join_run(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str], run_id: FromPath[str]
) -> Any:
    """Wait for the run to finish; the thread's values after it."""
    held, shown, conversation, bot = await _run(request, services, thread_id, run_id)
    if held is not None:
        await run_ops.finished(held)
        return run_ops.final_values(held)
    await _settled(services, bot, conversation, run_id, shown)
    return (await _state(services, conversation, bot, None))["values"]


async def _settled(
    services: Services, bot: Bot, conversation: Conversation, run_id: str, shown: dict[str, Any]
) -> None:
    """Wait until a run another process runs is over: its stored message settles (or the turn's time is up)."""
    deadline = asyncio.get_running_loop().time() + 2 * services.settings.turn_timeout
    wait = 0.05
    while shown["status"] in ("pending", "running") and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(wait)
        wait = min(wait * 2, 1.0)
        stored = await services.store.messages.find(bot.tenant_id, bot.id, CHANNEL, "inbound", run_id)
        if stored is None or stored.conversation_id != conversation.id:
            return
        shown = run_from_message(stored, bot.id)


@get("/threads/{thread_id:str}/runs/{run_id:str}/stream", **AUTH)
async def join_stream(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str], run_id: FromPath[str]
) -> Stream:
    """The run's events (``?stream_mode=``), when it is over; a run of another process: its final values."""
    held, shown, conversation, bot = await _run(request, services, thread_id, run_id)
    try:
        asked = [m for m in request.query_params.getall("stream_mode", []) if m]
        modes = run_ops.stream_modes(asked or None)
    except ValueError as exc:
        raise refused(422, str(exc)) from None
    if held is None:
        snapshot = await graph_of(services, bot).aget_state(thread_config(bot, conversation.id))
        held = run_ops.Run(
            run_id=run_id,
            thread_id=conversation.id,
            assistant_id=bot.id,
            tenant_id=bot.tenant_id,
            metadata=shown["metadata"],
            status=shown["status"],
            before=snapshot,
            after=snapshot,
        )
    return Stream(run_ops.stream(held, modes), media_type="text/event-stream", headers=SSE_HEADERS)


@post("/threads/{thread_id:str}/runs/{run_id:str}/cancel", status_code=200, **AUTH)
async def cancel_run(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str], run_id: FromPath[str]
) -> dict[str, Any]:
    """Cancel a run still running in this process (its message is not run again); the run."""
    held, shown, _, _ = await _run(request, services, thread_id, run_id)
    if request.query_params.get("action", "interrupt") != "interrupt":
        raise refused(422, "not supported by botloom: action rollback (a turn's stored messages are kept)")
    if held is None:
        if shown["status"] in ("pending", "running"):
            raise refused(409, f"run {run_id} runs in another botloom process: cancel it there")
        return shown
    await run_ops.cancel(services, held)
    return held.out()


LANGGRAPH_HANDLERS = [
    info,
    ok,
    search_assistants,
    count_assistants,
    get_assistant,
    assistant_versions,
    assistant_graph,
    assistant_subgraphs,
    assistant_schemas,
    create_thread,
    search_threads,
    count_threads,
    get_thread,
    get_state,
    get_state_at,
    post_state_at,
    update_state,
    post_history,
    get_history,
    create_run,
    create_stateless_run,
    wait_run,
    wait_stateless_run,
    stream_run,
    stream_stateless_run,
    list_runs,
    get_run,
    join_run,
    join_stream,
    cancel_run,
]
