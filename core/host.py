"""The plugin host: discovers plugins, collects what they register, reports what went wrong.

Plugins are found through the ``botloom`` entry-point group; botloom's built-in
channels and plugins are declared in that group by botloom's own package
metadata, so they load exactly like a stranger's plugin.

Loading is robust: a plugin that fails to import, implements a hook with the
wrong arguments, raises in a ``register_*`` hook or returns a malformed
definition is recorded as a :class:`PluginProblem` with the plugin's name and
the reason, and the host carries on without that piece. Two plugins that
register the same tool, intent, channel or graph name are a problem naming both;
the first one loaded keeps the name.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import msgspec
import pluggy

from botloom.core import hookspecs
from botloom.core.aio import await_me_maybe
from botloom.core.definitions import (
    ChannelAdapter,
    DefinitionError,
    GraphDefinition,
    Intent,
    StateMigration,
    Tool,
    TurnSummary,
    check_name,
)
from botloom.core.domain import Bot
from botloom.core.markers import PROJECT_NAME
from botloom.core.messages import InboundMessage, OutboundMessage, Refusal

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
ESSENTIAL_PLUGINS = frozenset({"turn"})
"""Built-ins that an allow-list cannot switch off: the default graph."""

Kind = Literal["channel", "tool", "intent", "graph", "migration"]
REGISTER_HOOKS: dict[str, tuple[Kind, type]] = {
    "register_channels": ("channel", ChannelAdapter),
    "register_tools": ("tool", Tool),
    "register_intents": ("intent", Intent),
    "register_graphs": ("graph", GraphDefinition),
    "register_state_migrations": ("migration", StateMigration),
}


class PluginProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Something wrong with a plugin, reported instead of stopping the host."""

    plugin: str
    stage: str
    """``import``, ``register``, a hook name, or ``config``."""
    message: str


class PluginInfo(msgspec.Struct, kw_only=True):
    """What ``botloom plugins list`` shows about one plugin."""

    name: str
    version: str | None = None
    source: str
    """``builtin``, the distribution it came from (``pip:my-plugin``), or ``registered`` in code."""
    module: str
    hooks: list[str] = []
    kinds: list[Kind] = []
    channels: list[str] = []
    tools: list[str] = []
    intents: list[str] = []
    graphs: list[str] = []
    migrations: list[str] = []
    configurable: bool = False


@dataclass
class Registry:
    """Everything plugins registered, by name, with the owning plugin of each name."""

    channels: dict[str, ChannelAdapter] = field(default_factory=dict)
    tools: dict[str, Tool] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    graphs: dict[str, GraphDefinition] = field(default_factory=dict)
    migrations: dict[str, StateMigration] = field(default_factory=dict)
    owners: dict[tuple[Kind, str], str] = field(default_factory=dict)

    def table(self, kind: Kind) -> dict[str, Any]:
        """The name → definition mapping of one kind."""
        tables: dict[str, dict[str, Any]] = {
            "channel": self.channels,
            "tool": self.tools,
            "intent": self.intents,
            "graph": self.graphs,
            "migration": self.migrations,
        }
        return tables[kind]

    def owner(self, kind: Kind, name: str) -> str | None:
        """The plugin that registered ``name`` of ``kind``."""
        return self.owners.get((kind, name))


