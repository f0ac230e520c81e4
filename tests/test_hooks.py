"""Hooks are called through pluggy: its call order, ``tryfirst``/``trylast``, wrappers and tracing apply,
and a plugin that fails inside a call is still isolated and reported against that plugin.

The plugins here are throw-away objects, none of them built in; one of them replaces the
built-in ``turn`` graph, which gives way with ``trylast``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Generator
from types import SimpleNamespace
from typing import Any

import msgspec
import pluggy
import pytest
from langgraph.graph import END, START, StateGraph

import botloom.graphs.plugin as builtin_turn_plugin
from botloom import (
    GraphDefinition,
    InboundMessage,
    Refusal,
    StateMigration,
    Tool,
    TurnContext,
    TurnState,
    hookimpl,
    hookspec,
)
from botloom.core.host import PluginHost, PluginProblem
from botloom.core.settings import Settings, load_settings
from botloom.graphs.registry import GraphRegistry
from botloom.runtime.services import open_services
from botloom.server.demo import ensure_demo
from tests.helpers import Chat, host_with
from tests.test_plugin_host import (
    INBOUND,
    TURN,
    Recorder,
    _hang,
    _mask,
    _raise,
    echo,
    good_plugin,
    good_plugin_renamed,
    host_of,
    make_bot,
    plugin,
)

# --------------------------------------------------------------------------- call order


def recording_plugin(calls: list[tuple[str, str]], name: str, **options: bool) -> SimpleNamespace:
    """A plugin implementing three hooks (one of them async) that records each call."""

    def moderate_message(message: Any) -> None:
        calls.append(("moderate_message", name))

    def on_turn_end(turn: Any) -> None:
        calls.append(("on_turn_end", name))

    async def register_intents() -> list[Any]:
        calls.append(("register_intents", name))
        return []

    mark = hookimpl(**options)
    return SimpleNamespace(
        moderate_message=mark(moderate_message), on_turn_end=mark(on_turn_end), register_intents=mark(register_intents)
    )


async def test_every_hook_is_called_in_pluggys_order() -> None:
    """tryfirst first, trylast last, and otherwise the plugin registered last first: the same for every hook."""
    calls: list[tuple[str, str]] = []
    host = await host_of(
        ("plain_a", recording_plugin(calls, "plain_a")),
        ("last", recording_plugin(calls, "last", trylast=True)),
        ("first", recording_plugin(calls, "first", tryfirst=True)),
        ("plain_b", recording_plugin(calls, "plain_b")),
    )
    await host.moderate(INBOUND, make_bot())
    await host.notify_turn_end(TURN)
    order = ["first", "plain_b", "plain_a", "last"]
    for hook in ("register_intents", "moderate_message", "on_turn_end"):
        assert [name for called, name in calls if called == hook] == order, hook
    assert host.problems == []


async def test_a_subset_of_plugins_can_be_called() -> None:
    calls: list[tuple[str, str]] = []
    host = await host_of(*[(name, recording_plugin(calls, name)) for name in ("one", "two", "three")])
    outcome = await host.call("on_turn_end", {"turn": TURN}, plugins=["one", "three"])
    assert outcome.problems == []
    assert [name for hook, name in calls if hook == "on_turn_end"] == ["three", "one"]


async def test_a_firstresult_hook_answers_the_first_result_as_a_list_of_one() -> None:
    """No botloom hook is ``firstresult`` yet; :meth:`PluginHost.call` handles one already."""
    calls: list[str] = []

    def pick(name: str) -> Callable[[str], str]:
        def pick_reply(text: str) -> str:
            calls.append(name)
            return f"{name}: {text}"

        return pick_reply

    host = PluginHost()
    host.pm.add_hookspecs(SimpleNamespace(pick_reply=hookspec(firstresult=True)(lambda text: None)))
    host.register(plugin(pick_reply=pick("early")), "early")
    host.register(plugin(pick_reply=pick("late")), "late")
    await host.collect()
    outcome = await host.call("pick_reply", {"text": "hi"})
    assert (outcome.results, outcome.problems, calls) == (["late: hi"], [], ["late"])


async def test_plain_implementations_are_called_on_the_loop_without_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call of plain implementations only is pluggy's loop run by the host: no worker thread, no thread hop.

    The per-turn hooks (moderation in and out, ``on_turn_end``) then cost about what
    calling the plugins costs (it was ten times that through a worker thread).
    """

    def no_threads() -> None:
        raise AssertionError("a worker thread was asked for")

    monkeypatch.setattr("botloom.core.host._hook_threads", no_threads)
    seen: list[str] = []

    async def moderate_message(message: Any) -> Any:
        seen.append(message.text)
        return msgspec.structs.replace(message, text=message.text.upper())

    def on_turn_end(turn: Any) -> None:
        seen.append("ended")

    first = plugin(moderate_message=moderate_message)
    second = plugin(moderate_message=lambda message: msgspec.structs.replace(message, text=message.text + "!"))
    host = await host_of(("second", second), ("first", first), ("observer", plugin(on_turn_end=on_turn_end)))
    moderated, problems = await host.moderate(INBOUND, make_bot())
    assert (moderated.text, problems) == (INBOUND.text.upper() + "!", [])
    assert await host.notify_turn_end(TURN) == []
    assert seen == [INBOUND.text, "ended"]


