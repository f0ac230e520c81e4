"""Answer quality of the offline engine: labelled evaluation sets run through real bot turns.

Three sets, each a JSON-lines file in ``bench/quality/``:

* ``demo.jsonl``: the demo bot ``acme/support`` (``server/demo.py``: small talk,
  handoff, the demo shop's order status, four knowledge documents);
* ``library.jsonl``: a second bot, the front desk of a city library, with its own
  documents (``bench/quality/library/*.md``) and intents
  (``bench/quality/library_plugin.py``), written apart from the first and never
  tuned on: it shows whether the figures carry over to a domain the engine has not
  seen;
* ``gym.jsonl``: a third bot, the front desk of a gym (``bench/quality/gym/*.md``,
  ``bench/quality/gym_plugin.py``), written for the generalisation work of #17:
  its ``tune`` half may be looked at with the demo's, its ``held-out`` half is only
  counted;
* ``bikeshop.jsonl``: a fourth bot, the workshop of a bike repair shop
  (``bench/quality/bikeshop/*.md``, ``bench/quality/bikeshop_plugin.py``), written in
  session 7 before any engine change of that session: a blind set, both halves only
  counted, never read case by case while the engine is changed.

Each line is one case: a short conversation (``turns``, each a user message; a
message of several lines is a burst or an e-mail) and what the bot's answer to its
LAST turn must be (``expect``):

* ``{"intent": "order_status", "says": ["1234"]}``: that intent, and a reply that
  contains every string of ``says`` (case-insensitive);
* ``{"document": "shipping.md", "says": ["9.90"]}``: a knowledge answer from that
  document's passage;
* ``{"none": true}``: out of scope; the fallback or a handover to a person is right,
  any other answer is a wrong confident answer;
* ``{"any": [...]}``: two requests in one message; either answer is right.

Every turn goes through the real turn path (``Inbound.answer``: stored message,
lock, the ``turn`` graph with its PostgreSQL checkpointer, the offline engine, the
knowledge base's hybrid search), one conversation per case. Reported:

* **right**: share of cases answered right (in scope: an answer; out of scope: the
  fallback or a person);
* **intent accuracy**: the turn's intent (``knowledge`` for a knowledge answer,
  none for the fallback) is the expected one;
* **wrong confident answers**: the bot answered (an intent, a slot question or a
  passage) and the answer was not right, over all cases: the number to keep low;
* **needless escalations**: in-scope cases handed to a person;
* **passage never found**: in-scope cases expecting a passage, not answered right, whose turn recorded no
  candidate of the expected document (the search did not return it, or the engine scored it 0): what the
  knowledge search missed, as opposed to the choice among the candidates (a count, also per half);
* **calibration**: of the answers given at confidence >= x, the share right.

**Tuning split.** Each set's cases are split in two halves by a hash of their id
(:func:`split`): ``tune`` and ``held-out``. Work on the engine looks only at the
demo and gym sets' ``tune`` halves (``--split tune --verbose``); their ``held-out``
halves and the whole library set are reported, never tuned on. The figures are printed for each
half too, so a gain that does not carry over to the held-out half shows.

Usage::

    python bench/quality.py                         # all four sets, embedded PostgreSQL
    python bench/quality.py --set demo --verbose    # one set, every case's outcome
    python bench/quality.py --set demo --split tune --verbose   # only the half tuned on
    python bench/quality.py --database-url postgresql://...
    python bench/quality.py --cpu                   # also CPU per turn of classification + retrieval
                                                    # at 50 intents and 10,000 chunks
    python bench/quality.py --split held-out --taught   # each second bot taught first, as its tenant
                                                    # would from the tune half's misses
                                                    # (bench/quality/<set>.taught.json)

No model and no network: the offline engine and the local embedder.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/quality.py``, this file's directory comes first on sys.path and ``bench/http.py``
# would shadow the standard library's ``http`` (as in bench/turn.py): move that directory to the end.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for ``tests.servers`` (the embedded PostgreSQL); botloom is installed

from botloom.core.domain import Bot, BotSettings  # noqa: E402
from botloom.core.settings import Settings  # noqa: E402
from botloom.runtime.services import Services  # noqa: E402

DATA = Path(__file__).resolve().parent / "quality"
SETS = ("demo", "library", "gym", "bikeshop")


@dataclass(frozen=True)
class SecondBot:
    """An evaluation bot besides the demo: its tenant and bot slugs, its plugin file and its documents' folder."""

    tenant: str
    title: str
    slug: str
    plugin: str
    """The plugin's name; its module is ``bench/quality/{set}_plugin.py``, its documents ``bench/quality/{set}/``."""