def create_plugin_manager() -> pluggy.PluginManager:
    """A fresh pluggy manager with botloom's hook specifications and nothing registered."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


class PluginHost:
    """Loads plugins, collects their definitions, and calls the per-turn hooks safely.

    Build one with :meth:`PluginHost.discover` (entry points) or the constructor
    plus :meth:`register` (tests); then ``await host.collect()``.
    """

    def __init__(self, *, hook_timeout: float = 5.0) -> None:
        self.pm = create_plugin_manager()
        self.registry = Registry()
        self.problems: list[PluginProblem] = []
        self.infos: dict[str, PluginInfo] = {}
        self.config_schemas: dict[str, type[msgspec.Struct] | None] = {}
        self.hook_timeout = hook_timeout
        self._collected = False

    # -- loading -----------------------------------------------------------------

    @classmethod
    def discover(cls, *, allow: Iterable[str] | None = None, block: Iterable[str] = ()) -> PluginHost:
        """Load every plugin of the ``botloom`` entry-point group.

        ``allow`` (``BOTLOOM_PLUGINS``) restricts loading to those names plus the
        essential built-ins; ``block`` names plugins never to load.
        """
        host = cls()
        allowed = None if allow is None else set(allow) | ESSENTIAL_PLUGINS
        blocked = set(block)
        seen: dict[str, str] = {}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_builtins_first):
            if ep.name in blocked or (allowed is not None and ep.name not in allowed):
                continue
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            source = "builtin" if dist_name == PROJECT_NAME else f"pip:{dist_name or '?'}"
            if ep.name in seen:
                if seen[ep.name] != source:
                    host._problem(
                        ep.name,
                        "import",
                        f"plugin name {ep.name!r} is declared by both {seen[ep.name]} and "
                        f"{source}; {seen[ep.name]} keeps it",
                    )
                continue
            seen[ep.name] = source
            version = dist.version if dist is not None else None
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's problem
                host._problem(ep.name, "import", f"cannot import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            host.register(plugin, ep.name, source=source, version=version)
        return host

    def register(self, plugin: object, name: str, *, source: str = "registered", version: str | None = None) -> bool:
        """Register one plugin object (a module or any object with hook functions).

        Returns ``False``, with a problem recorded, when pluggy refuses it (a hook
        implemented with arguments the specification does not have, a taken name).
        """
        if self._collected:
            raise RuntimeError("register plugins before collect()")
        try:
            check_name("plugin", name)
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._problem(name, "register", str(exc))
            return False
        hooks = sorted(self._hook_names(plugin))
        for hook in hooks:
            if getattr(self.pm.hook, hook).spec is None:
                self._problem(name, "register", f"implements unknown hook {hook!r} (misspelt?)")
        self.infos[name] = PluginInfo(
            name=name,
            version=version,
            source=source,
            module=getattr(plugin, "__name__", type(plugin).__name__),
            hooks=hooks,
        )
        return True

    def unregister(self, name: str) -> None:
        """Remove a plugin registered before :meth:`collect` (for tests)."""
        self.pm.unregister(name=name)
        self.infos.pop(name, None)

    def _hook_names(self, plugin: object) -> list[str]:
        return [caller.name for caller in self.pm.get_hookcallers(plugin) or []]

    async def collect(self) -> PluginHost:
        """Call every plugin's ``register_*`` and ``plugin_config_schema`` hooks, once."""
        if self._collected:
            return self
        self._collected = True
        for hook_name, (kind, expected) in REGISTER_HOOKS.items():
            for impl in sorted(getattr(self.pm.hook, hook_name).get_hookimpls(), key=self._registration_order):
                await self._collect_one(impl, hook_name, kind, expected)
        for impl in self.pm.hook.plugin_config_schema.get_hookimpls():
            await self._collect_schema(impl)
        return self

    def _registration_order(self, impl: pluggy.HookImpl) -> int:
        """Position of the implementing plugin in registration order (the first keeps a taken name)."""
        names = list(self.infos)
        return names.index(impl.plugin_name) if impl.plugin_name in names else len(names)

    def collect_sync(self) -> PluginHost:
        """:meth:`collect` for code with no running event loop (the command line)."""
        return asyncio.run(self.collect())

    async def _call_impl(self, impl: pluggy.HookImpl, hook_name: str) -> tuple[bool, Any]:
        try:
            return True, await await_me_maybe(impl.function())
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported, not raised
            self._problem(impl.plugin_name, hook_name, f"raised {type(exc).__name__}: {exc}")
            return False, None

    async def _collect_one(self, impl: pluggy.HookImpl, hook_name: str, kind: Kind, expected: type) -> None:
        plugin = impl.plugin_name
        ok, result = await self._call_impl(impl, hook_name)
        if not ok or result is None:
            return
        if not isinstance(result, (list, tuple)):
            self._problem(plugin, hook_name, f"must return a list of {expected.__name__}, got {type(result).__name__}")
            return
        table = self.registry.table(kind)
        info = self.infos.get(plugin)
        for item in result:
            if not isinstance(item, expected):
                self._problem(plugin, hook_name, f"returned {item!r}, which is not a {expected.__name__}")
                continue
            try:
                name = check_name(kind, getattr(item, "name", None))
            except DefinitionError as exc:
                self._problem(plugin, hook_name, str(exc))
                continue
            owner = self.registry.owner(kind, name)
            if owner is not None:
                self._problem(
                    plugin,
                    hook_name,
                    f"{kind} name {name!r} is registered by both {owner!r} and {plugin!r}; {owner!r} keeps it",
                )
                continue
            table[name] = item
            self.registry.owners[(kind, name)] = plugin
            if info is not None:
                getattr(info, f"{kind}s").append(name)
                if kind not in info.kinds:
                    info.kinds.append(kind)

    async def _collect_schema(self, impl: pluggy.HookImpl) -> None:
        plugin = impl.plugin_name
        ok, schema = await self._call_impl(impl, "plugin_config_schema")
        if not ok:
            return
        if schema is not None and not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
            self._problem(plugin, "plugin_config_schema", f"must return a msgspec.Struct type, got {schema!r}")
            return
        self.config_schemas[plugin] = schema
        if plugin in self.infos:
            self.infos[plugin].configurable = schema is not None

    def _problem(self, plugin: str, stage: str, message: str) -> None:
        logger.error("plugin %s: %s: %s", plugin, stage, message)
        self.problems.append(PluginProblem(plugin=plugin, stage=stage, message=message))

    # -- what a bot sees ---------------------------------------------------------

    @property
    def plugin_names(self) -> list[str]:
        """Names of the plugins that loaded."""
        return sorted(self.infos)

    def owned(self, kind: Kind, enabled: Iterable[str]) -> dict[str, Any]:
        """The definitions of ``kind`` registered by the ``enabled`` plugins only."""
        allowed = set(enabled)
        return {
            name: item for name, item in self.registry.table(kind).items() if self.registry.owner(kind, name) in allowed
        }

    def config_schema(self, plugin: str) -> type[msgspec.Struct] | None:
        """The config Struct of ``plugin``; ``None`` when it takes no config."""
        return self.config_schemas.get(plugin)

    # -- per-turn hooks ----------------------------------------------------------

    async def moderate(
        self, message: InboundMessage | OutboundMessage, bot: Bot
    ) -> tuple[InboundMessage | OutboundMessage | Refusal, list[PluginProblem]]:
        """Run ``moderate_message`` through every plugin in turn.

        A plugin that raises, times out or returns something else is skipped and
        reported; the message continues unchanged through the rest.
        """
        problems: list[PluginProblem] = []
        for impl in reversed(self.pm.hook.moderate_message.get_hookimpls()):
            try:
                result = await asyncio.wait_for(
                    _call_hook(impl, message=message, bot=bot),
                    self.hook_timeout,
                )
            except Exception as exc:  # noqa: BLE001
                problems.append(self._turn_problem(impl.plugin_name, "moderate_message", exc))
                continue
            if result is None:
                continue
            if isinstance(result, Refusal):
                return result, problems
            if isinstance(result, type(message)):
                message = result
                continue
            problems.append(
                self._turn_problem(impl.plugin_name, "moderate_message", TypeError(f"returned {type(result).__name__}"))
            )
        return message, problems

    async def notify_turn_end(self, turn: TurnSummary) -> list[PluginProblem]:
        """Run every ``on_turn_end`` observer; failures are logged and returned, never raised."""
        problems: list[PluginProblem] = []
        for impl in self.pm.hook.on_turn_end.get_hookimpls():
            try:
                await asyncio.wait_for(
                    _call_hook(impl, turn=turn),
                    self.hook_timeout,
                )
            except Exception as exc:  # noqa: BLE001
                problems.append(self._turn_problem(impl.plugin_name, "on_turn_end", exc))
        return problems

    def _turn_problem(self, plugin: str, hook: str, exc: BaseException) -> PluginProblem:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"raised {type(exc).__name__}: {exc}"
        logger.warning("plugin %s: %s %s", plugin, hook, reason)
        return PluginProblem(plugin=plugin, stage=hook, message=reason)


async def _call_hook(impl: pluggy.HookImpl, **available: Any) -> Any:
    """Call a per-turn hook implementation: ``async`` ones on the loop, plain ones in a thread.

    A blocking plain implementation can then be timed out without stalling every turn.
    """
    kwargs = _kwargs(impl, **available)
    if inspect.iscoroutinefunction(impl.function):
        return await impl.function(**kwargs)
    return await await_me_maybe(await asyncio.to_thread(impl.function, **kwargs))


def _builtins_first(ep: metadata.EntryPoint) -> tuple[bool, str]:
    """Sort key: botloom's own plugins load (and so keep their names) before others."""
    dist = ep.dist
    return (dist is None or dist.metadata["Name"] != PROJECT_NAME, ep.name)


def _kwargs(impl: pluggy.HookImpl, **available: Any) -> Mapping[str, Any]:
    """The arguments an implementation asked for (pluggy lets it take a subset)."""
    return {name: available[name] for name in impl.argnames}