async def test_a_call_monitored_through_pluggy_goes_through_pluggy() -> None:
    """``add_hookcall_monitoring`` (a plugin author's, not only the host's trace) sees every call."""
    calls: list[tuple[str, str]] = []
    host = await host_of(("one", recording_plugin(calls, "one")))
    monitored: list[str] = []
    undo = host.pm.add_hookcall_monitoring(lambda name, impls, kwargs: monitored.append(name), lambda *args: None)
    await host.moderate(INBOUND, make_bot())
    undo()
    await host.notify_turn_end(TURN)
    assert monitored == ["moderate_message"]
    assert [hook for hook, _ in calls if hook != "register_intents"] == ["moderate_message", "on_turn_end"]


async def test_a_hook_called_outside_the_host_calls_the_plugins_functions() -> None:
    """``host.pm.hook.<name>(...)`` still works: the adapters just call the functions."""
    host = await host_of(("one", plugin(on_turn_end=lambda turn: turn.turn_id)))
    assert host.pm.hook.on_turn_end(turn=TURN) == [TURN.turn_id]


# --------------------------------------------------------------------------- names claimed twice


async def answer(state: TurnState) -> dict[str, Any]:
    """The one node of the replacement graph."""
    return {"replies": [REPLY]}


def build_replacement() -> StateGraph[Any, Any, Any, Any]:
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(TurnState, context_schema=TurnContext)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph


REPLY = "a plugin's own turn graph answered"
REPLACEMENT = GraphDefinition(name="turn", description="A test plugin's turn graph.", build=build_replacement)
MIGRATION = StateMigration(graph="turn", from_version=1, migrate=dict, description="the replacement's own step")


def replacing_plugin() -> SimpleNamespace:
    """A plugin (not built in) that brings its own ``turn`` graph and ``turn`` migration."""
    return plugin(register_graphs=lambda: [REPLACEMENT], register_state_migrations=lambda: [MIGRATION])


async def test_a_plugin_replaces_the_builtin_turn_graph_which_is_trylast() -> None:
    # The built-in is registered first, as discovery does: between equals it would keep the name.
    host = await host_of(("turn", builtin_turn_plugin), ("my_graphs", replacing_plugin()))
    assert host.problems == [], "giving way with trylast is no problem"
    assert host.registry.graphs["turn"] is REPLACEMENT
    assert host.registry.owner("graph", "turn") == "my_graphs"
    assert host.registry.migrations["turn-v1"] is MIGRATION
    assert host.infos["turn"].graphs == []
    assert host.infos["my_graphs"].graphs == ["turn"]
    graphs = GraphRegistry(host, None)
    assert graphs.names() == ["turn"]
    assert graphs.owner("turn") == "my_graphs"
    assert (await graphs.get("turn").ainvoke({"replies": []}))["replies"] == [REPLY]


async def test_tryfirst_claims_a_name_a_plain_plugin_registered() -> None:
    def claimant(description: str, **options: bool) -> SimpleNamespace:
        tools = hookimpl(**options)(lambda: [Tool.from_function(echo, description=description)])
        return SimpleNamespace(register_tools=tools)

    host = await host_of(("plain", claimant("plain's")), ("eager", claimant("eager's", tryfirst=True)))
    assert host.registry.owner("tool", "echo") == "eager"
    assert host.registry.tools["echo"].description == "eager's"
    assert host.problems == []


async def test_the_turn_graph_of_a_plugin_answers_a_bots_turns(settings: Settings, database_url: str) -> None:
    host = host_with(("my_graphs", replacing_plugin()))
    async with open_services(settings, url=database_url, host=host) as services:
        assert host.problems == []
        demo = await ensure_demo(services)
        result = await Chat(services, demo.bot).say("hello")
        assert [reply.text for reply in result.replies] == [REPLY]


# --------------------------------------------------------------------------- wrappers


