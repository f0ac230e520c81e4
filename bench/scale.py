"""Scale-out benchmark: S ``botloom serve --no-workers`` servers and W ``botloom worker`` processes on one database.

For each backend (``postgres``: queue and locks in PostgreSQL; ``redis``: the same
with ``BOTLOOM_REDIS_URL`` set, so the job queue, locks and rate limits live in
Valkey; checkpoints stay in PostgreSQL in both) and each (S, W) of ``--configs``
(``1,1 1,2 2,2`` by default), on loopback, with the demo bot ``acme/support``
(offline engine) on the Twilio channel in ``rest`` mode sending to a local stand-in
of Twilio's Messages API (``tests/twilio_peer.py``):

1. **webhooks**: a closed loop of signed Twilio webhooks (``--concurrency`` in
   flight, spread round-robin over the S servers, as a load balancer would) for
   ``--seconds``; then the W workers drain the queue (each webhook is a turn and a
   delivery). Reports acknowledgements/s and the queue's turns/s (replies at the
   stand-in over the time from the first webhook to the last reply);
2. **REST chat**: a closed loop of ``POST /api/v1/bots/acme/support/messages``
   (``--rest-concurrency`` clients, each its own conversation, round-robin over the
   servers) for ``--seconds``: turns/s run by the servers in the request;
3. **replies at load**: an open loop of webhooks at ``--reply-load`` of (1)'s
   turns/s for ``--seconds``: reply p50/p99 from webhook to the reply at the stand-in.

Exactly-once: every webhook of (1) and (3) has its own sender, and the stand-in's
sends are counted per sender: each must have exactly one reply (none missing,
none twice); each REST turn must answer 200 with a reply.

CPU: user + system seconds of every process from ``/proc`` (servers, workers, and
PostgreSQL's postmaster with all its backends, including exited ones; Valkey's too
with ``redis``), read before and after each phase: CPU ms per acknowledgement
(servers in (1)), per webhook turn + delivery (workers in (1): the turn job sends
its replies itself, ``InboundService.run_turns``, so a delivery is not a job of its
own and its CPU is inside this figure), per REST turn
(servers in (2)), and the database's CPU per operation. These are less sensitive
to a loaded machine than throughput, which on a shared 2-core machine says little
about scale-out. The load generator runs in its own process and is not counted.

Usage::

    python bench/scale.py                         # both backends, 3 configs, ~10 minutes
    python bench/scale.py --quick                 # short phases: a smoke test
    python bench/scale.py --backends postgres --configs 1,1 2,2 --seconds 10

Nothing asserts a timing; the figures are printed as Markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``bench/http.py`` would shadow the standard library's ``http`` package: move this directory last (see webhooks.py).
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from common import ROOT, Summary, add_server_arguments, machine, markdown_table, ms, servers
from webhooks import SECRET_KEY, cpu_seconds, postmaster_pid, prepare, reply_latencies, tree_cpu_seconds

os.environ.pop("OPENAI_API_KEY", None)  # the offline engine, always

from tests.servers import free_port
from tests.twilio_peer import TwilioPeer, inbound_form, sign

REST_ROUTE = "/api/v1/bots/acme/support/messages"
WEBHOOK_ROUTE = "/channels/twilio/acme/support"


def say(line: str) -> None:
    """Progress, on standard error."""
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the load generator (own process)


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """``--load``: webhooks or REST turns spread round-robin over ``spec['bases']``; closed or open loop.

    Webhooks are signed over the public URL (the first server's), as Twilio signs
    the load balancer's address; each comes from its own sender so its reply can be
    matched. Returns counts, latencies (ms), errors and each sender's send time
    (``time.monotonic``, shared by the processes of a Linux machine).
    """
    import aiohttp

    bases: list[str] = spec["bases"]
    seconds, concurrency, rate = spec["seconds"], spec["concurrency"], spec.get("rate", 0.0)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    unanswered = 0
    counter = 0

    async def webhook(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        counter += 1
        sender = f"{spec['prefix']}{counter:07d}"
        form = inbound_form("hello", sender=sender)
        headers = {"X-Twilio-Signature": sign(spec["public"] + WEBHOOK_ROUTE, form, spec["token"])}
        began = time.monotonic()
        try:
            async with session.post(
                bases[counter % len(bases)] + WEBHOOK_ROUTE, data=form, headers=headers
            ) as response:
                await response.read()
                if response.status != 200:
                    errors[str(response.status)] += 1
                    return
        except (TimeoutError, aiohttp.ClientError) as exc:
            errors[type(exc).__name__] += 1
            return
        latencies.append((time.monotonic() - began) * 1000)
        sent[sender] = began

    async def rest(session: aiohttp.ClientSession, client: int, conversation: list[str | None]) -> None:
        nonlocal counter, unanswered
        counter += 1
        body = {"text": "hi", "conversation_id": conversation[0]}
        headers = {"Authorization": f"Bearer {spec['token']}"}
        began = time.monotonic()
        try:
            async with session.post(bases[client % len(bases)] + REST_ROUTE, json=body, headers=headers) as response:
                data = await response.json(content_type=None)
                if response.status != 200:
                    errors[str(response.status)] += 1
                    return
        except (TimeoutError, aiohttp.ClientError) as exc:
            errors[type(exc).__name__] += 1
            return
        latencies.append((time.monotonic() - began) * 1000)
        conversation[0] = data["conversation_id"]
        if not data.get("replies"):
            unanswered += 1

    connector = aiohttp.TCPConnector(limit=max(concurrency, 64))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        began = time.monotonic()
        deadline = began + seconds
        if spec["mode"] == "rest":

            async def rest_client(index: int) -> None:
                conversation: list[str | None] = [None]
                while time.monotonic() < deadline:
                    await rest(session, index, conversation)

            await asyncio.gather(*(rest_client(i) for i in range(concurrency)))
        elif rate <= 0:

            async def webhook_client() -> None:
                while time.monotonic() < deadline:
                    await webhook(session)

            await asyncio.gather(*(webhook_client() for _ in range(concurrency)))
        else:
            tasks = []
            tick = began
            while tick < deadline:
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
                tasks.append(asyncio.create_task(webhook(session)))
                tick += 1 / rate
            await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
    return {
        "count": len(latencies),
        "began": began,
        "seconds": elapsed,
        "latencies_ms": latencies,
        "errors": dict(errors),
        "sent": sent,
        "unanswered": unanswered,
    }


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`generate` in a process of its own (its CPU is not the servers')."""
    done = subprocess.run(
        [sys.executable, __file__, "--load", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


# ------------------------------------------------------------------------------ processes


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], log: Path, ready_url: str | None = None) -> Iterator[int]:
    """A botloom process writing to ``log``, answering ``ready_url`` (or printing a line); SIGTERM on exit.

    Unlike ``webhooks.process`` its output goes to a file, not to a pipe nobody
    reads: a process that logs much under load would otherwise block on a full pipe.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start: {log.read_text(errors='replace')[-2000:]}")
            if ready_url is None:
                if log.stat().st_size:
                    break
            else:
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(ready_url, timeout=2).read()
                    break
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def problems(log: Path) -> int:
    """Lines of a process's log at WARNING or above (the processes log at WARNING)."""
    text = log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if any(level in line for level in ("WARNING", "ERROR", "CRITICAL")))