BOTS = {
    "library": SecondBot(tenant="riverside", title="Riverside Library", slug="desk", plugin="library_desk"),
    "gym": SecondBot(tenant="northside", title="Northside Fitness", slug="frontdesk", plugin="gym_desk"),
    "bikeshop": SecondBot(tenant="spokes", title="Spokes Bike Repair", slug="workshop", plugin="bike_workshop"),
}
"""The evaluation bots other than the demo, by set name."""
BASE_PLUGINS = ("smalltalk", "handoff", "knowledge")
CALIBRATION_STEPS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FLOOR = DATA / "floor.json"
"""Each set's recorded figures that ``tests/test_quality.py`` keeps from getting worse."""


@dataclass(frozen=True)
class Case:
    """One labelled conversation: its user messages and what the answer to the last must be."""

    id: str
    kind: str
    turns: tuple[str, ...]
    expect: dict[str, Any]

    @property
    def in_scope(self) -> bool:
        """Whether the bot should answer (not fall back or hand over)."""
        return not self.expect.get("none")


@dataclass
class Outcome:
    """What the bot did on a case's last turn, and how it is judged."""

    case: Case
    intent: str | None
    confidence: float
    document: str | None
    reply: str
    escalated: bool
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """``intent``, ``knowledge:DOC``, or ``None`` for the fallback (or a handover the user did not ask for)."""
        if self.intent is None:
            return None
        if self.intent == "knowledge":
            return f"knowledge:{self.document}"
        return self.intent

    @property
    def answered(self) -> bool:
        """The bot gave an answer of its own (not the fallback, not a person)."""
        return self.label is not None and not self.escalated

    def matches(self, expect: dict[str, Any]) -> bool:
        """Whether this outcome satisfies one expectation."""
        if "any" in expect:
            return any(self.matches(e) for e in expect["any"])
        if expect.get("none"):
            return self.label is None or self.escalated
        wanted = f"knowledge:{expect['document']}" if "document" in expect else str(expect["intent"])
        if self.label != wanted:
            return False
        text = self.reply.lower()
        return all(s.lower() in text for s in expect.get("says", ()))

    @property
    def right(self) -> bool:
        """Whether the case was answered right."""
        return self.matches(self.case.expect)

    @property
    def unfound(self) -> bool:
        """An in-scope case expecting a passage, not answered right, whose expected documents no candidate names.

        The search never returned (above its threshold) a passage of the document the answer needed, or the
        engine scored it 0: what the knowledge search, not the choice among candidates, missed.
        """
        wanted = {e["document"] for e in _alternatives(self.case.expect) if "document" in e}
        if not wanted or self.right or not self.case.in_scope:
            return False
        return not any(c.get("document") in wanted and c["confidence"] > 0 for c in self.candidates)

    def intent_right(self) -> bool:
        """Whether the turn's intent (``knowledge`` for any passage) is the expected one."""
        return any(_coarse(self.intent) == _coarse_expected(e) for e in _alternatives(self.case.expect))


def _alternatives(expect: dict[str, Any]) -> list[dict[str, Any]]:
    return list(expect["any"]) if "any" in expect else [expect]


def _coarse(intent: str | None) -> str | None:
    return intent


