"""The plugin host: discovery through entry points, robust loading, per-turn hooks, tools.

Throw-away plugins are :class:`types.SimpleNamespace` objects holding ``@hookimpl``
functions; real entry-point discovery uses a tiny distribution made of a
``*.dist-info`` directory on ``sys.path`` (importlib.metadata finds it like an
installed package, and nothing is installed).
"""

from __future__ import annotations

import asyncio
import enum
import json
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import msgspec
import pytest

from botloom import (
    Bot,
    BotSettings,
    InboundMessage,
    Intent,
    OutboundMessage,
    Refusal,
    Slot,
    Tool,
    ToolContext,
    TurnSummary,
    hookimpl,
)
from botloom.core.definitions import DefinitionError
from botloom.core.host import PluginHost, PluginProblem
from botloom.graphs.registry import GraphRegistry
from tests.test_cli import botloom_env, run_botloom

# --------------------------------------------------------------------------- helpers

BUILTINS: dict[str, dict[str, list[str]]] = {
    "turn": {"kinds": ["graph", "migration"], "graphs": ["turn"], "tools": [], "intents": []},
    "smalltalk": {"kinds": ["intent"], "graphs": [], "tools": [], "intents": ["greeting", "thanks", "goodbye"]},
    "handoff": {"kinds": ["intent"], "graphs": [], "tools": [], "intents": ["human_handoff"]},
    "demo_shop": {"kinds": ["tool", "intent"], "graphs": [], "tools": ["order_status"], "intents": ["order_status"]},
    "knowledge": {"kinds": ["tool"], "graphs": [], "tools": ["search_knowledge"], "intents": []},
}


def assert_builtins_listed(infos: Mapping[str, Mapping[str, Any]], problems: list[Mapping[str, Any]]) -> None:
    """The five built-ins are there, from botloom itself, with what they register."""
    for name, expected in BUILTINS.items():
        assert name in infos, f"built-in {name!r} missing; problems: {problems}"
        info = infos[name]
        assert info["source"] == "builtin", name
        assert info["version"], name
        for key, value in expected.items():
            assert sorted(info[key]) == sorted(value), (name, key, info[key])
    assert [p for p in problems if p["plugin"] in BUILTINS] == []


def plugin(module: str = "tests.throwaway", **hooks: Callable[..., Any]) -> SimpleNamespace:
    """A throw-away plugin object whose attributes are the given hook implementations."""
    return SimpleNamespace(__name__=module, **{name: hookimpl(func) for name, func in hooks.items()})


async def echo(text: str) -> str:
    """Repeat the text."""
    return text


def good_plugin() -> SimpleNamespace:
    """A healthy plugin registering one tool and one intent (the tool's hook is async)."""

    async def register_tools() -> list[Tool]:
        return [Tool.from_function(echo)]

    return plugin(
        register_tools=register_tools,
        register_intents=lambda: [Intent(name="say_hello", description="The user says hello.", tools=("echo",))],
    )


async def host_of(*plugins: tuple[str, object], hook_timeout: float = 5.0) -> PluginHost:
    """A collected host of exactly these ``(name, plugin)`` pairs."""
    host = PluginHost(hook_timeout=hook_timeout)
    for name, obj in plugins:
        host.register(obj, name)
    return await host.collect()


def problems_of(host: PluginHost, name: str) -> list[PluginProblem]:
    return [p for p in host.problems if p.plugin == name]


def assert_reported(problems: list[PluginProblem], stage: str, expected: Mapping[str, str]) -> None:
    """Exactly one problem per plugin of ``expected`` (plugin -> part of the reason), and no others."""
    assert sorted(p.plugin for p in problems) == sorted(expected), problems
    for problem in problems:
        assert problem.stage == stage, problem
        assert expected[problem.plugin] in problem.message, problem


def assert_good_plugin_loaded(host: PluginHost) -> None:
    assert "good" in host.infos
    assert host.registry.owner("tool", "echo") == "good"
    assert host.registry.owner("intent", "say_hello") == "good"
    assert problems_of(host, "good") == []