# ------------------------------------------------------------------------------ CPU accounting


def redis_pid(redis_url: str) -> int | None:
    """The Valkey/Redis server's process id, when it runs on this machine."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}").exists() else None


@dataclass
class Meter:
    """CPU seconds of groups of processes between :meth:`start` and :meth:`stop`."""

    groups: dict[str, list[int]]
    trees: set[str] = field(default_factory=set)
    """Groups measured with their children (the database servers)."""
    began: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        read = {name: (tree_cpu_seconds if name in self.trees else cpu_seconds) for name in self.groups}
        return {name: sum(read[name](pid) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        """Take the first reading."""
        self.began = self._now()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since :meth:`start`."""
        now = self._now()
        self.used = {name: now[name] - self.began[name] for name in self.groups}
        return self.used


# ------------------------------------------------------------------------------ one configuration


@dataclass
class Result:
    """The figures of one backend and (S, W)."""

    backend: str
    servers: int
    workers: int
    acks: dict[str, Any] = field(default_factory=dict)
    drain_seconds: float = 0.0
    webhook_turns: int = 0
    rest: dict[str, Any] = field(default_factory=dict)
    open_loop: dict[str, Any] = field(default_factory=dict)
    open_rate: float = 0.0
    reply_ms: list[float] = field(default_factory=list)
    sends: Counter[int] = field(default_factory=Counter)
    """How many senders got how many replies (exactly once: only the key 1)."""
    cpu_webhooks: dict[str, float] = field(default_factory=dict)
    cpu_rest: dict[str, float] = field(default_factory=dict)
    log_problems: int = 0
    """Lines logged at WARNING or above by the servers and workers."""

    @property
    def ack_rate(self) -> float:
        """Acknowledged webhooks per second."""
        return self.acks["count"] / self.acks["seconds"] if self.acks else 0.0

    @property
    def webhook_turn_rate(self) -> float:
        """Webhook turns (with their delivery) per second, from the first webhook to the last reply."""
        return self.webhook_turns / self.drain_seconds if self.drain_seconds else 0.0

    @property
    def rest_rate(self) -> float:
        """REST chat turns per second."""
        return self.rest["count"] / self.rest["seconds"] if self.rest else 0.0


