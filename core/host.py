"""The plugin host: discovers plugins, collects what they register, calls their hooks through pluggy.

Plugins are found through the ``botloom`` entry-point group; botloom's built-in
channels and plugins are declared in that group by botloom's own package
metadata, so they load exactly like a stranger's plugin.

Loading is robust: a plugin that fails to import, implements a hook with the
wrong arguments, raises in a ``register_*`` hook or returns a malformed
definition is recorded as a :class:`PluginProblem` with the plugin's name and
the reason, and the host carries on without that piece.

Every hook is called through pluggy (``pm.hook.<name>(...)``), so pluggy's call
order (the last registered first, ``tryfirst``/``trylast``), wrappers
(``wrapper=True`` and old-style ``hookwrapper=True``) and call monitoring apply
as plugin authors know them. pluggy itself is synchronous; the host makes it
safe for ``async`` plugins and for plugins that misbehave like this:

* pluggy holds an adapter of each implementation, not the plugin's function. The
  host runs the pluggy call in a worker thread; each adapter hands its
  implementation to the event loop (``async def`` ones are awaited there, plain
  ones run in a thread of their own), waits at most the host's timeout, and
  turns an exception, a time-out or an unacceptable result into a
  :class:`PluginProblem` against that plugin, so pluggy moves on to the next
  implementation. A wrapper therefore sees the real results of the
  implementations it wraps.
* A call with no wrapper and nothing monitoring pluggy's calls (the per-turn
  moderation and ``on_turn_end`` of most deployments) needs no worker thread:
  the host runs pluggy's call loop itself on the event loop, with the same
  order, isolation and time limits (:meth:`PluginHost._direct`).
* A wrapper's adapter contains a wrapper that raises, does not yield or yields
  twice: the call goes on as if the wrapper were not there, and the problem
  names the wrapper's plugin. Wrappers run in the worker thread and cannot be
  interrupted; a call that outlives the sum of its implementations' limits is
  given up on (what is left of it runs nothing more) and its wrappers reported.
* A name that several ``register_*`` implementations return goes to the one that
  ranks first (``tryfirst``, plain, ``trylast``), between equals to the plugin
  loaded first (see :meth:`PluginHost.collect`).
* ``BOTLOOM_TRACE_PLUGINS=1`` (:attr:`PluginHost.trace`) logs every
  implementation's call (plugin, hook, time, outcome) and every hook call
  (through pluggy's ``add_hookcall_monitoring``: the hook, its arguments
  summarized, the plugins in call order, time, result).

Versions: a plugin states the botloom versions it supports as its
distribution's requirement on ``botloom`` (``botloom>=0.1,<0.3`` in its
``pyproject.toml``). pip enforces it, but a plugin installed with ``--no-deps``,
editable, or before an upgrade of botloom may still be on the path: discovery
refuses (does not import) a plugin whose specifier excludes the running
botloom, records a ``version`` problem naming both, and loads the others.
botloom's own plugins are exempt. A hook specification marked with pluggy's
``warn_on_impl`` or ``warn_on_impl_args`` (a deprecated hook or argument)
warns when a plugin implementing it registers: the warning is logged, kept in
the plugin's :class:`PluginInfo` and issued again at the plugin's own function.

Called directly, outside the host (``host.pm.hook.on_turn_end(turn=...)``), an
adapter simply calls the plugin's function and returns what it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import msgspec
import pluggy
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

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

HOOK_THREADS = 32
"""Worker threads that run pluggy's (synchronous) hook calls; a call waits for a free one."""

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


PluginStatus = Literal["loaded", "refused", "failed"]


class PluginInfo(msgspec.Struct, kw_only=True):
    """What ``botloom plugins list`` shows about one plugin."""

    name: str
    status: PluginStatus = "loaded"
    """``loaded``; ``refused`` (its supported botloom versions exclude the running one: not imported);
    ``failed`` (it could not be imported or pluggy refused it). See the plugin's problems for why."""
    version: str | None = None
    source: str
    """``builtin``, the distribution it came from (``pip:my-plugin``), or ``registered`` in code."""
    distribution: str | None = None
    """The distribution that declares it (``botloom`` for the built-ins); ``None`` for one registered in code."""
    supports: str | None = None
    """The botloom versions it supports: its distribution's specifier on ``botloom`` (``>=0.1,<0.3``);
    ``""`` for any version, ``None`` when it declares no requirement on botloom (or is built in)."""
    module: str
    hooks: list[str] = []
    kinds: list[Kind] = []
    channels: list[str] = []
    tools: list[str] = []
    intents: list[str] = []
    graphs: list[str] = []
    migrations: list[str] = []
    configurable: bool = False
    warnings: list[str] = []
    """Deprecation warnings its hook implementations raised at registration (pluggy's ``warn_on_impl``)."""


