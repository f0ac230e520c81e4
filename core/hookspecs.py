"""The hook specifications: everything a botloom plugin can implement.

This module is the plugin author's reference. A plugin is a module (or an
object) with functions marked ``@botloom.hookimpl`` whose names are hook names
below; it is found through the ``botloom`` entry-point group::

    [project.entry-points.botloom]
    my_plugin = "my_package.plugin"

General rules:

* Every argument is passed by name; an implementation may accept only the
  arguments it needs (pluggy's rule).
* An implementation may be ``async def``: the host awaits it. A plain one runs
  in a worker thread, so a blocking call (a slow HTTP request) can be timed out.
* Every hook is called through pluggy, in pluggy's order: ``tryfirst``
  implementations first, then plain ones, then ``trylast`` ones; within each
  group, the plugin registered last first (botloom's built-ins are registered
  before installed plugins). ``wrapper=True`` (and old-style
  ``hookwrapper=True``) implementations wrap the call: they run in the host's
  hook worker thread, see every result and may change the list of results.
* The results of a call are the list of the implementations' non-``None``
  results in that order; each hook below says how the host combines them.
* A plugin's hooks must not take a turn down: an implementation that raises,
  times out (the per-turn hooks) or returns something the hook does not accept
  is recorded against its plugin and left out of the results; the call goes on.
  A wrapper that raises or does not yield is left out the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botloom.core.markers import hookspec

if TYPE_CHECKING:
    import msgspec

    from botloom.core.definitions import (
        ChannelAdapter,
        GraphDefinition,
        Intent,
        StateMigration,
        Tool,
        TurnSummary,
    )
    from botloom.core.domain import Bot
    from botloom.core.messages import InboundMessage, OutboundMessage, Refusal


@hookspec
def register_channels() -> list[ChannelAdapter[Any]]:
    """Return the channel adapters this plugin provides.

    Called once at start-up. Each adapter's ``name`` must be unique across all
    plugins; it serves the routes its ``routes()`` declares (a push channel's
    default is ``POST /channels/{name}/{bot}``). A bot uses a channel only after
    it enables the plugin that registered it.

    Results: every implementation's list, each adapter owned by the plugin that
    returned it. A name returned twice goes to the implementation that ranks
    first (``tryfirst``, then plain, then ``trylast``), between equals to the
    plugin loaded first; the other is reported as a problem naming both, unless
    it ranked lower (it gave way on purpose). Not a list: a problem.
    """


@hookspec
def register_tools() -> list[Tool]:
    """Return the tools this plugin provides.

    Called once at start-up. Tool names are global: two plugins registering the
    same name is an error that names both. A tool is visible to a bot's turns
    only when the bot enabled this plugin.

    Results: combined like ``register_channels`` (each tool owned by the plugin
    that returned it; a taken name goes to the implementation that ranks first).
    """


@hookspec
def register_intents() -> list[Intent]:
    """Return the intents this plugin provides.

    Called once at start-up. Intent names are global, like tool names. An
    intent's ``tools`` may name tools of other plugins; the bot must enable those
    plugins too, or the intent is answered without them.

    Results: combined like ``register_channels``.
    """


@hookspec
def register_graphs() -> list[GraphDefinition]:
    """Return named graph builders; a bot's ``graph`` setting picks one by name.

    Called once at start-up. botloom's own ``turn`` graph is registered through
    this hook too. Each builder returns an uncompiled LangGraph ``StateGraph``
    that the host compiles once per process with the configured checkpointer.

    Results: combined like ``register_channels``. The built-in ``turn`` plugin
    implements this hook with ``trylast``, so a plugin that returns its own
    ``GraphDefinition(name="turn", ...)`` replaces the default graph for every
    bot (and no problem is reported).
    """


@hookspec
def register_state_migrations() -> list[StateMigration]:
    """Return migrations that upgrade a graph's checkpointed state from an older version.

    Called once at start-up. A conversation checkpointed under an older
    ``state_version`` of its graph is upgraded, one version at a time, when its
    next turn starts. A migration that raises (or a missing step) is recorded and
    the conversation starts afresh: it never fails turn after turn.

    Results: combined like ``register_channels``; a migration's name is
    ``{graph}-v{from_version}``. The built-in ``turn`` plugin's migrations are
    ``trylast``, like its graph.
    """


@hookspec
def plugin_config_schema() -> type[msgspec.Struct] | None:
    """Return the msgspec Struct type that a bot's config of this plugin must satisfy.

    Called when a bot enables the plugin (and at start-up, for the plugin list).
    Return ``None`` (or do not implement the hook) for a plugin with no settings.
    Fields annotated with :data:`botloom.Secret` are stored encrypted and never
    returned by the API.

    Results: each plugin's own schema, kept for that plugin (one plugin's answer
    never applies to another). Anything but a Struct type or ``None``: a problem.
    """


@hookspec
def moderate_message(
    message: InboundMessage | OutboundMessage, bot: Bot
) -> InboundMessage | OutboundMessage | Refusal | None:
    """Inspect a message before it enters the graph and before a reply leaves.

    ``message`` is an ``InboundMessage`` on the way in and an ``OutboundMessage``
    on the way out. Return ``None`` to let it pass unchanged, a changed copy
    (for example with personal data masked; use ``msgspec.structs.replace``) to
    pass that on to the next plugin, or a ``Refusal`` to stop it; the end user
    then gets the refusal's reply or the bot's fallback. Called for every bot,
    whichever plugins it enabled: moderation is the deployment's policy.

    Results: a chain in pluggy's order. Each implementation gets ``message`` as
    the previous one left it; the first ``Refusal`` stops the message and the
    implementations after it are not called; otherwise the last changed copy
    goes on. A result of another type (an ``OutboundMessage`` for an inbound
    message, say), an exception or a time-out (``hook_timeout``, 5 s) is a
    problem recorded in the turn, and the message passes that plugin unchanged.
    A wrapper sees the list of results and may change it (append a ``Refusal``,
    drop one): the host combines the list it returns the same way.
    """


@hookspec
def on_turn_end(turn: TurnSummary) -> Any:
    """Observe a finished turn (analytics, audit, billing). The return value is ignored.

    Called after the replies were handed to the channel's delivery. An
    exception here is logged against the plugin and never reaches the end user.

    Results: ignored; every observer is called, in pluggy's order, each within
    the host's ``hook_timeout`` (5 s).
    """
