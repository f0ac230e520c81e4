"""Turn graph benchmark: botloom's ``turn`` graph next to a bare LangGraph graph, per checkpointer.

For each checkpointer (memory, postgres, redis) this measures, in one run:

* **bare, default durability** — the baseline: a LangGraph ``StateGraph`` of five
  trivial async nodes with the turn graph's shape (retrieve → classify →
  act/respond → END, plus an ``escalate`` node), LangChain message objects
  accumulating in state (``add_messages``, a ``HumanMessage`` and an
  ``AIMessage`` a turn), LangGraph's default durability, the same kind of
  checkpointer, no botloom;
* **bare, durability="exit"** — the same graph writing one checkpoint a turn
  (for orientation: what durability alone buys);
* **botloom graph** — botloom's compiled ``turn`` graph alone, invoked as the
  runner invokes it: ``graph.ainvoke(turn_input(...), config,
  context=TurnContext(...), durability="exit")`` with the demo bot
  ``acme/support``'s context (its plugins and knowledge base; offline engine);
* **botloom turn** — the whole turn path ``runner.answer(bot, InboundMessage(...),
  conversation_id=...)``: stores the inbound message, takes the conversation
  lock, builds the context, runs moderation hooks and the graph, stores the reply.

Three measurements per variant, and a fourth of the whole turn path alone:

1. throughput: 8 concurrent workers in one process, each running back-to-back
   conversations of 5 turns (every turn on a conversation no other worker uses);
2. latency: the same, one turn at a time (no concurrency);
3. conversation length (Postgres and Redis): one conversation driven to 1000
   turns, p50 around turn 1, 100 and 1000 (20-turn windows), each next to the
   p50 of a fresh conversation's turns run in between (the ratio cancels the
   machine's noise); a series stops after a time budget (the bare Redis
   baseline slows down too much to finish on a busy machine);
4. bursts (issue #8; Postgres checkpointer and conversation locks, the demo bot):
   64 new conversations (``--burst-conversations``), their first messages spread
   evenly over one second (``--burst-spread``), each sending three messages
   50 ms apart ("hi", "I have a question", "about my order 1234"), every message
   its own concurrent ``runner.answer`` call as the REST chat route makes it;
   under each burst policy of ``BotSettings.burst_policy`` in turn (``enqueue``,
   ``merge`` with the bot's default ``burst_window_ms`` and with 300 ms,
   ``interrupt``, ``reject``), rotated over two rounds. Per policy: the turns that
   ran to the end and those a newer message cancelled (``Turns.run``
   calls), the replies stored (outbound rows), the inbound messages that ended in
   a turn or with an answer (``answered``, ``merged``, ``rejected``) against those
   received, so a lost message shows; and, from each conversation's first
   message, the time to its first and to its last stored reply (p50, p99), to
   the return of its first message's ``answer`` call (what a REST client of that
   message waits) and of its last. The whole burst (192 messages in about
   a second) is more than one process turns in a second, so these times include
   the queueing the burst causes, which is what the policies trade.

Each turn's outcome is checked (an intent, no escalation), so the workload is what
it claims to be. Figures are printed as ratios against the bare baseline measured
in the same run; nothing asserts a timing. ``--profile`` breaks one botloom turn
down (time in the runner's queries, the lock, the checkpointer, knowledge search,
classification) and writes a pyinstrument profile.

Usage::

    python bench/turn.py                 # full run with bursts, ~10 minutes
    python bench/turn.py --quick         # smoke test (bursts of 16 conversations), ~2 minutes
    python bench/turn.py --profile       # where the time of a botloom turn goes
    python bench/turn.py --burst         # only the burst scenario (about a minute)
    python bench/turn.py --checkpointers postgres --database-url postgresql://... --redis-url redis://...

Without ``--database-url``/``--redis-url``, PostgreSQL (pgvector) and Valkey
(search + JSON modules) are started locally with ``tests/servers.py``.
No ``OPENAI_API_KEY`` is used: botloom runs its offline engine and local embedder.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/turn.py``, this file's directory comes first on sys.path, and
# ``bench/http.py`` would shadow the standard library's ``http`` package (imported by
# urllib, requests, httpx, uvicorn): a stable sort moves that directory to the end, before
# anything else is imported, so the standard library wins and ``common`` is still found.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from bare import bare_pool, build_bare_graph
from common import (
    Run,
    Summary,
    add_server_arguments,
    machine,
    markdown_table,
    ms,
    ratio,
    run_for,
    run_turns,
    servers,
)
from langchain_core.messages import AIMessage, HumanMessage

os.environ.pop("OPENAI_API_KEY", None)  # the offline engine, always

from botloom.core.domain import Bot, Conversation
from botloom.core.messages import InboundMessage
from botloom.core.settings import load_settings
from botloom.graphs.state import turn_input
from botloom.runtime.runner import BotView, thread_id
from botloom.runtime.services import Services, open_services
from botloom.server.demo import ensure_demo

CHECKPOINTERS = ("memory", "postgres", "redis")
CONCURRENCY = 8
TURNS_PER_CONVERSATION = 5
CHANNEL = "rest"

SCRIPT = (
    "hello",
    "where is my order 1234",
    "how much does express shipping cost?",
    "can I return an item I bought?",
    "thanks",
)
"""One conversation of the workload: small talk, an order lookup (``act`` runs a tool), two
knowledge questions, small talk. Every turn answers; none escalates."""

BARE_DEFAULT = "bare, default durability"
BARE_EXIT = "bare, durability=exit"
BOTLOOM_GRAPH = "botloom graph (a)"
BOTLOOM_TURN = "botloom turn (b)"
VARIANTS = (BARE_DEFAULT, BARE_EXIT, BOTLOOM_GRAPH, BOTLOOM_TURN)
LENGTH_VARIANTS = (BARE_DEFAULT, BOTLOOM_TURN)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def bare_checkpointer(kind: str, database_url: str, redis_url: str | None) -> AsyncIterator[Any]:
    """The checkpointer as a bare LangGraph app opens it (the libraries' documented set-up)."""
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
    elif kind == "postgres":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        pool = bare_pool(database_url)
        async with pool:
            postgres_saver = AsyncPostgresSaver(conn=pool)
            await postgres_saver.setup()
            yield postgres_saver
    else:
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver

        async with AsyncRedisSaver.from_conn_string(redis_url) as redis_saver:
            await redis_saver.asetup()
            yield redis_saver


# ------------------------------------------------------------------------------ the four variants


@dataclass
class Check:
    """Counts of turns whose outcome was not what the workload expects."""

    turns: int = 0
    bad: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> None:
        self.turns += 1
        if not ok and len(self.bad) < 5:
            self.bad.append(what)
        elif not ok:
            self.bad.append("")


class Variant:
    """One way of running a turn; ``turn(conversation, i)`` runs the ``i``-th turn of a conversation."""

    name: str

    async def conversation(self) -> str:
        """A new conversation (its id)."""
        raise NotImplementedError

    async def turn(self, conversation: str, i: int) -> None:
        raise NotImplementedError


class Bare(Variant):
    def __init__(self, name: str, graph: Any, durability: str | None, check: Check) -> None:
        self.name, self.graph, self.durability, self.check = name, graph, durability, check

    async def conversation(self) -> str:
        return f"bare:{uuid.uuid4()}"

    async def turn(self, conversation: str, i: int) -> None:
        config = {"configurable": {"thread_id": conversation}}
        kwargs = {"durability": self.durability} if self.durability else {}
        state = await self.graph.ainvoke(
            {"messages": [HumanMessage(content=SCRIPT[i % len(SCRIPT)])]}, config, **kwargs
        )
        self.check.expect(isinstance(state["messages"][-1], AIMessage), f"bare turn {i}: no answer")


class BotloomGraph(Variant):
    """The compiled turn graph alone, with the demo bot's context (built without a query per turn)."""

    name = BOTLOOM_GRAPH

    def __init__(self, services: Services, bot: Bot, view: BotView, check: Check) -> None:
        self.services, self.bot, self.view, self.check = services, bot, view, check
        self.graph = services.graphs.get(bot.graph)

    async def conversation(self) -> str:
        return str(uuid.uuid4())

    async def turn(self, conversation: str, i: int) -> None:
        now = datetime.now(UTC)
        conv = Conversation(
            id=conversation,
            tenant_id=self.bot.tenant_id,
            bot_id=self.bot.id,
            channel=CHANNEL,
            external_key=conversation,
            user="bench",
            created_at=now,
            updated_at=now,
        )
        ctx = await self.services.runner.context(self.bot, conv, self.view)
        config = {"configurable": {"thread_id": thread_id(self.bot.tenant_id, self.bot.id, conversation)}}
        state = await self.graph.ainvoke(
            turn_input(str(uuid.uuid4()), SCRIPT[i % len(SCRIPT)]), config, context=ctx, durability="exit"
        )
        self.check.expect(
            bool(state.get("intent")) and bool(state.get("replies")) and "__interrupt__" not in state,
            f"graph turn {i}: intent={state.get('intent')} replies={state.get('replies')}",
        )


class BotloomTurn(Variant):
    """The whole turn path through the runner, on conversations created beforehand."""

    name = BOTLOOM_TURN

    def __init__(self, services: Services, bot: Bot, check: Check) -> None:
        self.services, self.bot, self.check = services, bot, check
        self.ready: list[str] = []

    async def prepare(self, count: int) -> None:
        """Create ``count`` conversations up front (one statement), so the timed loop only runs turns."""
        async with self.services.db.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO conversations (tenant_id, bot_id, channel, external_key, user_ref) "
                "SELECT %s, %s, %s, gen_random_uuid()::text, 'bench' FROM generate_series(1, %s) RETURNING id",
                (self.bot.tenant_id, self.bot.id, CHANNEL, count),
            )
            self.ready.extend(str(r["id"]) for r in await cur.fetchall())

    async def conversation(self) -> str:
        if not self.ready:
            await self.prepare(500)
        return self.ready.pop()

    async def turn(self, conversation: str, i: int) -> None:
        message = InboundMessage(channel=CHANNEL, text=SCRIPT[i % len(SCRIPT)], sender="bench")
        try:
            result = await self.services.inbound.answer(self.bot, message, conversation_id=conversation)
        except Exception as exc:  # noqa: BLE001 - counted and reported (e.g. PoolTimeout), the run goes on
            self.check.expect(False, f"turn {i}: {type(exc).__name__}: {exc}")
            return
        self.check.expect(
            result.status == "answered" and bool(result.intent) and not result.escalated and bool(result.replies),
            f"turn {i}: status={result.status} intent={result.intent} errors={result.errors}",
        )