class HookResults(msgspec.Struct, frozen=True, kw_only=True):
    """What one hook call through :meth:`PluginHost.call` gave."""

    results: list[Any]
    """pluggy's answer: the implementations' results that are not ``None``, in pluggy's call
    order, as the hook's wrappers left them (for a ``firstresult`` hook, a list of at most one)."""
    problems: list[PluginProblem]
    """The implementations that raised, timed out or returned something unacceptable."""


@dataclass
class Registry:
    """Everything plugins registered, by name, with the owning plugin of each name."""

    channels: dict[str, ChannelAdapter[Any]] = field(default_factory=dict)
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


@functools.cache
def running_version() -> str:
    """The version of the botloom that is running (its installed distribution's metadata; read once)."""
    try:
        return metadata.version(PROJECT_NAME)
    except metadata.PackageNotFoundError:  # a bare checkout on sys.path, not installed
        return "0"


def supported_versions(dist: metadata.Distribution | None) -> str | None:
    """The specifier on ``botloom`` of a distribution's requirements (``>=0.1,<0.3``).

    Requirements that apply only to an extra (``botloom[...]; extra == "test"``) or
    to another Python do not count; several that apply are combined. ``""`` means
    any version; ``None``, that the distribution does not require botloom at all.
    """
    if dist is None:
        return None
    combined: SpecifierSet | None = None
    for line in dist.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # not readable, so not one pip enforces either
        if canonicalize_name(requirement.name) != PROJECT_NAME:
            continue
        if requirement.marker is not None and not _applies(requirement.marker):
            continue
        combined = requirement.specifier if combined is None else combined & requirement.specifier
    return None if combined is None else str(combined)


def _applies(marker: Marker) -> bool:
    """Whether a requirement's marker holds here for a plain install (no extra)."""
    try:
        return marker.evaluate({"extra": ""})
    except Exception:  # noqa: BLE001 - an unreadable marker: count the requirement, as the safer side
        return True


def version_refusal(supports: str | None, running: str) -> str | None:
    """Why a plugin supporting ``supports`` cannot load on botloom ``running``; ``None`` when it can.

    A pre-release or development build of botloom counts as its version (``0.2.0.dev1``
    satisfies ``>=0.1``), so a checkout of the next release still loads the plugins.
    """
    if not supports:
        return None
    try:
        specifier = SpecifierSet(supports)
    except ValueError:
        return f"its requirement on botloom ({supports!r}) cannot be read: not loaded"
    if specifier.contains(running, prereleases=True):
        return None
    return f"supports botloom{supports}, but botloom {running} is running: not loaded"