def _coarse_expected(expect: dict[str, Any]) -> str | None:
    if expect.get("none"):
        return None
    return "knowledge" if "document" in expect else str(expect["intent"])


SPLITS = ("tune", "held-out")


def split(case_id: str) -> str:
    """The half of its set a case belongs to: ``tune`` (looked at while improving the engine) or ``held-out``."""
    return SPLITS[zlib.crc32(case_id.encode()) % 2]


def load_cases(name: str, half: str | None = None) -> list[Case]:
    """The cases of the evaluation set ``name`` (``demo`` or ``library``), only those of ``half`` if given."""
    cases = []
    for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            if half is None or split(raw["id"]) == half:
                cases.append(Case(id=raw["id"], kind=raw["kind"], turns=tuple(raw["turns"]), expect=raw["expect"]))
    return cases


async def run_case(services: Services, bot: Bot, case: Case) -> Outcome:
    """Send the case's turns to ``bot`` in a new conversation; judge the last."""
    from botloom.core.messages import InboundMessage
    from botloom.runtime.turn_context import thread_config

    sender = f"quality-{case.id}-{uuid.uuid4().hex[:6]}"
    conversation = await services.store.conversations.create(bot.tenant_id, bot.id, "quality", sender)
    result = None
    for text in case.turns:
        message = InboundMessage(channel="quality", text=text, sender=sender)
        result = await services.inbound.answer(bot, message, conversation_id=conversation.id)
    assert result is not None
    graph = services.graphs.get(bot.graph)
    snapshot = await graph.aget_state(thread_config(bot, conversation.id))
    state = dict(snapshot.values)
    passages = state.get("passages") or []
    document = passages[0]["document"] if passages and result.intent == "knowledge" else None
    return Outcome(
        case=case,
        intent=result.intent,
        confidence=float(result.confidence or 0.0),
        document=document,
        reply=" ".join(r.text for r in result.replies),
        escalated=result.escalated,
        candidates=list(state.get("candidates") or []),
    )


async def evaluate(services: Services, bot: Bot, cases: Sequence[Case]) -> list[Outcome]:
    """Run every case (one at a time) and return their outcomes."""
    return [await run_case(services, bot, case) for case in cases]


def figures(outcomes: Sequence[Outcome], *, halves: bool = True) -> dict[str, Any]:
    """The set's figures: shares in [0, 1] and counts (``halves``: also those of each half of :func:`split`)."""
    total = len(outcomes)
    scope = [o for o in outcomes if o.case.in_scope]
    out = [o for o in outcomes if not o.case.in_scope]
    wrong = [o for o in outcomes if o.answered and not o.right]
    needless = [o for o in scope if o.escalated and not o.right]
    calibration = []
    for x in CALIBRATION_STEPS:
        given = [o for o in outcomes if o.answered and o.confidence >= x]
        calibration.append({"at_least": x, "answers": len(given), "right": sum(o.right for o in given)})
    kinds: dict[str, dict[str, int]] = {}
    for o in outcomes:
        entry = kinds.setdefault(o.case.kind, {"cases": 0, "right": 0})
        entry["cases"] += 1
        entry["right"] += int(o.right)
    result: dict[str, Any] = {
        "cases": total,
        "in_scope": len(scope),
        "out_of_scope": len(out),
        "right": sum(o.right for o in outcomes) / total,
        "right_in_scope": sum(o.right for o in scope) / max(1, len(scope)),
        "right_out_of_scope": sum(o.right for o in out) / max(1, len(out)),
        "intent_accuracy": sum(o.intent_right() for o in outcomes) / total,
        "wrong_confident": len(wrong) / total,
        "wrong_confident_count": len(wrong),
        "needless_escalations": len(needless),
        "fallbacks_in_scope": sum(1 for o in scope if o.label is None and not o.escalated),
        "unfound": sum(o.unfound for o in outcomes),
        "calibration": calibration,
        "kinds": kinds,
    }
    if halves:
        result["halves"] = {}
        for half in SPLITS:
            part = [o for o in outcomes if split(o.case.id) == half]
            if part:
                result["halves"][half] = figures(part, halves=False)
    return result


