"""What plugins register: tools, intents, channels and graphs.

These definitions are immutable msgspec Structs (channels are objects with
behaviour, so they subclass :class:`ChannelAdapter`, whose contract lives in
:mod:`botloom.core.channels` and is re-exported here). The plugin host checks
every definition a hook returns and reports malformed ones against the plugin.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from botloom.core.channels import (
    AcceptMessage,
    Capabilities,
    ChannelAdapter,
    ChannelConversation,
    ChannelHost,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    ChannelRoute,
    ChannelSocket,
    ConversationUpdate,
    DeliveryReport,
    DeliveryStatus,
    HistoryMessage,
    ReportDelivery,
    SendError,
    SocketClosed,
    TurnAnswer,
    TurnReply,
)

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
    dry_run: bool = False
    """True when the turn is a debug run (a fork or a replay of a conversation, see ``docs/debugger-actions.md``):
    nothing it produces reaches the end user, so a tool with side effects (booking, refunding, e-mailing) should
    describe what it would do instead of doing it."""


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


__all__ = [
    "NAME_PATTERN",
    "AcceptMessage",
    "Capabilities",
    "ChannelAdapter",
    "ChannelConversation",
    "ChannelHost",
    "ChannelKind",
    "ChannelRejected",
    "ChannelRequest",
    "ChannelResponse",
    "ChannelRoute",
    "ChannelSocket",
    "ConversationUpdate",
    "DefinitionError",
    "DeliveryReport",
    "DeliveryStatus",
    "GraphDefinition",
    "HistoryMessage",
    "Intent",
    "ReportDelivery",
    "SendError",
    "Slot",
    "SocketClosed",
    "StateMigration",
    "Tool",
    "ToolContext",
    "TurnAnswer",
    "TurnReply",
    "TurnSummary",
    "check_name",
]