# ------------------------------------------------------------------------------ measurements


def short_conversations(variant: Variant) -> Callable[[int, int], Awaitable[None]]:
    """A ``run_for`` step: each worker runs back-to-back conversations of TURNS_PER_CONVERSATION turns."""
    current: dict[int, str] = {}

    async def step(worker: int, i: int) -> None:
        if i % TURNS_PER_CONVERSATION == 0:
            current[worker] = await variant.conversation()
        await variant.turn(current[worker], i % TURNS_PER_CONVERSATION)

    return step


@dataclass
class LengthSeries:
    """One conversation driven long, with a fresh conversation's turns interleaved as a control."""

    long_ms: list[float] = field(default_factory=list)
    """Latency of turn ``i + 1`` of the long conversation."""
    fresh_ms: dict[int, float] = field(default_factory=dict)
    """Latency of a turn of a short conversation, run right after long turn ``i + 1`` (every other turn)."""

    def window(self, first: int, last: int) -> tuple[float, float]:
        """p50 of the long conversation's turns ``first..last`` (1-based) and of the fresh turns among them."""
        fresh = [v for i, v in self.fresh_ms.items() if first - 1 <= i < last]
        return Summary.of(self.long_ms[first - 1 : last]).p50, Summary.of(fresh).p50


async def measure_length(variant: Variant, turns: int, budget: float) -> LengthSeries:
    """Drive one conversation to ``turns`` turns (or as far as ``budget`` seconds allow).

    After every other turn, one turn of a short conversation (a new one every
    TURNS_PER_CONVERSATION turns) runs too: the two are measured moments apart, so
    their ratio says what the long conversation's length costs, whatever the
    machine was doing meanwhile.
    """
    series = LengthSeries()
    long = await variant.conversation()
    fresh, fresh_turn = "", 0
    deadline = time.perf_counter() + budget
    for i in range(turns):
        began = time.perf_counter()
        await variant.turn(long, i)
        series.long_ms.append((time.perf_counter() - began) * 1000)
        if i % 2 == 1:
            if fresh_turn % TURNS_PER_CONVERSATION == 0:
                fresh = await variant.conversation()
            t0 = time.perf_counter()
            await variant.turn(fresh, fresh_turn % TURNS_PER_CONVERSATION)
            series.fresh_ms[i] = (time.perf_counter() - t0) * 1000
            fresh_turn += 1
        if began > deadline and i >= 40:
            break
    return series


