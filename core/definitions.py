"""What plugins register: tools, intents, channels and graphs.

These definitions are immutable msgspec Structs (channels are objects with
behaviour, so they subclass :class:`ChannelAdapter`). The plugin host checks
every definition a hook returns and reports malformed ones against the plugin.
"""

from __future__ import annotations

import abc
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import msgspec

from botloom.core.messages import InboundMessage, OutboundMessage

NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$"
"""Tool, intent, channel and graph names: a letter, then letters, digits, ``_`` or ``-`` (≤ 64).
This is also what OpenAI-compatible APIs accept as a function name."""


class DefinitionError(ValueError):
    """A plugin returned a definition botloom cannot use; the message says what is wrong."""


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid name for a ``kind``, else raise :class:`DefinitionError`."""
    if not isinstance(name, str) or re.fullmatch(NAME_PATTERN, name) is None:
        raise DefinitionError(
            f"{kind} name {name!r} is invalid: use a letter, then letters, digits, '_' or '-' (at most 64)"
        )
    return name


class ToolContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a tool may know about the turn that calls it.

    A tool handler receives it when it declares a parameter named ``context``.
    """

    tenant_id: str
    bot_id: str
    conversation_id: str
    config: Mapping[str, Any] = {}
    """The calling bot's validated config of the plugin that registered the tool."""
    idempotency_key: str = ""
    """Stable for this call across re-runs of the same turn: pass it on to systems with side
    effects so that a turn re-run after a crash does not act twice."""
    search_knowledge: Callable[[str, int], Awaitable[list[Any]]] | None = None
    """Search the calling bot's knowledge base: ``await context.search_knowledge(query, limit)``
    returns passages (``document``, ``title``, ``text``, ``score``), best first."""


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A callable ability with a typed argument schema.

    Build one with :meth:`Tool.from_function`, which derives the argument schema
    from the function's signature and its description from the docstring.
    """

    name: str
    description: str
    handler: Callable[..., Awaitable[Any]]
    """``async def handler(**arguments, context: ToolContext)``; ``context`` is optional."""
    arguments: type[msgspec.Struct]
    """A Struct type the model's arguments are validated against before the call."""
    timeout: float = 10.0
    """Seconds before the host gives up on the call and answers with the bot's fallback."""
    wants_context: bool = False

    def __post_init__(self) -> None:
        check_name("tool", self.name)
        if not self.description.strip():
            raise DefinitionError(f"tool {self.name!r} has no description")
        if not callable(self.handler):
            raise DefinitionError(f"tool {self.name!r}: handler is not callable")
        if not (isinstance(self.arguments, type) and issubclass(self.arguments, msgspec.Struct)):
            raise DefinitionError(f"tool {self.name!r}: arguments must be a msgspec.Struct type")
        if not self.timeout > 0:
            raise DefinitionError(f"tool {self.name!r}: timeout must be positive")

    @classmethod
    def from_function(
        cls,
        func: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = 10.0,
    ) -> Tool:
        """Make a tool from an ``async`` function: its name, docstring and typed parameters.

        Every parameter but ``context`` needs a type annotation; parameters with
        defaults are optional arguments.
        """
        if not inspect.iscoroutinefunction(func):
            raise DefinitionError(f"tool function {getattr(func, '__name__', func)!r} must be async")
        hints = typing.get_type_hints(func)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        wants_context = False
        for param in inspect.signature(func).parameters.values():
            if param.name == "context":
                wants_context = True
                continue
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                raise DefinitionError(f"tool {func.__name__!r}: *args/**kwargs are not supported")
            if param.name not in hints:
                raise DefinitionError(f"tool {func.__name__!r}: parameter {param.name!r} needs a type")
            if param.default is inspect.Parameter.empty:
                fields.append((param.name, hints[param.name]))
            else:
                fields.append((param.name, hints[param.name], param.default))
        arguments = msgspec.defstruct(f"{func.__name__}_arguments", fields, kw_only=True, forbid_unknown_fields=True)
        doc = inspect.getdoc(func) or ""
        return cls(
            name=name or func.__name__,
            description=description or doc.split("\n\n")[0].strip(),
            handler=func,
            arguments=arguments,
            timeout=timeout,
            wants_context=wants_context,
        )

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments, inlined, as function-calling APIs expect it."""
        (ref,), components = msgspec.json.schema_components([self.arguments], ref_template="#/$defs/{name}")
        root_name = str(ref.get("$ref", "")).rsplit("/", 1)[-1]
        schema = components.pop(root_name, ref)
        out = {k: v for k, v in schema.items() if k != "title"}
        out.setdefault("properties", {})
        if components:  # nested Structs and enums the arguments refer to
            out["$defs"] = components
        return out

    async def invoke(self, arguments: Mapping[str, Any], context: ToolContext) -> Any:
        """Validate ``arguments`` against the schema and call the handler.

        Raises ``msgspec.ValidationError`` for arguments that do not fit the schema.
        """
        parsed = msgspec.convert(dict(arguments), self.arguments, strict=False)
        kwargs = msgspec.structs.asdict(parsed)
        if self.wants_context:
            kwargs["context"] = context
        return await self.handler(**kwargs)


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    """A value an intent needs from the user's words (an order number, a date)."""

    name: str
    description: str = ""
    pattern: str | None = None
    """A regular expression the offline engine uses to fill the slot; its first group (or the
    whole match) is the value."""
    required: bool = False
    prompt: str | None = None
    """The question asked when a required slot is missing."""

    def __post_init__(self) -> None:
        check_name("slot", self.name)
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise DefinitionError(f"slot {self.name!r}: bad pattern: {exc}") from exc


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    """Something a user can want, with examples, slots and what serves it."""

    name: str
    description: str
    examples: tuple[str, ...] = ()
    """Sample user messages; the offline engine classifies by similarity to these."""
    slots: tuple[Slot, ...] = ()
    tools: tuple[str, ...] = ()
    """Names of tools to run for this intent (each gets the filled slots as arguments)."""
    answer: str | None = None
    """A reply template; ``{slot}`` and ``{result}`` (the first tool's result) are filled in."""
    escalate: bool = False
    """This intent asks for a person: the turn ends in ``escalate``."""

    def __post_init__(self) -> None:
        check_name("intent", self.name)
        if not self.description.strip():
            raise DefinitionError(f"intent {self.name!r} has no description")
        for tool in self.tools:
            check_name("tool", tool)
        names = [slot.name for slot in self.slots]
        if len(set(names)) != len(names):
            raise DefinitionError(f"intent {self.name!r} declares a slot twice")


class GraphDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """A named graph a bot can run its turns with."""

    name: str
    description: str
    build: Callable[[], Any]
    """Returns an uncompiled LangGraph ``StateGraph``; the host compiles it once per process
    with the configured checkpointer."""
    state_version: int = 1
    """The version of the graph's state shape; bump it, and register a :class:`StateMigration`
    from the previous version, when the shape changes."""

    def __post_init__(self) -> None:
        check_name("graph", self.name)
        if not callable(self.build):
            raise DefinitionError(f"graph {self.name!r}: build is not callable")
        if self.state_version < 1:
            raise DefinitionError(f"graph {self.name!r}: state_version starts at 1")


class StateMigration(msgspec.Struct, frozen=True, kw_only=True):
    """Upgrades a graph's checkpointed state from one version to the next.

    When a conversation's state is older than its graph's ``state_version``, the
    host applies the migrations in order at the start of its next turn.
    """

    graph: str
    from_version: int
    migrate: Callable[[dict[str, Any]], dict[str, Any]]
    """Takes the old state's values and returns the new ones (a new dict)."""
    description: str = ""

    def __post_init__(self) -> None:
        check_name("graph", self.graph)
        if self.from_version < 1:
            raise DefinitionError("from_version starts at 1")
        if not callable(self.migrate):
            raise DefinitionError(f"migration of {self.graph!r} from {self.from_version}: migrate is not callable")

    @property
    def name(self) -> str:
        """``{graph}-v{from_version}``: one migration per graph and version."""
        return f"{self.graph}-v{self.from_version}"


class ChannelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An inbound HTTP request as a channel sees it, independent of the web framework."""

    method: str
    url: str
    """The public URL the provider called (what Twilio signs), as the host reconstructs it."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    form: Mapping[str, str] = {}
    """The parsed ``application/x-www-form-urlencoded`` body, when it was one."""
    subpath: str = ""
    """What follows the bot in the channel route (``inbound``, ``status``), without slashes."""


class ChannelResponse(msgspec.Struct, frozen=True, kw_only=True):
    """What the host answers the provider's request with."""

    status: int = 200
    body: bytes = b""
    media_type: str = "text/plain"


class ChannelRejected(Exception):
    """A channel refuses an inbound request (bad signature, malformed body); nothing is stored."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


AcceptMessage = Callable[[InboundMessage], Awaitable[object]]
"""How a polling channel hands a fetched message to the host (see :meth:`ChannelAdapter.poll`)."""
ReportDelivery = Callable[[Mapping[str, Any]], Awaitable[bool]]
"""How a polling channel hands the host a report on a message it sent, as ``{"status", "provider_id",
"ref", "error"}`` (a bounce found in a mailbox); the host answers whether it named a stored message."""


class ChannelAdapter(abc.ABC):
    """Translates between one messaging channel's wire format and botloom's messages.

    A channel plugin returns instances from ``register_channels``. The adapter holds
    no per-bot state: each call gets the bot's validated channel config.
    """

    name: ClassVar[str]
    """The channel's name: its route is ``/channels/{name}/{bot}``."""
    max_text_length: ClassVar[int | None] = None
    """Longest text one outbound message may carry; longer replies are split by the host."""
    delivery: ClassVar[str] = "push"
    """``push``: replies are sent with :meth:`send` (through the job queue, with retries);
    ``response``: replies go back in the answer to the inbound request or on its open
    connection (REST and web chat), and :meth:`send` is not used."""

    @abc.abstractmethod
    def verify(self, request: ChannelRequest, config: Any) -> None:
        """Check the request's signature or secret; raise :class:`ChannelRejected` (403) if forged."""

    @abc.abstractmethod
    def parse(self, request: ChannelRequest, config: Any) -> list[InboundMessage]:
        """Turn a verified request into messages; raise :class:`ChannelRejected` (400) if malformed.

        An empty list means the request carries no message (a status callback, an auto-reply).
        """

    def acknowledge(
        self, request: ChannelRequest, replies: list[OutboundMessage] | None, config: Any
    ) -> ChannelResponse:
        """The answer to the provider's request; ``replies`` is set when they go in this answer."""
        return ChannelResponse(status=200)

    max_request_bytes: ClassVar[int] = 1_048_576
    """Largest webhook body the host reads for this channel; a larger one is refused with 413."""

    @abc.abstractmethod
    async def send(self, message: OutboundMessage, config: Any) -> str | None:
        """Deliver one message; return the provider's id for it. Raise to have it retried."""

    def polls(self, config: Any) -> bool:
        """Whether the host should call :meth:`poll` for a bot with this config (a mailbox to read)."""
        return False

    async def poll(
        self, config: Any, cursor: Mapping[str, Any], accept: AcceptMessage, report: ReportDelivery
    ) -> dict[str, Any]:
        """Fetch the messages that arrived since ``cursor``; return the new cursor.

        The host calls this about once a minute, never twice at once for one bot,
        for channels that fetch messages instead of receiving webhooks (IMAP). Hand
        each message to ``await accept(message)``: when it returns, the message is
        stored and its turn queued, so only then mark it fetched at the provider.
        A fetched report on a message the bot sent (a bounce) goes to ``await
        report({...})``, in the shape of the ``delivery_report`` webhooks return.
        The cursor is the channel's own JSON-serialisable bookmark, ``{}`` at
        first; it is stored after each poll, so a restarted host resumes from it.
        Raise to report a failed poll (it is logged and tried again next time).
        """
        raise NotImplementedError(f"the {self.name} channel does not poll")


class TurnSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What ``on_turn_end`` observers receive about a finished turn."""

    tenant_id: str
    bot_id: str
    conversation_id: str
    turn_id: str
    channel: str
    intent: str | None
    confidence: float
    replies: tuple[str, ...]
    escalated: bool
    errors: tuple[str, ...] = ()
    latency_ms: float = 0.0