def report(name: str, result: dict[str, Any]) -> str:
    """The figures of one set as Markdown."""
    pct = "{:.1%}".format
    lines = [
        f"### {name}: {result['cases']} cases ({result['in_scope']} in scope, {result['out_of_scope']} out of scope)",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| right, all cases | {pct(result['right'])} |",
        f"| right, in scope | {pct(result['right_in_scope'])} |",
        f"| right (fallback or person), out of scope | {pct(result['right_out_of_scope'])} |",
        f"| intent accuracy | {pct(result['intent_accuracy'])} |",
        f"| wrong confident answers | {pct(result['wrong_confident'])} ({result['wrong_confident_count']}) |",
        f"| needless escalations | {result['needless_escalations']} |",
        f"| in-scope fallbacks | {result['fallbacks_in_scope']} |",
        f"| not right, expected passage never found | {result['unfound']} |",
        "",
        "| confidence >= | answers | right |",
        "| --- | --- | --- |",
    ]
    for row in result["calibration"]:
        share = pct(row["right"] / row["answers"]) if row["answers"] else "-"
        lines.append(f"| {row['at_least']:.1f} | {row['answers']} | {share} |")
    if result.get("halves"):
        lines += [
            "",
            "| half | cases | right, in scope | wrong confident | passage never found |",
            "| --- | --- | --- | --- | --- |",
        ]
        for half, part in result["halves"].items():
            lines.append(
                f"| {half} | {part['cases']} | {pct(part['right_in_scope'])} | "
                f"{pct(part['wrong_confident'])} ({part['wrong_confident_count']}) | {part['unfound']} |"
            )
    lines += ["", "| kind | cases | right |", "| --- | --- | --- |"]
    for kind, entry in sorted(result["kinds"].items()):
        lines.append(f"| {kind} | {entry['cases']} | {pct(entry['right'] / entry['cases'])} |")
    return "\n".join(lines)


def describe(outcome: Outcome) -> str:
    """One line per case for ``--verbose``."""
    mark = "ok  " if outcome.right else ("WRONG" if outcome.answered else "miss")
    said = outcome.reply.replace("\n", " ")[:70]
    turns = " / ".join(t.replace("\n", " | ") for t in outcome.case.turns)
    return (
        f"{mark} {outcome.case.id:<16} {turns[:60]!r:<62} -> {outcome.label} "
        f"({outcome.confidence:.2f}{', escalated' if outcome.escalated else ''}) {said!r} "
        + " ".join(_candidate(c) for c in outcome.candidates)
    )


def _candidate(c: dict[str, Any]) -> str:
    return f"{c['intent']}{':' + c['document'] if 'document' in c else ''}={c['confidence']}"


# ------------------------------------------------------------------------------ the other bots