def create_plugin_manager() -> pluggy.PluginManager:
    """A fresh pluggy manager with botloom's hook specifications and nothing registered."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


class PluginHost:
    """Loads plugins, collects their definitions, and calls their hooks through pluggy, safely.

    Build one with :meth:`PluginHost.discover` (entry points) or the constructor
    plus :meth:`register` (tests); then ``await host.collect()``.
    """

    def __init__(self, *, hook_timeout: float = 5.0, trace: bool = False) -> None:
        self.pm = create_plugin_manager()
        self.registry = Registry()
        self.problems: list[PluginProblem] = []
        self.infos: dict[str, PluginInfo] = {}
        """The plugins that loaded."""
        self.unloaded: dict[str, PluginInfo] = {}
        """Plugins discovered but not loaded: ``refused`` for their botloom versions, or ``failed``."""
        self.botloom_version = running_version()
        self.config_schemas: dict[str, type[msgspec.Struct] | None] = {}
        self.hook_timeout = hook_timeout
        self._collected = False
        self._plugins: dict[str, object] = {}
        """name -> the plugin object as it was registered (pluggy holds its adapter)."""
        self._adapters: dict[str, _Adapted] = {}
        self._untrace: Callable[[], None] | None = None
        self._trace_started: dict[int, float] = {}
        self._plain_hookexec = getattr(self.pm, "_inner_hookexec", _NO_HOOKEXEC)
        """pluggy's own call loop, before anything monitors the calls (see :meth:`_direct`)."""
        self.trace = trace

    # -- loading -----------------------------------------------------------------

    @classmethod
    def discover(
        cls,
        *,
        allow: Iterable[str] | None = None,
        block: Iterable[str] = (),
        trace: bool = False,
        botloom_version: str | None = None,
    ) -> PluginHost:
        """Load every plugin of the ``botloom`` entry-point group.

        ``allow`` (``BOTLOOM_PLUGINS``) restricts loading to those names plus the
        essential built-ins; ``block`` names plugins never to load; ``trace``
        (``BOTLOOM_TRACE_PLUGINS``) logs every hook call. A plugin whose
        distribution's specifier on ``botloom`` excludes the running version
        (``botloom_version``, default: the installed one) is refused, not imported.
        """
        host = cls(trace=trace)
        if botloom_version is not None:
            host.botloom_version = botloom_version
        allowed = None if allow is None else set(allow) | ESSENTIAL_PLUGINS
        blocked = set(block)
        seen: dict[str, str] = {}
        facts = _DistributionFacts()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=facts.builtins_first):
            if ep.name in blocked or (allowed is not None and ep.name not in allowed):
                continue
            dist = ep.dist
            dist_name, dist_version = facts.name_and_version(dist)
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
            info = PluginInfo(
                name=ep.name,
                version=dist_version,
                source=source,
                distribution=dist_name,
                supports=None if source == "builtin" else supported_versions(dist),
                module=ep.value,
            )
            refusal = version_refusal(info.supports, host.botloom_version)
            if refusal is not None:
                host._problem(ep.name, "version", refusal)
                host.unloaded[ep.name] = msgspec.structs.replace(info, status="refused")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's problem
                host._problem(ep.name, "import", f"cannot import {ep.value!r}: {type(exc).__name__}: {exc}")
                host.unloaded[ep.name] = msgspec.structs.replace(info, status="failed")
                continue
            if not host.register(plugin, ep.name, source=source, version=info.version):
                host.unloaded[ep.name] = msgspec.structs.replace(info, status="failed")
                continue
            host.infos[ep.name].distribution = info.distribution
            host.infos[ep.name].supports = info.supports
        return host

    def register(self, plugin: object, name: str, *, source: str = "registered", version: str | None = None) -> bool:
        """Register one plugin object (a module or any object with hook functions).

        Returns ``False``, with a problem recorded, when pluggy refuses it (a hook
        implemented with arguments the specification does not have, a taken name).
        A deprecated hook or argument it implements (pluggy's ``warn_on_impl``,
        ``warn_on_impl_args``) is logged, listed in its :class:`PluginInfo` and warned
        again at the plugin's own function.
        """
        if self._collected:
            raise RuntimeError("register plugins before collect()")
        try:
            check_name("plugin", name)
            for other, registered in self._plugins.items():
                if registered is plugin:
                    raise ValueError(f"this plugin object is already registered as {other!r}")
            adapted = self._adapt(plugin, name)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.pm.register(adapted, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._problem(name, "register", str(exc))
            return False
        self._plugins[name] = plugin
        self._adapters[name] = adapted
        hooks = sorted(caller.name for caller in self.pm.get_hookcallers(adapted) or [])
        for hook in hooks:
            if getattr(self.pm.hook, hook).spec is None:
                self._problem(name, "register", f"implements unknown hook {hook!r} (misspelt?)")
        self.infos[name] = PluginInfo(
            name=name,
            version=version,
            source=source,
            module=getattr(plugin, "__name__", type(plugin).__name__),
            hooks=hooks,
            warnings=[str(warning.message) for warning in caught],
        )
        for warning in caught:
            logger.warning("plugin %s: %s", name, warning.message)
        for warning in caught:
            _warn_at_plugin(warning, adapted, self.pm.get_hookcallers(adapted) or [])
        return True

    def unregister(self, name: str) -> None:
        """Remove a plugin registered before :meth:`collect` (for tests)."""
        self.pm.unregister(name=name)
        self.infos.pop(name, None)
        self._plugins.pop(name, None)
        self._adapters.pop(name, None)

    def _adapt(self, plugin: object, name: str) -> _Adapted:
        """The object pluggy registers for ``plugin``: an adapter of each of its hook implementations."""
        adapted = _Adapted(name)
        for attribute in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, attribute)
            if opts is None:
                continue
            function = getattr(plugin, attribute)
            if opts.get("wrapper") or opts.get("hookwrapper"):
                if not inspect.isgeneratorfunction(function):
                    raise pluggy.PluginValidationError(
                        plugin, f"hook {attribute!r} is declared a wrapper but is not a generator function"
                    )
                adapter = _wrapper_adapter(name, function, old_style=bool(opts.get("hookwrapper")))
            else:
                adapter = _adapter(name, function)
            setattr(adapter, f"{PROJECT_NAME}_impl", opts)
            setattr(adapted, attribute, adapter)
        return adapted

    async def collect(self) -> PluginHost:
        """Call the ``register_*`` and ``plugin_config_schema`` hooks, once.

        Each ``register_*`` hook is one pluggy call; each definition it returns is
        owned by the plugin whose implementation returned it. A name claimed twice
        goes to the implementation marked ``tryfirst``, else to a plain one, else
        to a ``trylast`` one; between equals, to the plugin loaded first (the
        others are reported as problems naming both). So a plugin replaces a
        built-in's definition only when the built-in yields it with ``trylast``
        (the ``turn`` graph does) or the plugin claims it with ``tryfirst``.
        """
        if self._collected:
            return self
        self._collected = True
        for hook_name, (kind, expected) in REGISTER_HOOKS.items():
            await self._collect_kind(hook_name, kind, expected)
        await self._collect_schemas()
        return self

    async def close_channels(self) -> None:
        """Let each channel close what it keeps open (:meth:`ChannelAdapter.aclose`), at the process's shutdown.

        A channel that fails to close is logged; the others are closed all the same.
        """
        for name, adapter in self.registry.channels.items():
            try:
                await adapter.aclose()
            except Exception:
                logger.exception("the %s channel failed to close", name)

    def collect_sync(self) -> PluginHost:
        """:meth:`collect` for code with no running event loop (the command line)."""
        return asyncio.run(self.collect())

    async def _collect_kind(self, hook_name: str, kind: Kind, expected: type) -> None:
        def check(result: object) -> str | None:
            if result is None or isinstance(result, (list, tuple)):
                return None
            return f"must return a list of {expected.__name__}, got {type(result).__name__}"

        call = await self._call(hook_name, {}, limit=None, check=check)
        self._keep(call.problems)
        impls = {impl.plugin_name: impl for impl in self._caller(hook_name).get_hookimpls()}
        owners_of_lists = {id(returned): plugin for plugin, returned in call.returned}
        owners_of_items: dict[int, str] = {}
        for plugin, returned in call.returned:
            for item in returned:
                owners_of_items.setdefault(id(item), plugin)
        load_order = {name: index for index, name in enumerate(self.infos)}
        claims: list[tuple[int, int, str, object]] = []
        for returned in self._results_list(call):
            if not isinstance(returned, (list, tuple)):
                self._keep(self._wrapper_problems(call, f"wrappers left {returned!r} among the results, not a list"))
                continue
            for item in returned:
                owner = owners_of_lists.get(id(returned)) or owners_of_items.get(id(item))
                if owner is None:
                    message = f"a wrapper added {item!r}, which no implementation returned; it is ignored"
                    self._keep(self._wrapper_problems(call, message))
                    continue
                claims.append((_priority(impls.get(owner)), load_order.get(owner, len(load_order)), owner, item))
        claims.sort(key=lambda claim: claim[:2])
        for priority, _, plugin, item in claims:
            self._claim(kind, expected, item, hook_name=hook_name, plugin=plugin, priority=priority, impls=impls)

    def _claim(
        self,
        kind: Kind,
        expected: type,
        item: object,
        *,
        hook_name: str,
        plugin: str,
        priority: int,
        impls: Mapping[str, pluggy.HookImpl],
    ) -> None:
        """Record ``item`` as ``plugin``'s, unless it is malformed or its name is taken."""
        if not isinstance(item, expected):
            self._problem(plugin, hook_name, f"returned {item!r}, which is not a {expected.__name__}")
            return
        try:
            name = check_name(kind, getattr(item, "name", None))
        except DefinitionError as exc:
            self._problem(plugin, hook_name, str(exc))
            return
        owner = self.registry.owner(kind, name)
        if owner is not None:
            if _priority(impls.get(owner)) < priority:
                logger.info("plugin %s: %s %r gives way to plugin %s's (hook ranks first)", plugin, kind, name, owner)
            else:
                self._problem(
                    plugin,
                    hook_name,
                    f"{kind} name {name!r} is registered by both {owner!r} and {plugin!r}; {owner!r} keeps it",
                )
            return
        self.registry.table(kind)[name] = item
        self.registry.owners[(kind, name)] = plugin
        info = self.infos.get(plugin)
        if info is not None:
            getattr(info, f"{kind}s").append(name)
            if kind not in info.kinds:
                info.kinds.append(kind)

    async def _collect_schemas(self) -> None:
        def check(schema: object) -> str | None:
            if schema is None or (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
                return None
            return f"must return a msgspec.Struct type, got {schema!r}"

        call = await self._call("plugin_config_schema", {}, limit=None, check=check)
        self._keep(call.problems)
        kept = self._results_list(call)
        for plugin, schema in call.returned:
            if schema is not None and not any(result is schema for result in kept):
                continue  # a wrapper took it out
            self.config_schemas[plugin] = schema
            if plugin in self.infos:
                self.infos[plugin].configurable = schema is not None

    def _problem(self, plugin: str, stage: str, message: str) -> None:
        logger.error("plugin %s: %s: %s", plugin, stage, message)
        self.problems.append(PluginProblem(plugin=plugin, stage=stage, message=message))

    def _keep(self, problems: Iterable[PluginProblem]) -> None:
        """Record problems of start-up hooks against their plugins."""
        for problem in problems:
            self._problem(problem.plugin, problem.stage, problem.message)

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

    # -- calling hooks -----------------------------------------------------------

    @property
    def trace(self) -> bool:
        """Whether every hook call is logged (``BOTLOOM_TRACE_PLUGINS``), at INFO level."""
        return self._untrace is not None

    @trace.setter
    def trace(self, on: bool) -> None:
        if on and self._untrace is None:
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)  # the setting asks for these lines: a quieter log level keeps them
            self._untrace = self.pm.add_hookcall_monitoring(self._trace_before, self._trace_after)
        elif not on and self._untrace is not None:
            self._untrace()
            self._untrace = None

    def _trace_before(self, hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        self._trace_started[id(kwargs)] = time.perf_counter()

    def _trace_after(
        self,
        outcome: pluggy.Result[object],
        hook_name: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, object],
    ) -> None:
        ms = (time.perf_counter() - self._trace_started.pop(id(kwargs), time.perf_counter())) * 1000
        order = ", ".join(impl.plugin_name for impl in reversed(impls)) or "no implementation"
        if outcome.exception is not None:
            result = f"raised {type(outcome.exception).__name__}: {outcome.exception}"
        else:
            result = _describe(outcome.get_result())
        logger.info("hook %s(%s): called %s in %.2f ms: %s", hook_name, _summarize_arguments(kwargs), order, ms, result)

    async def call(
        self, hook_name: str, arguments: Mapping[str, Any], *, plugins: Iterable[str] | None = None
    ) -> HookResults:
        """Call any hook through pluggy, with the host's timeout and isolation.

        ``plugins`` restricts the call to those plugins' implementations (pluggy's
        ``subset_hook_caller``), for hooks a bot answers only through the plugins
        it enabled. Results and problems are returned; nothing is raised.
        """
        call = await self._call(hook_name, dict(arguments), limit=self.hook_timeout, plugins=plugins)
        problems = self._turn_problems(call)
        return HookResults(results=self._results_list(call), problems=problems)

    async def moderate(
        self, message: InboundMessage | OutboundMessage, bot: Bot
    ) -> tuple[InboundMessage | OutboundMessage | Refusal, list[PluginProblem]]:
        """Run ``moderate_message`` through every plugin, in pluggy's order.

        Each implementation gets the message as the previous one left it; the
        first ``Refusal`` stops the message, and the implementations after it are
        not called. One that raises, times out or returns something else is
        skipped and reported; the message continues unchanged through the rest.
        """
        kind = type(message)

        def check(result: object) -> str | None:
            if result is None or isinstance(result, (Refusal, kind)):
                return None
            return f"returned {type(result).__name__}"

        call = await self._call(
            "moderate_message",
            {"message": message, "bot": bot},
            limit=self.hook_timeout,
            check=check,
            chain="message",
        )
        problems = self._turn_problems(call)
        moderated: InboundMessage | OutboundMessage = message
        for result in self._results_list(call):
            if isinstance(result, Refusal):
                return result, problems
            if isinstance(result, kind):
                moderated = result
            else:
                problems.extend(self._wrapper_problems(call, f"wrappers left a {type(result).__name__} in the results"))
        return moderated, problems

    async def notify_turn_end(self, turn: TurnSummary) -> list[PluginProblem]:
        """Run every ``on_turn_end`` observer; failures are logged and returned, never raised."""
        call = await self._call("on_turn_end", {"turn": turn}, limit=self.hook_timeout)
        return self._turn_problems(call)

    def _caller(self, hook_name: str, plugins: Iterable[str] | None = None) -> pluggy.HookCaller:
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        if plugins is None:
            return caller
        keep = set(plugins)
        return self.pm.subset_hook_caller(hook_name, [a for n, a in self._adapters.items() if n not in keep])

    async def _call(
        self,
        hook_name: str,
        arguments: dict[str, Any],
        *,
        limit: float | None,
        check: Callable[[object], str | None] | None = None,
        chain: str | None = None,
        plugins: Iterable[str] | None = None,
    ) -> _Call:
        """One pluggy call of ``hook_name``, run in a worker thread while its adapters use this loop.

        ``limit`` is each implementation's time limit (``None``: none).
        """
        caller = self._caller(hook_name, plugins)
        impls = caller.get_hookimpls()
        call = _Call(
            hook=hook_name,
            loop=asyncio.get_running_loop(),
            timeout=limit,
            trace=self.trace,
            check=check,
            chain=chain,
            current=arguments.get(chain) if chain else None,
            wrappers=[impl.plugin_name for impl in impls if impl.wrapper or impl.hookwrapper],
            first_result=bool(caller.spec is not None and caller.spec.opts.get("firstresult")),
        )
        if not impls:
            # Nothing to run: pluggy would answer [] (or None) at once; traced, ask it, so the call is logged.
            call.results = caller(**arguments) if call.trace else None if call.first_result else []
            return call
        direct = self._direct(impls, arguments)
        if direct is not None:
            await call.run_directly(direct, arguments)
            return call
        context = contextvars.copy_context()
        context.run(_CURRENT.set, call)
        future = _hook_threads().submit(context.run, functools.partial(caller, **arguments))
        # Each implementation is timed out by its adapter; this only catches a wrapper that blocks.
        guard = None if limit is None else limit * (len(impls) + 1) + 1.0
        try:
            call.results = await asyncio.wait_for(asyncio.wrap_future(future), guard)
        except TimeoutError:
            call.results = []
            call.problems.extend(self._wrapper_problems(call, f"the hook call did not finish in {guard:g}s"))
        except Exception as exc:
            if not call.wrappers:
                raise  # not a plugin's doing: adapters catch what implementations raise
            call.results = []
            call.problems.extend(self._wrapper_problems(call, f"raised {type(exc).__name__}: {exc}"))
        finally:
            # Given up on (or cancelled with its turn): what is left of it in the worker thread runs nothing more.
            call.abandoned = True
        return call

    def _direct(
        self, impls: Sequence[pluggy.HookImpl], arguments: Mapping[str, Any]
    ) -> list[tuple[pluggy.HookImpl, Callable[..., Any]]] | None:
        """The implementations with their plugins' functions, when the call needs no worker thread.

        A call whose implementations are all plain (no wrapper) adapters of the host,
        given every argument they take, with nothing monitoring pluggy's calls (no
        trace, no ``add_hookcall_monitoring``, no ``enable_tracing``), is what pluggy's
        call loop would do: each implementation in pluggy's order (the reverse of
        ``get_hookimpls()``), results that are not ``None`` collected, the first one
        ending a ``firstresult`` hook. The host runs that loop itself on the event loop
        (:meth:`_Call.run_directly`), sparing two thread hops per implementation; any
        other call goes through pluggy in a worker thread.
        """
        if getattr(self.pm, "_inner_hookexec", None) is not self._plain_hookexec:
            return None
        direct: list[tuple[pluggy.HookImpl, Callable[..., Any]]] = []
        for impl in impls:
            function = getattr(impl.function, _PLAIN_FUNCTION, None)
            if function is None or impl.wrapper or impl.hookwrapper:
                return None
            if any(name not in arguments for name in impl.argnames):
                return None  # pluggy reports the missing argument
            direct.append((impl, function))
        return direct

    def _results_list(self, call: _Call) -> list[Any]:
        """The answer of pluggy as a list; anything else (a wrapper returned it) is reported against the wrappers."""
        if call.first_result:
            return [] if call.results is None else [call.results]
        if isinstance(call.results, list):
            return call.results
        if call.results is not None:
            call.problems.extend(self._wrapper_problems(call, f"wrappers made the result {call.results!r}, not a list"))
        return []

    @staticmethod
    def _wrapper_problems(call: _Call, message: str) -> list[PluginProblem]:
        return [PluginProblem(plugin=plugin, stage=call.hook, message=message) for plugin in call.wrappers or ["?"]]

    @staticmethod
    def _turn_problems(call: _Call) -> list[PluginProblem]:
        for problem in call.problems:
            logger.warning("plugin %s: %s %s", problem.plugin, problem.stage, problem.message)
        return list(call.problems)