@dataclass
class FakeSite:
    """A directory on ``sys.path`` holding fake distributions (``*.dist-info``) and their modules."""

    root: Path
    prefix: str = field(default_factory=lambda: f"botloom_fake_{uuid.uuid4().hex[:8]}")

    def module(self, name: str, source: str) -> str:
        """Write a module; returns its (unique) import name."""
        module = f"{self.prefix}_{name}"
        (self.root / f"{module}.py").write_text(source, encoding="utf-8")
        return module

    def distribution(
        self, name: str, entry_points: Mapping[str, str], version: str = "1.0", requires: Sequence[str] = ()
    ) -> None:
        """Declare a distribution with ``[botloom]`` entry points ``plugin name -> module``.

        ``requires`` are its ``Requires-Dist`` lines (``botloom>=0.1,<1``), as pip writes them.
        """
        info = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        requirements = "".join(f"Requires-Dist: {line}\n" for line in requires)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requirements}", encoding="utf-8"
        )
        lines = "".join(f"{plugin_name} = {target}\n" for plugin_name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[botloom]\n{lines}", encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    fake = FakeSite(root)
    yield fake
    for name in [m for m in sys.modules if m.startswith(fake.prefix)]:
        del sys.modules[name]


GOOD_MODULE = '''
from botloom import Intent, Tool, hookimpl

async def fake_lookup(order: str) -> str:
    """Look an order up."""
    return order

@hookimpl
def register_tools():
    return [Tool.from_function(fake_lookup)]

@hookimpl
def register_intents():
    return [Intent(name="fake_intent", description="A fake intent.", tools=("fake_lookup",))]
'''

BROKEN_MODULE = 'raise RuntimeError("this plugin cannot be imported")\n'


# --------------------------------------------------------------------------- discovery


async def test_builtins_are_discovered_through_entry_points() -> None:
    host = await PluginHost.discover().collect()
    infos = msgspec.to_builtins(host.infos)
    assert_builtins_listed(infos, msgspec.to_builtins(host.problems))
    assert host.infos["demo_shop"].configurable
    assert host.infos["turn"].module == "botloom.graphs.plugin"
    assert host.registry.owner("graph", "turn") == "turn"
    assert host.registry.owner("tool", "order_status") == "demo_shop"
    assert host.registry.owner("intent", "human_handoff") == "handoff"


@pytest.mark.slow
def test_plugins_list_json_shows_the_builtins(tmp_path: Path) -> None:
    result = run_botloom("plugins", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    infos = {info["name"]: info for info in payload["plugins"]}
    assert_builtins_listed(infos, payload["problems"])


@pytest.mark.slow
def test_plugins_list_table_shows_kinds_and_honours_the_allow_list(tmp_path: Path) -> None:
    env = botloom_env({"BOTLOOM_PLUGINS": "smalltalk, demo_shop", "BOTLOOM_BLOCK_PLUGINS": "demo_shop"})
    result = run_botloom("plugins", "list", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("botloom ")
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip() and not line.startswith(" ")}
    assert set(rows) == {"smalltalk", "turn"}
    assert rows["smalltalk"][2:4] == ["builtin", "loaded"]
    assert rows["turn"][2:4] == ["builtin", "loaded"]
    block = "\n".join(lines[lines.index(next(line for line in lines if line.startswith("smalltalk "))) :])
    assert "\n  hooks: register_intents\n  intents: greeting, thanks, goodbye" in block
    assert "  graphs: turn" in result.stdout


async def test_a_pip_plugin_is_discovered_with_its_distribution(site: FakeSite) -> None:
    site.distribution("fake-good", {"fake_good": site.module("good", GOOD_MODULE)}, version="2.3")
    host = await PluginHost.discover().collect()
    info = host.infos["fake_good"]
    assert (info.source, info.version) == ("pip:fake-good", "2.3")
    assert (info.tools, info.intents, info.kinds) == (["fake_lookup"], ["fake_intent"], ["tool", "intent"])
    assert problems_of(host, "fake_good") == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [("broken", "this plugin cannot be imported"), ("missing", "No module named")],
)
async def test_an_import_error_is_reported_and_the_rest_loads(site: FakeSite, target: str, reason: str) -> None:
    module = site.module("broken", BROKEN_MODULE) if target == "broken" else f"{site.prefix}_nowhere"
    site.distribution("fake-broken", {"fake_broken": module})
    site.distribution("fake-good", {"fake_good": site.module("good", GOOD_MODULE)})
    host = await PluginHost.discover().collect()
    [problem] = problems_of(host, "fake_broken")
    assert problem.stage == "import"
    assert reason in problem.message
    assert "fake_broken" not in host.infos
    failed = host.unloaded["fake_broken"]
    assert (failed.status, failed.distribution, failed.module) == ("failed", "fake-broken", module)
    assert host.registry.owner("tool", "fake_lookup") == "fake_good"
    assert_builtins_listed(msgspec.to_builtins(host.infos), [])


async def test_the_allow_list_keeps_the_essential_turn_plugin(site: FakeSite) -> None:
    site.distribution("fake-broken", {"fake_broken": site.module("broken", BROKEN_MODULE)})
    host = await PluginHost.discover(allow=["smalltalk"]).collect()
    assert host.plugin_names == ["smalltalk", "turn"]
    assert host.problems == []  # the broken plugin was not even imported
    assert set(host.registry.graphs) == {"turn"}


async def test_the_block_list_skips_plugins(site: FakeSite) -> None:
    site.distribution("fake-broken", {"fake_broken": site.module("broken", BROKEN_MODULE)})
    host = await PluginHost.discover(block=["demo_shop", "fake_broken"]).collect()
    assert "demo_shop" not in host.infos
    assert "order_status" not in host.registry.tools
    assert {"turn", "smalltalk", "handoff", "knowledge"} <= set(host.infos)
    assert host.problems == []


async def test_a_distribution_reusing_an_installed_plugin_name_is_reported(site: FakeSite) -> None:
    """Two distributions declaring plugin ``smalltalk``: one would silently shadow the other."""
    site.distribution("fake-shadow", {"smalltalk": site.module("good", GOOD_MODULE)})
    host = await PluginHost.discover().collect()
    reported = problems_of(host, "smalltalk")
    assert reported, "a second plugin named 'smalltalk' was dropped without a word"
    assert any("fake-shadow" in p.message for p in reported)


GRAPH_MODULE = """
from langgraph.graph import END, START, StateGraph
from botloom import GraphDefinition, TurnContext, TurnState, hookimpl

def build():
    graph = StateGraph(TurnState, context_schema=TurnContext)
    graph.add_node("answer", lambda state: {"replies": ["installed graph"]})
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph

@hookimpl
def register_graphs():
    return [GraphDefinition(name="turn", description="An installed plugin's turn graph.", build=build)]
"""


async def test_an_installed_plugin_replaces_the_turn_graph(site: FakeSite) -> None:
    """The built-in ``turn`` graph is ``trylast``: an installed plugin's ``turn`` graph wins, and that is no problem."""
    module = site.module("graphs", GRAPH_MODULE)
    site.distribution("fake-graphs", {"fake_graphs": module})
    host = await PluginHost.discover().collect()
    assert host.problems == []
    assert host.registry.owner("graph", "turn") == "fake_graphs"
    assert host.registry.graphs["turn"].description == "An installed plugin's turn graph."
    assert host.infos["turn"].graphs == []
    assert host.infos["turn"].migrations == ["turn-v1"]
    state = await GraphRegistry(host, None).get("turn").ainvoke({"replies": []})
    assert state["replies"] == ["installed graph"]


# --------------------------------------------------------------------------- broken plugins


def _tool_with_bad_name() -> list[Tool]:
    return [Tool(name="bad name!", description="x", handler=echo, arguments=msgspec.defstruct("A", []))]


def _nothing() -> list[Any]:
    return []


def _no_schema() -> type[msgspec.Struct]:
    raise KeyError("schema")


def _moderate_with_extra_argument(message: Any, bot: Any, mood: Any) -> None:
    return None


class NotAStruct:
    pass


BROKEN_PLUGINS: dict[str, tuple[Callable[[], SimpleNamespace], str, str]] = {
    # case: (plugin factory, stage of the problem, part of the reason)
    "argument the spec lacks": (lambda: plugin(moderate_message=_moderate_with_extra_argument), "register", "mood"),
    "misspelt hook": (lambda: plugin(register_tool=_nothing), "register", "register_tool"),
    "register hook raises": (
        lambda: plugin(register_tools=lambda: 1 / 0),
        "register_tools",
        "ZeroDivisionError",
    ),
    "async register hook raises": (
        lambda: plugin(register_intents=_async_raise),
        "register_intents",
        "RuntimeError: no intents today",
    ),
    "returns a non-list": (
        lambda: plugin(register_tools=lambda: Tool.from_function(echo, name="solo")),
        "register_tools",
        "must return a list",
    ),
    "returns a string for a tool": (lambda: plugin(register_tools=lambda: ["echo"]), "register_tools", "not a Tool"),
    "returns an intent for a tool": (
        lambda: plugin(register_tools=lambda: [Intent(name="wrong_kind", description="x")]),
        "register_tools",
        "not a Tool",
    ),
    "tool with an invalid name": (lambda: plugin(register_tools=_tool_with_bad_name), "register_tools", "bad name!"),
    "intent with an invalid name": (
        lambda: plugin(register_intents=lambda: [Intent(name="9lives", description="x")]),
        "register_intents",
        "9lives",
    ),
    "intent with a bad slot pattern": (
        lambda: plugin(
            register_intents=lambda: [Intent(name="x", description="x", slots=(Slot(name="n", pattern="("),))]
        ),
        "register_intents",
        "bad pattern",
    ),
    "config schema is not a type": (
        lambda: plugin(plugin_config_schema=lambda: {"greeting": str}),
        "plugin_config_schema",
        "msgspec.Struct",
    ),
    "config schema is not a Struct": (
        lambda: plugin(plugin_config_schema=lambda: NotAStruct),
        "plugin_config_schema",
        "msgspec.Struct",
    ),
    "config schema hook raises": (
        lambda: plugin(plugin_config_schema=_no_schema),
        "plugin_config_schema",
        "KeyError",
    ),
}


async def _async_raise() -> list[Intent]:
    raise RuntimeError("no intents today")


@pytest.mark.parametrize("case", list(BROKEN_PLUGINS))
async def test_a_broken_plugin_is_reported_and_does_not_stop_the_host(case: str) -> None:
    factory, stage, reason = BROKEN_PLUGINS[case]
    host = await host_of(("good", good_plugin()), ("broken", factory()), ("after", good_plugin_renamed()))
    reported = problems_of(host, "broken")
    assert len(reported) == 1, host.problems
    assert reported[0].stage == stage
    assert reason in reported[0].message
    assert [p for p in host.problems if p.plugin != "broken"] == []
    assert_good_plugin_loaded(host)
    assert host.registry.owner("tool", "later") == "after"


def good_plugin_renamed() -> SimpleNamespace:
    """A healthy plugin registered after the broken one."""
    return plugin(register_tools=lambda: [Tool.from_function(echo, name="later")])


async def test_good_items_of_a_partly_bad_list_are_kept() -> None:
    bad = plugin(register_tools=lambda: [Tool.from_function(echo, name="kept"), 42, "junk"])
    host = await host_of(("mixed", bad))
    assert host.registry.owner("tool", "kept") == "mixed"
    assert host.infos["mixed"].tools == ["kept"]
    assert len(problems_of(host, "mixed")) == 2


async def test_owned_gives_the_definitions_of_the_enabled_plugins_only() -> None:
    host = await host_of(("good", good_plugin()), ("after", good_plugin_renamed()))
    assert set(host.owned("tool", ["after"])) == {"later"}
    assert set(host.owned("tool", ["good", "after"])) == {"echo", "later"}
    assert host.owned("intent", []) == {}


async def test_a_good_config_schema_is_recorded() -> None:
    class Config(msgspec.Struct):
        greeting: str = "hi"

    host = await host_of(("configurable", plugin(plugin_config_schema=lambda: Config)), ("plain", good_plugin()))
    assert host.config_schema("configurable") is Config
    assert host.infos["configurable"].configurable
    assert host.config_schema("plain") is None
    assert not host.infos["plain"].configurable


async def test_duplicate_tool_and_intent_names_name_both_plugins_and_the_first_keeps_them() -> None:
    def claimant(description: str) -> SimpleNamespace:
        return plugin(
            register_tools=lambda: [Tool.from_function(echo, name="dup_tool", description=description)],
            register_intents=lambda: [Intent(name="dup_intent", description=description)],
        )

    host = await host_of(("first", claimant("first's")), ("second", claimant("second's")))
    assert host.registry.owner("tool", "dup_tool") == "first"
    assert host.registry.owner("intent", "dup_intent") == "first"
    assert host.registry.tools["dup_tool"].description == "first's"
    assert host.registry.intents["dup_intent"].description == "first's"
    duplicates = [p for p in host.problems if "dup_" in p.message]
    assert len(duplicates) == 2, host.problems
    for problem in duplicates:
        assert "'first'" in problem.message
        assert "'second'" in problem.message
    assert host.infos["second"].tools == []
    assert host.infos["second"].intents == []


@pytest.mark.parametrize("name", ["bad name", "", "1plugin"])
def test_an_invalid_plugin_name_is_refused(name: str) -> None:
    host = PluginHost()
    assert host.register(good_plugin(), name) is False
    [problem] = host.problems
    assert (problem.plugin, problem.stage) == (name, "register")
    assert name not in host.infos


def test_a_plugin_name_registered_twice_is_refused() -> None:
    host = PluginHost()
    assert host.register(good_plugin(), "twice")
    assert host.register(good_plugin(), "twice") is False
    [problem] = host.problems
    assert (problem.plugin, problem.stage) == ("twice", "register")


async def test_registering_after_collect_is_an_error() -> None:
    host = await host_of(("good", good_plugin()))
    with pytest.raises(RuntimeError):
        host.register(good_plugin(), "late")


# --------------------------------------------------------------------------- per-turn hooks


def make_bot() -> Bot:
    now = datetime.now(UTC)
    return Bot(
        id=str(uuid.uuid4()),
        tenant_id=str(uuid.uuid4()),
        slug="support",
        name="Support",
        settings=BotSettings(),
        created_at=now,
        updated_at=now,
    )


INBOUND = InboundMessage(channel="web", text="my card is 4111 1111", sender="user-1")
OUTBOUND = OutboundMessage(channel="web", text="call 555 0100", recipient="user-1")


async def _hang(**_: Any) -> None:
    await asyncio.Event().wait()


def _mask(message: Any) -> Any:
    return msgspec.structs.replace(message, text="".join("#" if c.isdigit() else c for c in message.text))


def _raise(**_: Any) -> None:
    raise ValueError("moderation exploded")


def _swap_kind(message: Any) -> Any:
    return (
        OutboundMessage(channel="web", text="swapped", recipient="x") if isinstance(message, InboundMessage) else None
    )


def misbehaving_moderators() -> list[tuple[str, SimpleNamespace, str]]:
    """(name, plugin, expected reason) of moderators that must be skipped and reported."""
    return [
        ("raiser", plugin(moderate_message=_raise), "raised ValueError: moderation exploded"),
        ("hanger", plugin(moderate_message=_hang), "timed out"),
        ("nonsense", plugin(moderate_message=lambda message: 42), "returned int"),
        ("wrong_kind", plugin(moderate_message=_swap_kind), "returned OutboundMessage"),
    ]


@dataclass
class Recorder:
    """A moderator that records the texts it sees and lets them pass."""

    seen: list[str] = field(default_factory=list)

    def plugin(self, **options: bool) -> SimpleNamespace:
        def moderate_message(message: Any) -> None:
            self.seen.append(message.text)

        return SimpleNamespace(moderate_message=hookimpl(**options)(moderate_message))


async def test_misbehaving_moderators_are_skipped_and_reported() -> None:
    recorder = Recorder()
    broken = misbehaving_moderators()
    host = await host_of(*[(name, obj) for name, obj, _ in broken], ("recorder", recorder.plugin()), hook_timeout=0.5)
    result, problems = await host.moderate(INBOUND, make_bot())
    assert result == INBOUND
    assert recorder.seen == [INBOUND.text]
    assert_reported(problems, "moderate_message", {name: reason for name, _, reason in broken})


async def test_a_moderator_that_blocks_without_awaiting_is_timed_out() -> None:
    """A synchronous hook may block (a slow HTTP call); the turn must not wait for it."""
    release = threading.Event()

    def blocking(message: Any) -> Any:
        release.wait(timeout=3)
        return _mask(message)

    host = await host_of(("blocker", plugin(moderate_message=blocking)), hook_timeout=0.05)
    try:
        result, problems = await host.moderate(INBOUND, make_bot())
    finally:
        release.set()
    assert_reported(problems, "moderate_message", {"blocker": "timed out"})
    assert result == INBOUND


@pytest.mark.parametrize("message", [INBOUND, OUTBOUND], ids=["inbound", "outbound"])
async def test_a_masking_moderator_is_seen_by_the_next_one(message: InboundMessage | OutboundMessage) -> None:
    recorder = Recorder()
    masker = SimpleNamespace(moderate_message=hookimpl(tryfirst=True)(_mask))
    host = await host_of(("masker", masker), ("recorder", recorder.plugin()))
    result, problems = await host.moderate(message, make_bot())
    assert problems == []
    assert type(result) is type(message)
    assert "#" in result.text
    assert not any(c.isdigit() for c in result.text)
    assert recorder.seen == [result.text]


async def test_a_refusal_stops_the_message() -> None:
    recorder = Recorder()
    refusal = Refusal(reason="card number", reply="Please don't share card numbers.")
    refuser = SimpleNamespace(moderate_message=hookimpl(tryfirst=True)(lambda message, bot: refusal))
    host = await host_of(("recorder", recorder.plugin()), ("refuser", refuser))
    result, problems = await host.moderate(INBOUND, make_bot())
    assert result == refusal
    assert problems == []
    assert recorder.seen == []


async def test_a_moderator_gets_the_bot() -> None:
    bots: list[Bot] = []

    def watch(bot: Bot) -> None:
        bots.append(bot)

    host = await host_of(("watcher", plugin(moderate_message=watch)))
    bot = make_bot()
    await host.moderate(INBOUND, bot)
    assert bots == [bot]


TURN = TurnSummary(
    tenant_id="t",
    bot_id="b",
    conversation_id="c",
    turn_id="turn-1",
    channel="web",
    intent="greeting",
    confidence=0.9,
    replies=("Hello!",),
    escalated=False,
)


async def test_turn_end_observers_that_fail_are_reported_and_the_others_run() -> None:
    seen: list[TurnSummary] = []

    async def observe(turn: TurnSummary) -> None:
        seen.append(turn)

    host = await host_of(
        ("raiser", plugin(on_turn_end=_raise)),
        ("hanger", plugin(on_turn_end=_hang)),
        ("nonsense", plugin(on_turn_end=lambda turn: "ignored")),
        ("observer", plugin(on_turn_end=observe)),
        hook_timeout=0.5,  # the well-behaved ones must finish within it on a loaded machine too
    )
    problems = await host.notify_turn_end(TURN)
    assert seen == [TURN]
    assert_reported(
        problems, "on_turn_end", {"hanger": "timed out", "raiser": "raised ValueError: moderation exploded"}
    )


async def test_turn_end_observers_are_called_once_each() -> None:
    calls: list[str] = []
    host = await host_of(
        ("one", plugin(on_turn_end=lambda turn: calls.append("one"))),
        ("two", plugin(on_turn_end=lambda: calls.append("two"))),
    )
    assert await host.notify_turn_end(TURN) == []
    assert sorted(calls) == ["one", "two"]


# --------------------------------------------------------------------------- Tool.from_function


CALLS: list[dict[str, Any]] = []
"""What :func:`lookup_order` was called with."""


async def lookup_order(
    order_number: str, limit: int = 3, include_items: bool = False, *, context: ToolContext
) -> dict[str, str]:
    """Look up an order by its number.

    The second paragraph is not part of the description.
    """
    CALLS.append({"order_number": order_number, "limit": limit, "include_items": include_items, "context": context})
    return {"order": order_number}


CONTEXT = ToolContext(tenant_id="t", bot_id="b", conversation_id="c")


@pytest.fixture
def calls() -> Iterator[list[dict[str, Any]]]:
    CALLS.clear()
    yield CALLS
    CALLS.clear()


def test_the_schema_comes_from_the_signature() -> None:
    tool = Tool.from_function(lookup_order)
    assert tool.name == "lookup_order"
    assert tool.description == "Look up an order by its number."
    assert tool.wants_context
    schema = tool.parameters_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["order_number"]
    assert schema["properties"] == {
        "order_number": {"type": "string"},
        "limit": {"type": "integer", "default": 3},
        "include_items": {"type": "boolean", "default": False},
    }


async def test_invoke_fills_defaults_and_passes_the_context(calls: list[dict[str, Any]]) -> None:
    tool = Tool.from_function(lookup_order)
    assert await tool.invoke({"order_number": "1234"}, CONTEXT) == {"order": "1234"}
    assert calls == [{"order_number": "1234", "limit": 3, "include_items": False, "context": CONTEXT}]


@pytest.mark.parametrize(
    "arguments",
    [
        {"order_number": "1234", "limit": "many"},
        {"order_number": ["1234"]},
        {"limit": 2},
        {"order_number": "1234", "unknown": 1},
    ],
    ids=["wrong type", "list for a string", "required missing", "unknown argument"],
)
async def test_invoke_validates_the_arguments(calls: list[dict[str, Any]], arguments: dict[str, Any]) -> None:
    tool = Tool.from_function(lookup_order)
    with pytest.raises(msgspec.ValidationError):
        await tool.invoke(arguments, CONTEXT)
    assert calls == []


async def test_a_tool_without_context_is_not_given_one() -> None:
    tool = Tool.from_function(echo, name="echo_tool", description="Echo.", timeout=2.5)
    assert (tool.name, tool.description, tool.timeout, tool.wants_context) == ("echo_tool", "Echo.", 2.5, False)
    assert await tool.invoke({"text": "hi"}, CONTEXT) == "hi"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(msgspec.Struct):
    street: str
    city: str


async def ship(address: Address, colour: Colour, mode: Literal["air", "sea"] = "sea") -> str:
    """Ship a parcel."""
    return f"{address.city} {colour.value} {mode}"


def unresolved_refs(schema: Any, root: Any = None) -> list[str]:
    """``$ref`` values of ``schema`` that do not point inside the schema itself."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [ref for item in schema for ref in unresolved_refs(item, root)]
    if not isinstance(schema, dict):
        return []
    found = [ref for value in schema.values() for ref in unresolved_refs(value, root)]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = root
        for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else [None]:
            target = target.get(part) if isinstance(target, dict) and part is not None else None
        if target is None:
            found.append(ref)
    return found


async def test_the_schema_of_nested_types_is_self_contained() -> None:
    """Function-calling APIs get one schema: a nested Struct or Enum must not be a dangling ``$ref``."""
    tool = Tool.from_function(ship)
    schema = tool.parameters_schema()
    assert unresolved_refs(schema) == []
    assert schema["required"] == ["address", "colour"]
    assert "street" in json.dumps(schema)
    assert await tool.invoke({"address": {"street": "1 Main St", "city": "Oslo"}, "colour": "red"}, CONTEXT) == (
        "Oslo red sea"
    )


def _sync_tool(text: str) -> str:
    return text


async def _untyped(text) -> str:  # type: ignore[no-untyped-def]
    return str(text)


async def _variadic(*texts: str) -> str:
    return "".join(texts)


@pytest.mark.parametrize(
    ("func", "reason"),
    [(_sync_tool, "must be async"), (_untyped, "needs a type"), (_variadic, "not supported")],
    ids=["sync", "untyped", "variadic"],
)
def test_unusable_functions_are_rejected(func: Callable[..., Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        Tool.from_function(func)