def bot_plugin(name: str = "library") -> Any:
    """The intents plugin of the evaluation bot ``name`` (a module loaded from ``bench/quality/{name}_plugin.py``)."""
    spec = importlib.util.spec_from_file_location(f"botloom_quality_{name}", DATA / f"{name}_plugin.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def ensure_bot(services: Services, name: str) -> Bot:
    """The evaluation bot of the set ``name`` (not the demo): its plugins and documents."""
    from botloom.core.config import split_secrets, validate_config

    spec = BOTS[name]
    store = services.store
    tenant = await store.tenants.get_by_slug(spec.tenant) or await store.tenants.create(spec.tenant, spec.title)
    bot = await store.bots.get_by_slug(tenant.id, spec.slug)
    if bot is None:
        bot = await store.bots.create(tenant.id, spec.slug, spec.title, BotSettings())
        for plugin in (*BASE_PLUGINS, spec.plugin):
            schema = services.host.config_schema(plugin)
            config = validate_config(plugin, schema, {})
            public, secret = split_secrets(schema, config)
            await store.plugin_settings.put(tenant.id, bot.id, plugin, enabled=True, config=public, secrets=secret)
    paths = sorted((DATA / name).glob("*.md"))
    await services.knowledge.ingest_paths(tenant.id, bot.id, paths)
    return bot


def taught_path(name: str) -> Path:
    """The teaching file of set ``name``: what a tenant taught its bot after reading the ``tune`` half's misses."""
    return DATA / f"{name}.taught.json"


async def teach(services: Services, bot: Bot, name: str) -> tuple[int, int]:
    """Teach ``bot`` the synonyms and examples of :func:`taught_path` as the API would; (synonyms, examples).

    The file is checked against the API's own request bodies (``server/api/teaching.py``), so nothing is
    taught here that ``PUT /api/v1/bots/{bot}/synonyms`` or ``POST .../intents/{intent}/examples`` would refuse.
    """
    import msgspec

    from botloom.server.api.teaching import ExampleIn, SynonymsBody

    raw = json.loads(taught_path(name).read_text(encoding="utf-8"))
    synonyms = msgspec.convert({"synonyms": raw.get("synonyms", {})}, SynonymsBody).synonyms
    examples = {
        intent: [msgspec.convert({"text": text}, ExampleIn).text for text in texts]
        for intent, texts in raw.get("examples", {}).items()
    }
    store = services.store.teaching
    tenant, bot_id = str(bot.tenant_id), str(bot.id)
    await store.put_synonyms(tenant, bot_id, synonyms)
    for intent, texts in examples.items():
        for text in texts:
            if await store.add_example(tenant, bot_id, intent, text) is None:
                raise SystemExit(f"{taught_path(name)}: the bot has no intent {intent!r}")
    return len(synonyms), sum(len(t) for t in examples.values())


def register_bots(host: Any) -> None:
    """Register the evaluation bots' plugins with ``host`` (before ``collect``)."""
    for name, spec in BOTS.items():
        if spec.plugin not in host.infos:
            host.register(bot_plugin(name), spec.plugin, source="bench")


# ------------------------------------------------------------------------------ CPU per turn


async def cpu_per_turn(
    services: Services,
    intents: int = 50,
    chunks: int = 10_000,
    turns: int = 200,
    *,
    reuse: str | None = None,
    profile: str | None = None,
    explain: bool = False,
) -> dict[str, float]:
    """CPU milliseconds per turn of classification + retrieval at ``intents`` intents and ``chunks`` chunks.

    A synthetic bot: ``chunks`` chunks of generated English-like text ingested into
    its knowledge base, ``intents`` intents of eight examples each; each turn runs
    the offline engine's ``classify`` after the hybrid search, as the graph does.
    CPU is this process's plus the PostgreSQL backend's (read from /proc).
    ``reuse``: a tenant slug whose bot is kept between runs (made once);
    ``profile``: write a cProfile of the measured turns to this path; ``explain``:
    print the plan of one search.
    """
    import random

    from botloom.core.definitions import Intent
    from botloom.graphs.context import TurnContext
    from botloom.graphs.engines import OfflineEngine
    from botloom.graphs.state import PassageRef, turn_input

    rng = random.Random(5)
    words = [w for w in (DATA / "library" / "borrowing.md").read_text().split() if w.isalpha()]
    words += [w for w in (ROOT / "server" / "demo_data" / "shipping.md").read_text().split() if w.isalpha()]
    vocab = sorted(set(words)) + [f"term{i}" for i in range(3000)]
    store = services.store
    slug = reuse or f"cpu-{uuid.uuid4().hex[:6]}"
    tenant = await store.tenants.get_by_slug(slug)
    bot = await store.bots.get_by_slug(tenant.id, "cpu") if tenant is not None else None
    fresh = bot is None
    if tenant is None:
        tenant = await store.tenants.create(slug, "CPU")
    if bot is None:
        bot = await store.bots.create(tenant.id, "cpu", "CPU", BotSettings())
    per_doc = 50
    for d in range(chunks // per_doc):
        sections = []
        for s in range(per_doc):
            body = " ".join(rng.choice(vocab) for _ in range(60))
            sections.append(f"## Section {d}-{s} {rng.choice(vocab)}\n\n{body}.")
        if fresh:
            await services.knowledge.ingest(tenant.id, bot.id, f"doc-{d}.md", "# Doc\n\n" + "\n\n".join(sections))
    await services.knowledge.ensure_index(tenant.id, bot.id)
    made = {
        f"intent_{i}": Intent(
            name=f"intent_{i}",
            description="synthetic",
            examples=tuple(" ".join(rng.choice(vocab) for _ in range(5)) for _ in range(8)),
        )
        for i in range(intents)
    }
    engine = OfflineEngine()
    queries = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 9))) for _ in range(turns)]

    async def search(q: str, limit: int) -> list[Any]:  # as the turn's search for the offline engine
        return await services.knowledge.search(tenant.id, bot.id, q, limit=limit, best_text_match=True)

    ctx = TurnContext(
        tenant_id=tenant.id, bot=bot, conversation_id="cpu", channel="bench", engine=engine, intents=made, search=search
    )
    for q in queries[:20]:  # warm up: caches of the engine and the server
        state: Any = dict(turn_input("t", q))
        await engine.classify(state, ctx)
    # One connection: pin it by searching through a pool of one.
    from botloom.core.knowledge import KnowledgeBase
    from botloom.core.storage.database import Database

    qdb = await Database.open(services.db.url, migrate=False, min_size=1, max_size=1)
    try:
        async with qdb.connection() as conn:
            pid_row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
        backend = int(pid_row["pid"]) if pid_row else 0
        kb = KnowledgeBase(qdb, services.embedder)

        async def pinned(q: str, limit: int) -> list[Any]:
            return await kb.search(tenant.id, bot.id, q, limit=limit, best_text_match=True)

        for q in queries[:20]:
            await pinned(q, 3)
        if explain:
            await _explain(qdb, kb, tenant.id, bot.id, queries[0])
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        server_before, client_before = _process_cpu(backend), time.process_time()
        classify_cpu = 0.0
        for q in queries:
            found = await pinned(q, 3)
            began = time.process_time()
            state = dict(turn_input("t", q))
            state["passages"] = [
                PassageRef(id=p.chunk_id, document=p.document, title=p.title, text=p.text, score=p.score) for p in found
            ]
            await engine.classify(state, ctx)
            classify_cpu += time.process_time() - began
        server_after, client = _process_cpu(backend), time.process_time() - client_before
        if profiler is not None and profile:
            profiler.disable()
            profiler.dump_stats(profile)
    finally:
        await qdb.close()
    server = (server_after - server_before) if server_before is not None and server_after is not None else float("nan")
    return {
        "turns": turns,
        "classify_ms": classify_cpu * 1000 / turns,
        "retrieval_client_ms": (client - classify_cpu) * 1000 / turns,
        "retrieval_server_ms": server * 1000 / turns,
        "total_ms": (server + client) * 1000 / turns,
    }