def wrapper(function: Callable[..., Generator[Any, Any, Any]]) -> SimpleNamespace:
    """A plugin whose only hook implementation is ``function`` (marked as a wrapper), under its own name."""
    return SimpleNamespace(**{function.__name__: function})


async def test_a_wrapper_sees_the_results_and_can_change_them() -> None:
    seen: list[tuple[str, list[Any]]] = []

    @hookimpl(wrapper=True)
    def moderate_message(message: InboundMessage) -> Generator[None, list[Any], list[Any]]:
        results = yield
        seen.append((message.text, list(results)))
        return [*results, Refusal(reason="wrapped", reply="No.")]

    host = await host_of(("masker", plugin(moderate_message=_mask)), ("refuser", wrapper(moderate_message)))
    result, problems = await host.moderate(INBOUND, make_bot())
    assert seen == [(INBOUND.text, [_mask(INBOUND)])]
    assert result == Refusal(reason="wrapped", reply="No.")
    assert problems == []


async def test_a_wrapper_that_passes_the_results_on_changes_nothing() -> None:
    @hookimpl(wrapper=True)
    def moderate_message() -> Generator[None, list[Any], list[Any]]:
        return (yield)

    host = await host_of(("masker", plugin(moderate_message=_mask)), ("passer", wrapper(moderate_message)))
    assert await host.moderate(INBOUND, make_bot()) == (_mask(INBOUND), [])


async def test_an_old_style_hookwrapper_sees_the_outcome_and_can_force_a_result() -> None:
    seen: list[Any] = []

    @hookimpl(hookwrapper=True)
    def on_turn_end() -> Generator[None, pluggy.Result[Any], None]:
        outcome = yield
        seen.append(outcome.get_result())

    @hookimpl(hookwrapper=True)
    def moderate_message() -> Generator[None, pluggy.Result[Any], None]:
        outcome = yield
        outcome.force_result([Refusal(reason="forced")])

    host = await host_of(
        ("observer", plugin(on_turn_end=lambda turn: "observed", moderate_message=_mask)),
        ("watcher", wrapper(on_turn_end)),
        ("forcer", wrapper(moderate_message)),
    )
    assert await host.notify_turn_end(TURN) == []
    assert seen == [["observed"]]
    assert await host.moderate(INBOUND, make_bot()) == (Refusal(reason="forced"), [])


async def test_a_wrapper_can_leave_out_definitions_but_not_add_any() -> None:
    @hookimpl(wrapper=True)
    def register_tools() -> Generator[None, list[list[Tool]], list[list[Tool]]]:
        results = yield
        kept = [[tool for tool in tools if tool.name != "later"] for tools in results]
        return [*kept, [Tool.from_function(echo, name="smuggled")]]

    host = await host_of(("good", good_plugin()), ("after", good_plugin_renamed()), ("editor", wrapper(register_tools)))
    assert set(host.registry.tools) == {"echo"}
    assert host.registry.owner("tool", "echo") == "good"
    [problem] = host.problems
    assert (problem.plugin, problem.stage) == ("editor", "register_tools")
    assert "smuggled" in problem.message
    assert "no implementation returned" in problem.message


async def test_a_wrapper_of_register_channels_can_leave_a_builtin_channel_out() -> None:
    @hookimpl(wrapper=True)
    def register_channels() -> Generator[None, list[list[Any]], list[list[Any]]]:
        results = yield
        return [[channel for channel in channels if channel.name != "twilio"] for channels in results]

    host = PluginHost.discover()
    host.register(wrapper(register_channels), "no_sms")
    await host.collect()
    assert "twilio" not in host.registry.channels
    assert "email" in host.registry.channels
    assert host.infos["twilio"].channels == []


def _raises_before(message: Any) -> Generator[None, Any, Any]:
    raise ValueError("wrapper broke before the call")
    yield  # pragma: no cover - makes this a generator


def _raises_after(message: Any) -> Generator[None, Any, Any]:
    yield
    raise ValueError("wrapper broke after the call")


def _does_not_yield(message: Any) -> Generator[None, Any, Any]:
    if message is not None:
        return None
    yield  # pragma: no cover - makes this a generator


def _yields_twice(message: Any) -> Generator[None, Any, Any]:
    yield
    yield


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        (_raises_before, "raised ValueError: wrapper broke before the call"),
        (_raises_after, "raised ValueError: wrapper broke after the call"),
        (_does_not_yield, "wrapper did not yield"),
        (_yields_twice, "wrapper yielded more than once"),
    ],
    ids=["raises before", "raises after", "does not yield", "yields twice"],
)
async def test_a_broken_wrapper_is_left_out_and_reported(
    function: Callable[..., Generator[Any, Any, Any]], reason: str
) -> None:
    broken = SimpleNamespace(moderate_message=hookimpl(wrapper=True)(function))
    host = await host_of(("masker", plugin(moderate_message=_mask)), ("broken", broken))
    result, problems = await host.moderate(INBOUND, make_bot())
    assert result == _mask(INBOUND), "the moderators' results still count"
    assert problems == [PluginProblem(plugin="broken", stage="moderate_message", message=reason)]