def windows(turns: int) -> list[tuple[str, int, int]]:
    """(label, first, last) 1-based windows of 20 turns: the first 20, turns 91-110, the last 20 (of ``turns``)."""
    out = [("turn 1", 1, min(20, turns))]
    if turns >= 150:
        out.append(("turn 100", 91, 110))
    out.append((f"turn {turns}", turns - 19, turns))
    return out


@dataclass
class Results:
    throughput: dict[tuple[str, str], Run] = field(default_factory=dict)
    latency: dict[tuple[str, str], Run] = field(default_factory=dict)
    length: dict[tuple[str, str], LengthSeries] = field(default_factory=dict)
    pool_wait_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    """Milliseconds botloom's turns waited for a connection of botloom's pool (the throughput runs)."""


@dataclass
class Plan:
    rounds: int
    seconds: float
    latency_turns: int
    length_turns: int
    length_budget: float
    """Seconds one conversation-length series may take: the bare baseline slows down as its
    conversation grows, and on a busy machine would not reach the last turn in a bounded time."""
    length_kinds: tuple[str, ...] = ("postgres", "redis")
    concurrency: int = CONCURRENCY
    db_pool_size: int | None = None
    """BOTLOOM_DB_POOL_SIZE for botloom's services (``None``: botloom's default)."""


async def warm_up(variants: list[Variant]) -> None:
    for variant in variants:
        conversation = await variant.conversation()
        for i in range(2 * TURNS_PER_CONVERSATION):
            await variant.turn(conversation, i)