async def _explain(db: Any, kb: Any, tenant_id: str, bot_id: str, query: str) -> None:
    """Print the plan (EXPLAIN ANALYZE) of one hybrid search."""
    import numpy as np

    from botloom.core.knowledge.scope import parse_scope
    from botloom.core.knowledge.search import expand_query, search_sql

    search = kb.searcher
    scope = parse_scope(tenant_id, bot_id)
    assert scope is not None
    expanded = expand_query(query)
    vector = np.asarray((await search.embedder.embed([expanded]))[0], dtype=np.float32)
    statement = search_sql(scope[1], search.embedder.name, search.embedder.dimension, exact=search.config.exact)
    budget = search.config.max_text_matches
    params = {"tenant": scope[0], "vector": vector, "query": expanded, "n": 20, "budget": budget}
    async with db.connection() as conn:
        await conn.execute("SELECT set_config('hnsw.ef_search', '100', false)")
        cur = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + statement.as_bytes(conn), params)
        for row in await cur.fetchall():
            print(next(iter(row.values())))


def _process_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ main


def _settings(data_dir: Path, url: str) -> Settings:
    from botloom.core.settings import load_settings

    return load_settings(
        environ={}, data_dir=str(data_dir), secret_key="quality-secret-key", checkpointer="postgres", database_url=url
    )