# -- adapters ------------------------------------------------------------------------


class _Adapted:
    """What pluggy holds for one plugin: an adapter of each of its hook implementations."""

    def __init__(self, name: str) -> None:
        self._plugin_name = name

    def __repr__(self) -> str:
        return f"<plugin {self._plugin_name!r}>"


@dataclass
class _Call:
    """One hook call, shared by the adapters of its implementations (through :data:`_CURRENT`)."""

    hook: str
    loop: asyncio.AbstractEventLoop
    timeout: float | None
    trace: bool
    check: Callable[[object], str | None] | None = None
    """Returns why a result is unacceptable, or ``None`` to accept it."""
    chain: str | None = None
    """The argument each implementation gets as the previous one returned it (``moderate_message``)."""
    current: Any = None
    stopped: bool = False
    """A ``Refusal`` ended the chain: later implementations are not called."""
    abandoned: bool = False
    """The host no longer waits for this call: implementations not yet called are skipped."""
    wrappers: list[str] = field(default_factory=list)
    first_result: bool = False
    """The hook is ``firstresult``: pluggy answers one value (or ``None``), not a list."""
    problems: list[PluginProblem] = field(default_factory=list)
    returned: list[tuple[str, Any]] = field(default_factory=list)
    """(plugin, result) of every accepted result, in call order."""
    results: Any = None

    def run(
        self,
        plugin: str,
        function: Callable[..., Any],
        signature: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call one implementation on the loop and wait for it, in the worker thread; never raises."""
        if self.stopped or self.abandoned:
            return None
        if self.chain is not None and signature is not None:
            bound = signature.bind(*args, **kwargs)
            if self.chain in bound.arguments:
                bound.arguments[self.chain] = self.current
            args, kwargs = bound.args, bound.kwargs
        began = time.perf_counter()
        guarded = self._guarded(function, args, kwargs)
        try:
            future = asyncio.run_coroutine_threadsafe(guarded, self.loop)
        except RuntimeError as exc:  # the loop is closed
            guarded.close()
            self.fail(plugin, f"not called: {exc}", began)
            return None
        try:
            result = future.result(None if self.timeout is None else self.timeout + 1.0)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported, not raised
            future.cancel()
            self.fail(plugin, _reason(exc), began)
            return None
        return self.accept(plugin, result, began)

    async def run_directly(
        self, impls: Sequence[tuple[pluggy.HookImpl, Callable[..., Any]]], arguments: Mapping[str, Any]
    ) -> None:
        """The call loop of pluggy for plain implementations, run on the event loop (see :meth:`PluginHost._direct`)."""
        results: list[Any] = []
        try:
            for impl, function in reversed(impls):
                if self.stopped:
                    break
                args = tuple(self.current if name == self.chain else arguments[name] for name in impl.argnames)
                result = await self.run_here(impl.plugin_name, function, args)
                if result is not None:
                    results.append(result)
                    if self.first_result:
                        break
        finally:
            self.abandoned = True
        self.results = (results[0] if results else None) if self.first_result else results

    async def run_here(self, plugin: str, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """:meth:`run` on the event loop: call one implementation within the time limit; never raises."""
        began = time.perf_counter()
        try:
            result = await asyncio.wait_for(_invoke(function, args, {}), self.timeout)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported, not raised
            self.fail(plugin, _reason(exc), began)
            return None
        return self.accept(plugin, result, began)

    def accept(self, plugin: str, result: Any, began: float) -> Any:
        """Check one implementation's result and follow it (the chain, a ``Refusal``); the result or ``None``."""
        reason = self.check(result) if self.check is not None else None
        if reason is not None:
            self.fail(plugin, reason, began)
            return None
        if self.chain is not None and result is not None:
            if isinstance(result, Refusal):
                self.stopped = True
            else:
                self.current = result
        self.returned.append((plugin, result))
        self.log(plugin, _describe(result), began)
        return result

    async def _guarded(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _CURRENT.set(None)  # a hook called from inside this implementation is a call of its own
        return await asyncio.wait_for(_invoke(function, args, kwargs), self.timeout)

    def wrap(
        self,
        plugin: str,
        function: Callable[..., Any],
        old_style: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Generator[None, Any, Any]:
        """Run one wrapper around the rest of the call; a wrapper that fails is left out, not raised."""
        if self.abandoned:
            return (yield)
        began = time.perf_counter()
        try:
            teardown = function(*args, **kwargs)
            next(teardown)
        except StopIteration:
            self.fail(plugin, "wrapper did not yield", began)
            return (yield)
        except Exception as exc:  # noqa: BLE001
            self.fail(plugin, _reason(exc), began)
            return (yield)
        try:
            inner = yield
        except BaseException as exc:
            # Something inside raised: the wrapper may handle it, as pluggy lets it.
            try:
                teardown.throw(exc)
            except StopIteration as stop:
                return stop.value
            teardown.close()
            raise
        try:
            teardown.send(inner)
        except StopIteration as stop:
            self.log(plugin, "wrapped the call", began)
            return inner if old_style else stop.value
        except Exception as exc:  # noqa: BLE001
            self.fail(plugin, _reason(exc), began)
            return inner
        teardown.close()
        self.fail(plugin, "wrapper yielded more than once", began)
        return inner

    def fail(self, plugin: str, reason: str, began: float) -> None:
        """Record a problem against ``plugin``."""
        self.problems.append(PluginProblem(plugin=plugin, stage=self.hook, message=reason))
        self.log(plugin, reason, began)

    def log(self, plugin: str, outcome: str, began: float) -> None:
        """The trace line of one implementation's call (``BOTLOOM_TRACE_PLUGINS``)."""
        if self.trace:
            ms = (time.perf_counter() - began) * 1000
            logger.info("plugin %s: hook %s: %s in %.2f ms", plugin, self.hook, outcome, ms)


_PLAIN_FUNCTION = f"_{PROJECT_NAME}_function"
"""The attribute of a plain implementation's adapter that holds the plugin's own function."""
_NO_HOOKEXEC = object()
"""Stands for pluggy's call loop when pluggy keeps it elsewhere: then every call goes through pluggy."""

_CURRENT: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("botloom_hook_call", default=None)
"""The hook call the adapters in this thread belong to; ``None`` outside :meth:`PluginHost._call`."""


def _adapter(plugin: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """What pluggy calls for a plain (non-wrapper) implementation."""
    try:
        signature: inspect.Signature | None = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(function)
    def adapter(*args: Any, **kwargs: Any) -> Any:
        call = _CURRENT.get()
        if call is None:
            return function(*args, **kwargs)
        return call.run(plugin, function, signature, args, kwargs)

    setattr(adapter, _PLAIN_FUNCTION, function)
    return adapter


def _wrapper_adapter(plugin: str, function: Callable[..., Any], *, old_style: bool) -> Callable[..., Any]:
    """What pluggy calls for a wrapper: a generator too, delegating to the plugin's."""

    @functools.wraps(function)
    def adapter(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        call = _CURRENT.get()
        if call is None:
            return (yield from function(*args, **kwargs))
        return (yield from call.wrap(plugin, function, old_style, args, kwargs))

    return adapter


async def _invoke(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call an implementation: ``async`` ones on the loop, plain ones in a thread.

    A blocking plain implementation can then be timed out without stalling every turn.
    """
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    return await await_me_maybe(await asyncio.to_thread(function, *args, **kwargs))


@functools.cache
def _hook_threads() -> ThreadPoolExecutor:
    """The worker threads of pluggy calls (not the loop's default executor, which the implementations use)."""
    return ThreadPoolExecutor(max_workers=HOOK_THREADS, thread_name_prefix="botloom-hooks")


def _priority(impl: pluggy.HookImpl | None) -> int:
    """0 for ``tryfirst``, 1 for a plain implementation, 2 for ``trylast``."""
    if impl is None:
        return 1
    return 0 if impl.tryfirst else 2 if impl.trylast else 1


def _reason(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else f"raised {type(exc).__name__}: {exc}"


def _describe(result: object) -> str:
    """A short account of a result for the trace."""
    if result is None:
        return "returned nothing"
    if isinstance(result, (list, tuple)):
        return f"returned {len(result)} result{'' if len(result) == 1 else 's'}"
    return f"returned {type(result).__name__}"


def _summarize_arguments(arguments: Mapping[str, object]) -> str:
    """The arguments of a hook call for the trace: names and kinds, never an end user's words."""
    return ", ".join(f"{name}={_summarize(value)}" for name, value in arguments.items())


def _summarize(value: object) -> str:
    """One argument in a few words: its type and what identifies it (a name, a channel), sizes of the rest."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (str, bytes)):
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"{type(value).__name__}[{len(value)}]"
    details = []
    for attribute in ("name", "slug", "channel", "intent"):
        found = getattr(value, attribute, None)
        if isinstance(found, str) and found:
            details.append(f"{attribute}={found}")
    text = getattr(value, "text", None)
    if isinstance(text, str):
        details.append(f"text[{len(text)}]")
    return f"{type(value).__name__}({', '.join(details)})" if details else type(value).__name__


def _warn_at_plugin(warning: warnings.WarningMessage, adapted: _Adapted, callers: Iterable[pluggy.HookCaller]) -> None:
    """Warn again, at the plugin's own function (pluggy points at the host's adapter of it)."""
    filename, lineno = warning.filename, warning.lineno
    for caller in callers:
        spec = caller.spec
        if spec is None:
            continue
        deprecations = [spec.warn_on_impl, *(spec.warn_on_impl_args or {}).values()]
        if not any(warning.message is deprecation for deprecation in deprecations):
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is not adapted:
                continue
            code = getattr(inspect.unwrap(impl.function), "__code__", None)
            if code is not None:
                filename, lineno = code.co_filename, code.co_firstlineno
        break
    warnings.warn_explicit(warning.message, warning.category, filename, lineno)


class _DistributionFacts:
    """The name and version of each distribution, its metadata parsed once per discovery.

    Every ``dist.metadata`` (and ``dist.version``) reads and parses the distribution's
    METADATA file again; botloom's own dozen plugins share one distribution.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[metadata.Distribution, str | None, str | None]] = {}

    def name_and_version(self, dist: metadata.Distribution | None) -> tuple[str | None, str | None]:
        """``(Name, Version)`` of ``dist`` from its metadata, ``(None, None)`` without one."""
        if dist is None:
            return None, None
        known = self._known.get(id(dist))
        if known is None:
            meta = dist.metadata
            known = self._known[id(dist)] = (dist, meta["Name"], meta["Version"])  # dist kept: its id stays its own
        return known[1], known[2]

    def builtins_first(self, ep: metadata.EntryPoint) -> tuple[bool, str]:
        """Sort key: botloom's own plugins load (and so keep their names) before others."""
        return (self.name_and_version(ep.dist)[0] != PROJECT_NAME, ep.name)