async def bench_checkpointer(
    kind: str, urls: Any, plan: Plan, results: Results, data_dir: Path, checks: dict[str, Check]
) -> None:
    settings = load_settings(
        environ={},
        data_dir=str(data_dir),
        secret_key="bench-secret-key",
        checkpointer=kind,
        database_url=urls.database_url,
        redis_url=urls.redis_url if kind == "redis" else None,
        db_pool_size=plan.db_pool_size,
    )
    async with (
        open_services(settings, url=urls.database_url) as services,
        bare_checkpointer(kind, urls.database_url, urls.redis_url) as saver,
    ):
        demo = await ensure_demo(services)
        bot = demo.bot
        view = await services.runner.bot_view(bot)
        bare_graph = build_bare_graph(saver)
        turn = BotloomTurn(services, bot, checks[BOTLOOM_TURN])
        variants: list[Variant] = [
            Bare(BARE_DEFAULT, bare_graph, None, checks[BARE_DEFAULT]),
            Bare(BARE_EXIT, bare_graph, "exit", checks[BARE_EXIT]),
            BotloomGraph(services, bot, view, checks[BOTLOOM_GRAPH]),
            turn,
        ]
        by_name = {v.name: v for v in variants}
        await turn.prepare(2000)
        await warm_up(variants)

        say(
            f"[{kind}] {plan.rounds} round(s); each variant per round: {plan.latency_turns // plan.rounds} turns one "
            f"at a time, then {plan.seconds:g} s with {plan.concurrency} concurrent conversations"
        )
        pool = services.db.pool
        for r in range(plan.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotate: no fixed position
            for variant in order:
                key = (kind, variant.name)
                step = short_conversations(variant)

                async def one(i: int, step: Callable[[int, int], Awaitable[None]] = step) -> None:
                    await step(0, i)

                lat = await run_turns(plan.latency_turns // plan.rounds, one)
                pool.pop_stats()
                run = await run_for(plan.seconds, plan.concurrency, short_conversations(variant))
                waited = pool.pop_stats().get("requests_wait_ms", 0)
                results.latency[key] = results.latency[key].merge(lat) if key in results.latency else lat
                results.throughput[key] = results.throughput[key].merge(run) if key in results.throughput else run
                results.pool_wait_ms[key] = results.pool_wait_ms.get(key, 0.0) + waited
                say(
                    f"  round {r + 1} {variant.name}: ×1 p50 {lat.summary.p50:.1f} ms; ×{plan.concurrency} "
                    f"{run.per_second:,.0f} turns/s"
                )

        if kind not in plan.length_kinds:
            return
        say(
            f"[{kind}] conversation length: one conversation to {plan.length_turns} turns "
            f"(at most {plan.length_budget:g} s per variant)"
        )
        for name in LENGTH_VARIANTS:
            began = time.perf_counter()
            series = await measure_length(by_name[name], plan.length_turns, plan.length_budget)
            results.length[(kind, name)] = series
            say(f"  {name}: {len(series.long_ms)} turns in {time.perf_counter() - began:.0f} s")


def report(results: Results, kinds: list[str], plan: Plan, command: str, total: float, checks: dict[str, Check]) -> str:
    out: list[str] = []
    info = machine()
    out.append(f"command: `{command}`")
    out.append(
        f"machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, {info['os']}, "
        f"load average at the end {info['load average']}; total {total:.0f} s"
    )
    out.append("")
    out.append(
        f"Throughput: {plan.concurrency} concurrent conversations in one process (conversations of "
        f"{TURNS_PER_CONVERSATION} turns), {plan.rounds} round(s) × {plan.seconds:g} s per variant, "
        "variants interleaved. CPU: this process's CPU time per turn (the servers' not included). "
        "Pool wait: time botloom's turns waited for a connection of botloom's own pool "
        f"(BOTLOOM_DB_POOL_SIZE={plan.db_pool_size or load_settings(environ={}).db_pool_size})."
    )
    out.append("")
    rows = []
    for kind in kinds:
        base = results.throughput[(kind, BARE_DEFAULT)]
        for name in VARIANTS:
            thr = results.throughput[(kind, name)]
            wait = results.pool_wait_ms.get((kind, name), 0.0) / thr.calls if name.startswith("botloom") else None
            rows.append(
                [
                    kind,
                    name,
                    f"{thr.per_second:,.0f}",
                    ratio(thr.per_second, base.per_second),
                    ms(thr.summary.p50),
                    ms(thr.summary.p99),
                    ms(thr.cpu_ms_per_call),
                    "" if wait is None else ms(wait),
                ]
            )
    out.append(
        markdown_table(
            [
                "checkpointer",
                "variant",
                f"turns/s (×{plan.concurrency})",
                "vs bare",
                "p50 ms",
                "p99 ms",
                "CPU ms/turn",
                "pool wait ms/turn",
            ],
            rows,
        )
    )
    out.append("")
    out.append(
        f"Latency: one turn at a time (no concurrency), {plan.latency_turns} turns per variant "
        f"(conversations of {TURNS_PER_CONVERSATION} turns)."
    )
    out.append("")
    rows = []
    for kind in kinds:
        base_lat = results.latency[(kind, BARE_DEFAULT)].summary
        for name in VARIANTS:
            run = results.latency[(kind, name)]
            rows.append(
                [
                    kind,
                    name,
                    ms(run.summary.p50),
                    ms(run.summary.p99),
                    ratio(run.summary.p50, base_lat.p50),
                    ms(run.cpu_ms_per_call),
                ]
            )
    out.append(markdown_table(["checkpointer", "variant", "p50 ms", "p99 ms", "p50 vs bare", "CPU ms/turn"], rows))
    out.append("")
    wins = windows(plan.length_turns)
    rows = []
    for kind in kinds:
        for name in LENGTH_VARIANTS:
            if (kind, name) not in results.length:
                continue
            series = results.length[(kind, name)]
            reached = len(series.long_ms)
            found = {label: series.window(a, b) for label, a, b in windows(reached)}
            cells = []
            for column, _, _ in wins:
                label = f"turn {reached}" if column == f"turn {plan.length_turns}" else column
                if label not in found:
                    cells.append("-")
                    continue
                long, fresh = found[label]
                cell = f"{ms(long)} ({ratio(long, fresh)})"
                if label == f"turn {reached}" and reached < plan.length_turns:
                    cell += f" at turn {reached} (time budget)"
                cells.append(cell)
            first, last = found["turn 1"][0], found[f"turn {reached}"][0]
            rows.append([kind, name, *cells, ratio(last, first)])
    if rows:
        out.append(
            f"Conversation length: one conversation driven to {plan.length_turns} turns, one turn at a time "
            f"(at most {plan.length_budget:g} s per series). p50 ms of the 20 turns around each point; in "
            "brackets, that p50 over the p50 of a fresh conversation's turns run in between (every other "
            "turn), which cancels the machine's noise: 1.00× is flat."
        )
        out.append("")
        out.append(
            markdown_table(
                ["checkpointer", "variant", *(f"p50 ms @ {label}" for label, _, _ in wins), "last / first"], rows
            )
        )
    for name, check in checks.items():
        if check.bad:
            out.append(
                f"\nWARNING {name}: {len(check.bad)} of {check.turns} turns not as expected, e.g. "
                + "; ".join(b for b in check.bad if b)
            )
    return "\n".join(out)


# ------------------------------------------------------------------------------ bursts

BURST_TEXTS = ("hi", "I have a question", "about my order 1234")
"""One burst: the messages a user types in quick succession (issue #8's example)."""
BURST_GAP = 0.05
"""Seconds between the messages of a burst: three messages within 100 ms."""
BURST_POLICIES: tuple[tuple[str, int | None], ...] = (
    ("enqueue", None),
    ("merge", None),
    ("merge", 300),
    ("interrupt", None),
    ("reject", None),
)
"""(policy, burst window in ms): ``None`` keeps the bot's default window (BotSettings.burst_window_ms)."""
ENDED = ("answered", "merged", "rejected")
"""Inbound statuses that mean a message ended as part of a turn or with an answer."""


@dataclass
class BurstRun:
    """What one burst policy did, over its rounds."""

    policy: str
    window_ms: int
    conversations: int = 0
    seconds: float = 0.0
    """Wall time from the first message of a round to its last answer, summed over rounds."""
    turns_started: int = 0
    turns_interrupted: int = 0
    replies: int = 0
    inbound: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_reply_s: list[float] = field(default_factory=list)
    last_reply_s: list[float] = field(default_factory=list)
    first_response_s: list[float] = field(default_factory=list)
    """Seconds to the return of the ``answer`` call of a conversation's first message."""
    last_response_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    no_reply: int = 0
    """Conversations that got no stored reply at all."""


@dataclass
class BurstPlan:
    conversations: int
    spread: float
    """Seconds over which the conversations' first messages are spread evenly."""
    rounds: int


class TurnCounter:
    """Counts the runner's turns (``runner.turns.run`` calls) and those a newer message interrupted."""

    def __init__(self, runner: Any) -> None:
        self.started = 0
        self.interrupted = 0
        original = runner.turns.run

        @functools.wraps(original)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.started += 1
            result = await original(*args, **kwargs)
            if result is None:
                self.interrupted += 1
            return result

        runner.turns.run = counted

    def pop(self) -> tuple[int, int]:
        counts = (self.started, self.interrupted)
        self.started = self.interrupted = 0
        return counts


async def burst_round(services: Services, bot: Bot, plan: BurstPlan, run: BurstRun, counter: TurnCounter) -> None:
    """``plan.conversations`` new conversations, each sending BURST_TEXTS 50 ms apart, their starts spread out.

    Each message goes through ``runner.answer`` as the REST chat route sends it
    (every message its own concurrent call). Afterwards the messages table says
    what became of each message and when each reply was stored.
    """
    turn = BotloomTurn(services, bot, Check())
    await turn.prepare(plan.conversations)
    conversations = list(turn.ready)
    began_at: dict[str, datetime] = {}
    responses: dict[str, float] = {}
    first_responses: dict[str, float] = {}
    loop_began = time.perf_counter()

    async def conversation(index: int, conversation_id: str) -> None:
        await asyncio.sleep(plan.spread * index / plan.conversations)
        began = time.perf_counter()
        began_at[conversation_id] = datetime.now(UTC)

        async def send(i: int, text: str) -> None:
            await asyncio.sleep(max(0.0, began + i * BURST_GAP - time.perf_counter()))
            message = InboundMessage(channel=CHANNEL, text=text, sender="bench")
            try:
                await services.inbound.answer(bot, message, conversation_id=conversation_id)
            except Exception as exc:  # noqa: BLE001 - counted and reported (e.g. PoolTimeout), the run goes on
                run.errors.append(f"{type(exc).__name__}: {exc}")
            returned = time.perf_counter() - began
            responses[conversation_id] = max(responses.get(conversation_id, 0.0), returned)
            if i == 0:
                first_responses[conversation_id] = returned

        await asyncio.gather(*(send(i, text) for i, text in enumerate(BURST_TEXTS)))

    counter.pop()
    await asyncio.gather(*(conversation(i, c) for i, c in enumerate(conversations)))
    run.seconds += time.perf_counter() - loop_began
    started, interrupted = counter.pop()
    run.turns_started += started
    run.turns_interrupted += interrupted
    run.conversations += len(conversations)
    async with services.db.connection() as conn:
        cur = await conn.execute(
            "SELECT conversation_id, direction, status, created_at FROM messages WHERE conversation_id = ANY(%s)",
            ([uuid.UUID(c) for c in conversations],),
        )
        rows = await cur.fetchall()
    replies: dict[str, list[datetime]] = defaultdict(list)
    for row in rows:
        if row["direction"] == "inbound":
            run.inbound += 1
            run.statuses[row["status"]] += 1
        else:
            run.replies += 1
            replies[str(row["conversation_id"])].append(row["created_at"])
    for conversation_id in conversations:
        stored = replies.get(conversation_id)
        run.last_response_s.append(responses.get(conversation_id, float("nan")))
        run.first_response_s.append(first_responses.get(conversation_id, float("nan")))
        if not stored:
            run.no_reply += 1
            continue
        run.first_reply_s.append((min(stored) - began_at[conversation_id]).total_seconds())
        run.last_reply_s.append((max(stored) - began_at[conversation_id]).total_seconds())


async def bench_bursts(urls: Any, plan: BurstPlan, data_dir: Path, db_pool_size: int | None) -> list[BurstRun]:
    """Each burst policy in turn (rotated each round), on the demo bot, Postgres checkpointer and locks."""
    settings = load_settings(
        environ={},
        data_dir=str(data_dir),
        secret_key="bench-secret-key",
        checkpointer="postgres",
        database_url=urls.database_url,
        db_pool_size=db_pool_size,
    )
    async with open_services(settings, url=urls.database_url) as services:
        demo = (await ensure_demo(services)).bot
        counter = TurnCounter(services.runner)
        runs = [
            BurstRun(policy, window if window is not None else demo.settings.burst_window_ms)
            for policy, window in BURST_POLICIES
        ]
        await warm_up([BotloomTurn(services, demo, Check())])
        say(
            f"[bursts] {plan.rounds} round(s); per policy and round: {plan.conversations} conversations of "
            f"{len(BURST_TEXTS)} messages {BURST_GAP * 1000:.0f} ms apart, starting over {plan.spread:g} s"
        )
        for r in range(plan.rounds):
            order = runs[r % len(runs) :] + runs[: r % len(runs)]
            for run in order:
                bot = msgspec.structs.replace(
                    demo,
                    settings=msgspec.structs.replace(
                        demo.settings, burst_policy=run.policy, burst_window_ms=run.window_ms
                    ),
                )
                before = run.seconds
                await burst_round(services, bot, plan, run, counter)
                say(f"  round {r + 1} {run.policy} ({run.window_ms} ms window): {run.seconds - before:.1f} s")
        return runs


def burst_report(runs: list[BurstRun], plan: BurstPlan) -> str:
    rows = []
    warnings = []
    for run in runs:
        ended = sum(run.statuses.get(s, 0) for s in ENDED)
        sent = run.conversations * len(BURST_TEXTS)
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(run.statuses.items(), key=lambda kv: -kv[1]))
        first = Summary.of([s * 1000 for s in run.first_reply_s])
        last = Summary.of([s * 1000 for s in run.last_reply_s])
        response = Summary.of([s * 1000 for s in run.last_response_s])
        first_response = Summary.of([s * 1000 for s in run.first_response_s])
        completed = run.turns_started - run.turns_interrupted
        rows.append(
            [
                run.policy,
                f"{run.window_ms}" if run.policy == "merge" else "",
                f"{completed}" + (f" (+{run.turns_interrupted} interrupted)" if run.turns_interrupted else ""),
                f"{run.replies}",
                f"{ended} / {run.inbound} ({sent} sent)",
                statuses,
                ms(first.p50),
                ms(last.p50),
                ms(last.p99),
                ms(first_response.p50),
                ms(response.p99),
                f"{run.seconds:.1f}",
            ]
        )
        if run.errors or run.no_reply or ended != sent:
            warnings.append(
                f"WARNING {run.policy}: {len(run.errors)} answer() calls raised, {run.no_reply} conversations "
                f"without a reply, {sent - ended} of {sent} messages not ended"
                + (f"; e.g. {run.errors[0]}" if run.errors else "")
            )
    out = [
        f"Bursts: {plan.conversations} conversations per policy and round, {plan.rounds} round(s), each "
        f"sending {len(BURST_TEXTS)} messages {BURST_GAP * 1000:.0f} ms apart ({' / '.join(BURST_TEXTS)}), "
        f"the conversations' first messages spread evenly over {plan.spread:g} s; one process, every message "
        "its own concurrent runner.answer call (as the REST chat route makes it); Postgres checkpointer and "
        "conversation locks. Turns: graph turns that ended (and those a newer message cancelled). Replies: "
        "outbound messages stored. Answered / received: inbound messages that ended in a turn or with an "
        "answer (answered, merged, rejected) over those stored. Times from a conversation's first message: "
        "to its first and last reply stored, to the return of its first message's answer call (what a REST "
        "client of that message waits) and to the return of its last answer call (ms).",
        "",
        markdown_table(
            [
                "policy",
                "window ms",
                "turns",
                "replies",
                "answered / received",
                "inbound statuses",
                "first reply p50",
                "last reply p50",
                "last reply p99",
                "1st answer p50",
                "last answer p99",
                "wall s",
            ],
            rows,
        ),
    ]
    out.extend(["", *warnings] if warnings else [])
    return "\n".join(out)


# ------------------------------------------------------------------------------ profile


class Timers:
    """Wall and CPU time and calls per label, for wrapping coroutine functions and async context managers.

    Meant for one turn at a time: then the CPU time spent while a wrapped call is
    in flight is the CPU that call cost (nested calls included).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, label: str, began: tuple[float, float]) -> None:
        self.seconds[label] += time.perf_counter() - began[0]
        self.cpu[label] += time.process_time() - began[1]
        self.calls[label] += 1

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        self.seconds[label] += 0.0  # keep the order of wrapping

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = self.now()
            try:
                return await original(*args, **kwargs)
            finally:
                self.add(label, began)

        setattr(owner, attribute, timed)

    def wrap_sync(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        self.seconds[label] += 0.0

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = self.now()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, began)

        setattr(owner, attribute, timed)

    def wrap_context(self, owner: Any, attribute: str, label: str) -> None:
        """Time entering and leaving an async context manager (not its body)."""
        original = getattr(owner, attribute)
        timers = self
        self.seconds[label + " (acquire)"] += 0.0

        @contextlib.asynccontextmanager
        async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            began = timers.now()
            async with contextlib.AsyncExitStack() as stack:
                value = await stack.enter_async_context(original(*args, **kwargs))
                timers.add(label + " (acquire)", began)
                try:
                    yield value
                finally:
                    released = timers.now()
                    await stack.aclose()
                    timers.add(label + " (release)", released)

        setattr(owner, attribute, timed)


async def profile(urls: Any, kind: str, turns: int, data_dir: Path, html: Path | None) -> str:
    """Break a botloom turn down by part, one turn at a time; optionally a pyinstrument profile."""
    import psycopg

    settings = load_settings(
        environ={},
        data_dir=str(data_dir),
        secret_key="bench-secret-key",
        checkpointer=kind,
        database_url=urls.database_url,
        redis_url=urls.redis_url if kind == "redis" else None,
    )
    async with open_services(settings, url=urls.database_url) as services:
        bot = (await ensure_demo(services)).bot
        turn = BotloomTurn(services, bot, Check())
        graph = BotloomGraph(services, bot, await services.runner.bot_view(bot), Check())
        await turn.prepare(2 * turns // TURNS_PER_CONVERSATION + 10)
        await warm_up([turn, graph])
        timers = Timers()
        runner, store, saver = services.runner, services.store, services.graphs.checkpointer
        # The order here is the order of the table: the turn, then its parts (nested parts indented).
        messages, conversations = store.messages, store.conversations
        timers.wrap(services.inbound, "answer", "TURN: runner.answer")
        timers.wrap(conversations, "get", "  runner query: conversations.get (receive, process)")
        timers.wrap(messages, "add_inbound", "  runner query: messages.add_inbound (+ _touch)")
        timers.wrap_context(runner.locks, "hold", f"  conversation lock, {type(runner.locks).__name__}")
        if hasattr(runner.locks, "hold_then"):  # the lock and the first read in one round trip (#16)
            label = f"  conversation lock + first read (one round trip), {type(runner.locks).__name__}"
            timers.wrap_context(runner.locks, "hold_then", label)
        timers.wrap(messages, "pending_inbound", "  runner query: messages.pending_inbound")
        if hasattr(messages, "pending_with_conversation"):
            timers.wrap(messages, "pending_with_conversation", "  runner query: messages.pending_with_conversation")
        timers.wrap(messages, "set_status", "  runner query: messages.set_status")
        timers.wrap(runner.host, "moderate", "  moderation hooks (in + out)")
        timers.wrap(runner.turns, "_invoke", "  graph: context + ainvoke")
        timers.wrap(runner.contexts, "bot_view", "    context: bot_view (plugin settings query)")
        timers.wrap(saver, "aget_tuple", "    checkpointer.aget_tuple")
        timers.wrap(services.knowledge, "search", "    retrieve: KnowledgeBase.search")
        timers.wrap(services.knowledge.embedder, "embed", "      embed the query (local embedder)")
        timers.wrap(services.engine, "classify", "    classify: OfflineEngine.classify")
        for owner, attribute, label in (
            (getattr(services.engine, "embedder", None), "embed_one", "      embed the text again (local embedder)"),
            (services.engine, "score", "      score intents"),
        ):
            if owner is not None and hasattr(owner, attribute):  # parts an engine of another version may lack
                timers.wrap_sync(owner, attribute, label)
        timers.wrap(services.engine, "respond", "    respond: OfflineEngine.respond")
        for attribute in ("aput", "aput_writes"):
            timers.wrap(saver, attribute, f"    checkpointer.{attribute}")
        timers.wrap(messages, "add_outbound", "  runner query: messages.add_outbound (+ _touch)")
        timers.wrap(messages, "finish", "  runner query: messages.finish")
        if hasattr(messages, "store_turn"):
            timers.wrap(messages, "store_turn", "  runner query: messages.store_turn (replies + finish + what waits)")
        timers.wrap(runner.host, "notify_turn_end", "  on_turn_end hooks")
        timers.seconds[f"  conversation lock, {type(runner.locks).__name__} (release)"] += 0.0
        timers.wrap(runner.bursts, "result_of", "  result_of (reads the stored outcome back)")
        timers.wrap(messages, "get", "    runner query: messages.get")
        timers.wrap(messages, "replies_of_turn", "    runner query: messages.replies_of_turn")
        statements: dict[str, list[float]] = defaultdict(list)
        originals = {name: getattr(psycopg.AsyncCursor, name) for name in ("execute", "executemany")}

        def counting(name: str) -> Any:
            original = originals[name]

            async def call(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                text = query.as_string(self) if hasattr(query, "as_string") else str(query)
                label = ("(executemany) " if name == "executemany" else "") + " ".join(text.split())[:70]
                began = time.perf_counter()
                try:
                    return await original(self, query, *args, **kwargs)
                finally:
                    statements[label].append(time.perf_counter() - began)

            return call

        for name in originals:
            setattr(psycopg.AsyncCursor, name, counting(name))
        step = short_conversations(turn)
        try:
            run = await run_turns(turns, lambda i: step(0, i))
        finally:
            for name, original in originals.items():
                setattr(psycopg.AsyncCursor, name, original)
        # before the runs below add to them
        seconds, cpu, calls = dict(timers.seconds), dict(timers.cpu), dict(timers.calls)
        gstep = short_conversations(graph)
        grun = await run_turns(turns, lambda i: gstep(0, i))
        total = seconds["TURN: runner.answer"] / turns * 1000
        rows = []
        for label, spent in seconds.items():
            per_turn = spent / turns * 1000
            indent = len(label) - len(label.lstrip())
            rows.append(
                [
                    "\u00a0" * indent + label.lstrip(),
                    f"{calls.get(label, 0) / turns:.2f}",
                    f"{per_turn:.2f}",
                    f"{per_turn / total:.0%}",
                    f"{cpu.get(label, 0.0) / turns * 1000:.2f}",
                ]
            )
        lines = [
            f"Profile of {turns} botloom turns (runner.answer), one at a time, {kind} checkpointer, "
            f"p50 {run.summary.p50:.2f} ms a turn; the graph alone (a) p50 {grun.summary.p50:.2f} ms. "
            "Indented parts are inside the part above them.",
            "",
            markdown_table(["part", "calls / turn", "wall ms / turn", "of the turn", "CPU ms / turn"], rows),
            "",
        ]
        srows = []
        for label, times in sorted(statements.items(), key=lambda kv: -sum(kv[1])):
            srows.append([f"`{label}`", f"{len(times) / turns:.2f}", f"{sum(times) / turns * 1000:.3f}"])
        n = sum(len(t) for t in statements.values()) / turns
        lines.append(
            f"SQL statements of a turn (psycopg cursor executes, {n:.1f} a turn; the checkpointer's "
            "and the knowledge search's included):"
        )
        lines.append("")
        lines.append(markdown_table(["statement", "per turn", "ms / turn"], srows))

        if html is not None:
            try:
                from pyinstrument import Profiler
            except ImportError:
                lines.append("\n(pip install pyinstrument for a call-tree profile)")
            else:
                profiler = Profiler(interval=0.0002, async_mode="enabled")
                with profiler:
                    await run_turns(turns, lambda i: step(0, i))
                text = profiler.output_text(unicode=True, color=False, show_all=False)
                await asyncio.to_thread(html.write_text, profiler.output_html())
                await asyncio.to_thread(html.with_suffix(".txt").write_text, text)
                lines.append(
                    f"\npyinstrument call tree of {turns} more turns: {html} (text: {html.with_suffix('.txt')})"
                )
        return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns: a smoke test in under ~2 minutes")
    parser.add_argument(
        "--checkpointers", default=",".join(CHECKPOINTERS), help="comma-separated subset of memory,postgres,redis"
    )
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="concurrent conversations of the throughput runs"
    )
    parser.add_argument("--db-pool-size", type=int, help="BOTLOOM_DB_POOL_SIZE for botloom (default: botloom's)")
    parser.add_argument(
        "--length-checkpointers",
        default="postgres,redis",
        help="checkpointers to run the conversation-length series with (default postgres,redis)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark: break a botloom turn down by part (and pyinstrument it)",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="only the burst scenario (it also runs at the end of the full and --quick runs)",
    )
    parser.add_argument(
        "--burst-conversations",
        type=int,
        help="conversations per burst policy and round (default 64; --quick 16; 0 skips the bursts)",
    )
    parser.add_argument("--burst-rounds", type=int, help="rounds of every burst policy (default 2; --quick 1)")
    parser.add_argument(
        "--burst-spread",
        type=float,
        default=1.0,
        help="seconds over which the conversations' first messages are spread (default 1)",
    )
    parser.add_argument(
        "--length-turns", type=int, help="turns of the conversation-length series (default 1000; --quick 200)"
    )
    parser.add_argument(
        "--length-budget", type=float, help="seconds each length series may take (default 150; --quick 20)"
    )
    parser.add_argument("--profile-turns", type=int, default=300)
    parser.add_argument("--profile-checkpointer", default="postgres", choices=CHECKPOINTERS)
    parser.add_argument("--profile-html", default=str(Path(tempfile.gettempdir()) / "botloom-turn-profile.html"))
    add_server_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    kinds = [k.strip() for k in args.checkpointers.split(",") if k.strip()]
    unknown = set(kinds) - set(CHECKPOINTERS)
    if unknown:
        parser.error(f"unknown checkpointers: {', '.join(sorted(unknown))}")
    length_kinds = tuple(k.strip() for k in args.length_checkpointers.split(",") if k.strip())
    plan = (
        Plan(
            rounds=1,
            seconds=2.0,
            latency_turns=30,
            length_turns=200,
            length_budget=20.0,
            length_kinds=length_kinds,
            concurrency=args.concurrency,
            db_pool_size=args.db_pool_size,
        )
        if args.quick
        else Plan(
            rounds=3,
            seconds=2.5,
            latency_turns=150,
            length_turns=1000,
            length_budget=150.0,
            length_kinds=length_kinds,
            concurrency=args.concurrency,
            db_pool_size=args.db_pool_size,
        )
    )
    if args.length_turns is not None:
        plan = dataclasses.replace(plan, length_turns=args.length_turns)
    if args.length_budget is not None:
        plan = dataclasses.replace(plan, length_budget=args.length_budget)
    burst_plan = BurstPlan(
        conversations=(16 if args.quick else 64) if args.burst_conversations is None else args.burst_conversations,
        spread=args.burst_spread,
        rounds=args.burst_rounds or (1 if args.quick else 2),
    )
    command = "python bench/turn.py" + " ".join(a for a in ["", *sys.argv[1:]] if "url" not in a)
    need_redis = (not args.burst and "redis" in kinds) or (args.profile and args.profile_checkpointer == "redis")
    began = time.perf_counter()
    with (
        servers(args, postgres=True, redis=need_redis, say=say) as urls,
        tempfile.TemporaryDirectory(prefix="botloom-bench-data-") as data,
    ):
        if args.profile:
            text = asyncio.run(
                profile(urls, args.profile_checkpointer, args.profile_turns, Path(data), Path(args.profile_html))
            )
            print(text)
            return
        bursts: list[BurstRun] = []
        if not args.burst:
            results = Results()
            checks = {name: Check() for name in VARIANTS}
            for kind in kinds:
                asyncio.run(bench_checkpointer(kind, urls, plan, results, Path(data), checks))
        if burst_plan.conversations > 0:
            bursts = asyncio.run(bench_bursts(urls, burst_plan, Path(data), args.db_pool_size))
        print()
        if args.burst:
            info = machine()
            print(f"command: `{command}`")
            print(
                f"machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, {info['os']}, "
                f"load average at the end {info['load average']}; total {time.perf_counter() - began:.0f} s"
            )
        else:
            print(report(results, kinds, plan, command, time.perf_counter() - began, checks))
        if bursts:
            print()
            print(burst_report(bursts, burst_plan))


if __name__ == "__main__":
    main()