async def run(
    url: str,
    names: Sequence[str],
    *,
    verbose: bool,
    cpu: bool,
    data_dir: Path,
    half: str | None = None,
    taught: bool = False,
) -> dict[str, Any]:
    """Evaluate the sets ``names`` on the database at ``url``; return their figures.

    ``taught``: first teach each bot that has a teaching file (:func:`taught_path`) what it holds.
    """
    from botloom.core.host import PluginHost
    from botloom.runtime.services import open_services
    from botloom.server.demo import ensure_demo

    settings = _settings(data_dir, url)
    host = PluginHost.discover(allow=settings.plugin_allow_list, block=settings.plugin_block_list)
    register_bots(host)
    results: dict[str, Any] = {}
    async with open_services(settings, host=host, url=url) as services:
        bots = {"demo": (await ensure_demo(services)).bot}
        for name in BOTS:
            if name in names:
                bots[name] = await ensure_bot(services, name)
        for name in names:
            if taught and taught_path(name).exists():
                synonyms, examples = await teach(services, bots[name], name)
                print(f"{name}: taught {synonyms} synonyms and {examples} examples ({taught_path(name).name})")
            began = time.perf_counter()
            outcomes = await evaluate(services, bots[name], load_cases(name, half))
            result = figures(outcomes)
            result["seconds"] = round(time.perf_counter() - began, 1)
            results[name] = result
            if verbose:
                for outcome in outcomes:
                    print(describe(outcome))
            print(report(name, result), flush=True)
            print(f"\n({len(outcomes)} cases in {result['seconds']} s)\n", flush=True)
        if cpu:
            measured = await cpu_per_turn(services)
            results["cpu"] = measured
            print(
                "CPU per turn at 50 intents and 10,000 chunks: "
                f"classify {measured['classify_ms']:.2f} ms, retrieval {measured['retrieval_client_ms']:.2f} ms "
                f"(this process) + {measured['retrieval_server_ms']:.2f} ms (PostgreSQL), "
                f"total {measured['total_ms']:.2f} ms",
                flush=True,
            )
    return results


def main() -> None:
    """Run the evaluation sets and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=(*SETS, "all", "both"), default="all", help="one set, or all (both: all)")
    parser.add_argument("--database-url", help="an existing server's database (default: embedded PostgreSQL)")
    parser.add_argument("--verbose", action="store_true", help="print every case's outcome")
    parser.add_argument("--cpu", action="store_true", help="also measure CPU per turn at 50 intents, 10k chunks")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--split", choices=(*SPLITS, "all"), default="all", help="run only this half of each set")
    parser.add_argument(
        "--taught", action="store_true", help="first teach each bot its bench/quality/<set>.taught.json (if any)"
    )
    args = parser.parse_args()
    names = SETS if args.set in {"all", "both"} else (args.set,)
    base = Path(tempfile.mkdtemp(prefix="botloom-quality-"))
    server: Any = None
    try:
        if args.database_url:
            url = args.database_url
        else:
            from tests.servers import start_postgres

            server = start_postgres(base / "postgres")
            url = server.create_database("quality")
        (base / "data").mkdir()
        began = time.perf_counter()
        half = None if args.split == "all" else args.split
        results = asyncio.run(
            run(url, names, verbose=args.verbose, cpu=args.cpu, data_dir=base / "data", half=half, taught=args.taught)
        )
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"commit {commit}, {time.perf_counter() - began:.0f} s, load average {load} on {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}"
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