def wait_replies(peer: TwilioPeer, senders: dict[str, float], timeout: float) -> float:
    """Wait until every sender has a reply at the stand-in (up to ``timeout``); the monotonic time of the last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrived = {m.to for m in peer.sent}
        if all(s in arrived for s in senders):
            break
        time.sleep(0.2)
    times = [m.at for m in peer.sent if m.to in senders]
    return max(times) if times else time.monotonic()


def count_sends(peer: TwilioPeer, senders: dict[str, float], into: Counter[int]) -> None:
    """Add how many replies each sender got (after a grace period for late duplicates)."""
    per = Counter(m.to for m in peer.sent if m.to in senders)
    for sender in senders:
        into[per.get(sender, 0)] += 1


def run_config(
    args: argparse.Namespace,
    backend: str,
    s: int,
    w: int,
    env: dict[str, str],
    peer: TwilioPeer,
    db_pids: dict[str, list[int]],
) -> Result:
    """Start S servers and W workers, run the three phases, stop them."""
    result = Result(backend, s, w)
    ports = [free_port() for _ in range(s)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    public = env["BOTLOOM_PUBLIC_URL"]
    tag = f"+1{'7' if backend == 'redis' else '8'}{s}{w}"
    with contextlib.ExitStack() as stack:
        say(f"[{backend} S={s} W={w}] starting {s} server(s) and {w} worker(s) ...")
        logs = Path(args.logs) / f"{backend}-{s}-{w}"
        logs.mkdir(parents=True, exist_ok=True)
        server_pids = [
            stack.enter_context(
                started(
                    [sys.executable, "-m", "botloom", "serve", "--port", str(port), "--no-workers"],
                    env,
                    logs / f"serve-{i}.log",
                    f"http://127.0.0.1:{port}/health",
                )
            )
            for i, port in enumerate(ports)
        ]
        worker_pids = [
            stack.enter_context(started([sys.executable, "-m", "botloom", "worker"], env, logs / f"worker-{i}.log"))
            for i in range(w)
        ]
        stack.callback(lambda: setattr(result, "log_problems", sum(problems(f) for f in logs.glob("*.log"))))
        groups = {"servers": server_pids, "workers": worker_pids, **db_pids}
        meter = Meter(groups, trees=set(db_pids))
        webhook_spec = {"bases": bases, "public": public, "token": peer.auth_token, "mode": "webhooks"}

        # warm-up: every process imports lazily and fills its caches on its first turns
        warm = run_load({**webhook_spec, "seconds": args.warmup, "concurrency": 4, "prefix": tag + "0"})
        run_load({"bases": bases, "token": args.api_key, "mode": "rest", "seconds": args.warmup, "concurrency": 2 * s})
        wait_replies(peer, warm["sent"], timeout=120)

        say(f"[{backend} S={s} W={w}] webhooks, closed loop of {args.concurrency} for {args.seconds:g} s ...")
        peer.reset()
        meter.start()
        acks = run_load({**webhook_spec, "seconds": args.seconds, "concurrency": args.concurrency, "prefix": tag + "1"})
        last = wait_replies(peer, acks["sent"], timeout=args.drain_timeout)
        result.cpu_webhooks = meter.stop()
        result.acks = acks
        result.webhook_turns = sum(1 for m in peer.sent if m.to in acks["sent"])
        result.drain_seconds = max(1e-9, last - acks["began"])
        time.sleep(1.0)  # a duplicate would come within the sweep's retry, much later; this catches a racing one
        count_sends(peer, acks["sent"], result.sends)

        say(f"[{backend} S={s} W={w}] REST chat, {args.rest_concurrency} clients for {args.seconds:g} s ...")
        meter.start()
        result.rest = run_load(
            {
                "bases": bases,
                "token": args.api_key,
                "mode": "rest",
                "seconds": args.seconds,
                "concurrency": args.rest_concurrency,
            }
        )
        result.cpu_rest = meter.stop()

        result.open_rate = max(1.0, result.webhook_turn_rate * args.reply_load)
        say(f"[{backend} S={s} W={w}] replies at {result.open_rate:.1f} webhooks/s, open loop ...")
        peer.reset()
        result.open_loop = run_load(
            {**webhook_spec, "seconds": args.seconds, "concurrency": 64, "rate": result.open_rate, "prefix": tag + "2"}
        )
        result.reply_ms, _ = reply_latencies(result.open_loop, peer, timeout=args.drain_timeout)
        time.sleep(1.0)
        count_sends(peer, result.open_loop["sent"], result.sends)
    return result


# ------------------------------------------------------------------------------ report


def per_op(cpu: dict[str, float], group: str, count: int) -> str:
    """CPU milliseconds of ``group`` per operation."""
    if group not in cpu or not count:
        return "-"
    return f"{cpu[group] * 1000 / count:.1f}"


def report(args: argparse.Namespace, results: list[Result], load_before: str) -> str:
    """The figures as Markdown."""
    throughput, cost = [], []
    for r in results:
        reply = Summary.of(r.reply_ms)
        total = sum(r.sends.values())
        once = r.sends.get(1, 0)
        rest_errors = sum(r.rest["errors"].values()) + r.rest["unanswered"]
        errors = sum(r.acks["errors"].values()) + sum(r.open_loop["errors"].values())
        throughput.append(
            [
                r.backend,
                f"({r.servers},{r.workers})",
                f"{r.ack_rate:.0f}",
                f"{r.webhook_turn_rate:.1f}",
                f"{r.rest_rate:.1f}",
                f"{r.open_rate:.1f}",
                ms(reply.p50),
                ms(reply.p99),
                f"{once}/{total}" + (f" (missing {r.sends.get(0, 0)}, twice+ {total - once - r.sends.get(0, 0)})"),
                f"{errors} / {rest_errors}",
                r.log_problems,
            ]
        )
        db = "postgres" if r.backend == "postgres" else "postgres+valkey"
        db_webhooks = sum(v for k, v in r.cpu_webhooks.items() if k in ("postgres", "valkey"))
        db_rest = sum(v for k, v in r.cpu_rest.items() if k in ("postgres", "valkey"))
        n_acks, n_rest = r.acks["count"], r.rest["count"]
        cost.append(
            [
                r.backend,
                f"({r.servers},{r.workers})",
                per_op(r.cpu_webhooks, "servers", n_acks),
                per_op(r.cpu_webhooks, "workers", r.webhook_turns),
                f"{db_webhooks * 1000 / max(1, n_acks):.1f}",
                per_op(r.cpu_rest, "servers", n_rest),
                f"{db_rest * 1000 / max(1, n_rest):.1f}",
                db,
            ]
        )
    info = machine()
    where = f"{info['nproc']} cores, {info['cpu']}, Python {info['python']}"
    return "\n".join(
        [
            f"machine: {where}; load average before {load_before}, after {info['load average']}",
            f"phases of {args.seconds:g} s: webhooks closed loop of {args.concurrency}, REST chat "
            f"{args.rest_concurrency} clients, replies in an open loop at {args.reply_load:.0%} of the webhook turns/s"
            + ("; BOTLOOM_WEBHOOK_INBOX=true" if getattr(args, "inbox", False) else ""),
            "",
            markdown_table(
                [
                    "backend",
                    "(S,W)",
                    "acks/s",
                    "webhook turns/s (workers)",
                    "REST turns/s (servers)",
                    "open loop /s",
                    "reply p50 ms",
                    "reply p99 ms",
                    "replied exactly once",
                    "errors webhooks / REST",
                    "warnings logged",
                ],
                throughput,
            ),
            "",
            markdown_table(
                [
                    "backend",
                    "(S,W)",
                    "servers CPU ms / ack",
                    "workers CPU ms / webhook turn + delivery",
                    "database CPU ms / webhook (ack + turn + delivery)",
                    "servers CPU ms / REST turn",
                    "database CPU ms / REST turn",
                    "database processes",
                ],
                cost,
            ),
        ]
    )


# ------------------------------------------------------------------------------ main


async def api_key(database_url: str, data_dir: str) -> str:
    """A fresh API key of the demo tenant (created with the demo bot when missing)."""
    from botloom.core.settings import load_settings
    from botloom.runtime.services import open_services
    from botloom.server.demo import ensure_demo

    settings = load_settings(environ={}, data_dir=data_dir, secret_key=SECRET_KEY)
    async with open_services(settings, url=database_url) as services:
        return (await ensure_demo(services)).api_key


def main() -> None:
    """Parse the arguments, start the database (and Valkey), run every backend and configuration, print Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16, help="webhooks in flight in the closed loop")
    parser.add_argument("--rest-concurrency", type=int, default=8, help="REST chat clients (one conversation each)")
    parser.add_argument("--reply-load", type=float, default=0.5, help="the open loop's rate, share of turns/s")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="longest wait for the queue to drain")
    parser.add_argument(
        "--configs",
        nargs="+",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=[(1, 1), (1, 2), (2, 2)],
        help="(servers,workers) pairs, e.g. 1,1 1,2 2,2",
    )
    parser.add_argument("--backends", default="postgres,redis", help="postgres, redis or both (comma-separated)")
    parser.add_argument(
        "--logs", default=str(Path(tempfile.gettempdir()) / "botloom-bench-scale"), help="where processes log"
    )
    parser.add_argument("--quick", action="store_true", help="short phases: a smoke test")
    parser.add_argument(
        "--inbox", action="store_true", help="BOTLOOM_WEBHOOK_INBOX=true: servers acknowledge after one inbox row"
    )
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(generate(json.loads(args.load)))))
        return
    if args.quick:
        args.seconds, args.warmup = 3.0, 1.0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with (
        contextlib.ExitStack() as stack,
        servers(args, redis="redis" in backends, say=say) as found,
        TwilioPeer() as peer,
    ):
        assert found.database_url is not None
        data_dir = tempfile.mkdtemp(prefix="botloom-bench-scale-")
        stack.callback(shutil.rmtree, data_dir, True)
        public = f"http://127.0.0.1:{free_port()}"  # the load balancer's address (signatures); nothing listens there
        asyncio.run(prepare(found.database_url, data_dir, peer, public))
        args.api_key = asyncio.run(api_key(found.database_url, data_dir))
        db_pids: dict[str, list[int]] = {}
        if (pid := postmaster_pid(found.database_url)) is not None:
            db_pids["postgres"] = [pid]
        base_env = {
            "BOTLOOM_DATABASE_URL": found.database_url,
            "BOTLOOM_DATA_DIR": data_dir,
            "BOTLOOM_SECRET_KEY": SECRET_KEY,
            "BOTLOOM_PUBLIC_URL": public,
            "BOTLOOM_RATE_LIMIT_PER_MINUTE": "1000000000",
            "BOTLOOM_LOG_LEVEL": "WARNING",
            "BOTLOOM_ALLOWED_ENDPOINTS": f"127.0.0.1:{peer.port}",
            "BOTLOOM_WEBHOOK_INBOX": "true" if args.inbox else "false",
        }
        results = []
        for backend in backends:
            env = dict(base_env)
            pids = dict(db_pids)
            if backend == "redis":
                assert found.redis_url is not None
                env["BOTLOOM_REDIS_URL"] = found.redis_url
                if (pid := redis_pid(found.redis_url)) is not None:
                    pids["valkey"] = [pid]
            for s, w in args.configs:
                results.append(run_config(args, backend, s, w, env, peer, pids))
                say(report(args, results, load_before))  # so far: a run cut short keeps what it measured
        print(report(args, results, load_before))


if __name__ == "__main__":
    main()