async def test_a_wrapper_that_blocks_is_given_up_on_and_reported() -> None:
    release, finished = threading.Event(), threading.Event()
    recorder = Recorder()

    @hookimpl(wrapper=True)
    def moderate_message() -> Generator[None, Any, Any]:
        release.wait(timeout=30)
        results = yield
        finished.set()
        return results

    host = await host_of(("recorder", recorder.plugin()), ("blocker", wrapper(moderate_message)), hook_timeout=0.05)
    try:
        result, problems = await host.moderate(INBOUND, make_bot())
    finally:
        release.set()
    assert result == INBOUND
    [problem] = problems
    assert (problem.plugin, problem.stage) == ("blocker", "moderate_message")
    assert "did not finish" in problem.message
    assert await asyncio.to_thread(finished.wait, 10), "the wrapper's call went on in its thread"
    assert recorder.seen == [], "a call given up on runs no more implementations"


def test_a_wrapper_must_be_a_generator() -> None:
    host = PluginHost()
    not_a_generator = SimpleNamespace(on_turn_end=hookimpl(wrapper=True)(lambda turn: None))
    assert host.register(not_a_generator, "flat") is False
    [problem] = host.problems
    assert (problem.plugin, problem.stage) == ("flat", "register")
    assert "generator" in problem.message


# --------------------------------------------------------------------------- tracing


def traced(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "botloom.core.host"]


async def test_tracing_logs_every_implementation_and_every_call(caplog: pytest.LogCaptureFixture) -> None:
    host = await host_of(
        ("masker", plugin(moderate_message=_mask)),
        ("raiser", plugin(moderate_message=_raise)),
        ("hanger", plugin(moderate_message=_hang)),
        hook_timeout=0.5,  # the masker and the raiser must finish within it on a loaded machine too
    )
    host.trace = True
    with caplog.at_level(logging.INFO, logger="botloom.core.host"):
        await host.moderate(INBOUND, make_bot())
    lines = traced(caplog)
    took = r" in \d+\.\d\d ms"
    for expected in [
        rf"plugin masker: hook moderate_message: returned InboundMessage{took}",
        rf"plugin raiser: hook moderate_message: raised ValueError: moderation exploded{took}",
        rf"plugin hanger: hook moderate_message: timed out{took}",
        rf"hook moderate_message\(message=InboundMessage\(.*\), bot=Bot\(.*\)\): called hanger, raiser, masker{took}: "
        r"returned 1 result",
    ]:
        assert any(re.fullmatch(expected, line) for line in lines), (expected, lines)

    host.trace = False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="botloom.core.host"):
        await host.moderate(INBOUND, make_bot())
    assert not [line for line in traced(caplog) if "returned" in line], "tracing is off again"


async def test_tracing_covers_the_start_up_hooks_and_wrappers(caplog: pytest.LogCaptureFixture) -> None:
    @hookimpl(wrapper=True)
    def register_tools() -> Generator[None, Any, Any]:
        return (yield)

    host = PluginHost(trace=True)
    host.register(good_plugin(), "good")
    host.register(wrapper(register_tools), "watch")
    with caplog.at_level(logging.INFO, logger="botloom.core.host"):
        await host.collect()
    lines = traced(caplog)
    assert any(re.match(r"plugin good: hook register_tools: returned 1 result in ", line) for line in lines), lines
    assert any(re.match(r"plugin watch: hook register_tools: wrapped the call in ", line) for line in lines), lines
    assert any(line.startswith("hook plugin_config_schema(): called no implementation") for line in lines), lines


def test_the_trace_setting_is_read_and_handed_to_discovery() -> None:
    assert load_settings(environ={"BOTLOOM_TRACE_PLUGINS": "1"}).trace_plugins is True
    assert load_settings(environ={}).trace_plugins is False
    assert PluginHost.discover(trace=True).trace
    assert not PluginHost.discover().trace


async def test_services_trace_when_the_setting_says_so(settings: Settings, database_url: str) -> None:
    traced_settings = msgspec.structs.replace(settings, trace_plugins=True)
    async with open_services(traced_settings, url=database_url) as services:
        assert services.host.trace
