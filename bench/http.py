"""HTTP benchmark: REST chat turns through the whole botloom server next to a bare Litestar app.

Both servers answer ``POST /api/v1/bots/acme/support/messages`` with the JSON body
``{"text": "hi", "conversation_id": ...}``:

* **botloom** — ``python -m botloom serve --port P --demo`` (the demo bot
  ``acme/support``, offline engine, local embedder; API key auth, rate limit
  middleware, the conversation lock, the message store, the ``turn`` graph with
  ``AsyncPostgresSaver``; its job workers run in process as by default);
* **bare** — a Litestar app (this file, ``--serve-bare``) that checks a static
  bearer token and runs a LangGraph ``StateGraph`` of five trivial async nodes
  (the turn graph's shape, LangChain messages accumulating) compiled with
  ``AsyncPostgresSaver`` on a pool as large as botloom's (10), on the same
  PostgreSQL server (another database). It holds an in-process lock per
  conversation, so turns of one conversation do not race (botloom serialises
  them too). No botloom import.

Each server is one uvicorn process (uvloop, httptools) pinned to core 0; the load
generator is ``wrk`` (Debian's ``apt-get install wrk``) pinned to core 1, one
thread, 16 connections (closed loop), on loopback. PostgreSQL (started with
``tests/servers.py``) is not pinned. Two workloads per server:

* **new conversation per request** — no ``conversation_id``: each request starts
  a conversation (botloom creates its row; the bare app a fresh thread id);
* **8 fixed conversations** — requests cycle over 8 conversations created first.

Each configuration gets a warm-up, then a measured window (``--seconds``, 20 by
default; ``--quick``: 3). The servers are measured alternately (botloom, bare,
botloom, bare...) so drift on a shared machine hits both; each round starts one server later
than the one before (with variants, no server always runs right after the same one). botloom's per-key rate
limit (``BOTLOOM_RATE_LIMIT_PER_MINUTE``, 600 by default) is raised so it does not
cap the run. Throughput is printed as a ratio botloom/bare; #16's goal is
≥ 2. Each server's own CPU time per turn (user + system, ``/proc``) is printed
too: on a shared machine it moves less than turns/s; so is PostgreSQL's (its main
process and backends, while that server's round ran: all servers share it, one at a
time). ``--variant NAME=DIR`` adds
a botloom server imported from another tree (e.g. a symlink tree of the commit
before a change), alternated with the others: an A/B in one run. ``--py-spy DIR``
records each botloom server's first round (samples holding the GIL). Nothing
asserts a timing.

Usage::

    python bench/http.py            # ~3 minutes
    python bench/http.py --quick    # smoke test, under a minute
    python bench/http.py --only-new --variant before=/tmp/before-tree --py-spy /tmp/spy
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/http.py``, this file's directory comes first on sys.path and
# this module would shadow the standard library's ``http`` package (used by httpx,
# uvicorn, litestar): drop that directory before importing anything else.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from litestar import Litestar, Request, post
from litestar.exceptions import NotAuthorizedException

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROUTE = "/api/v1/bots/acme/support/messages"
BARE_KEY = "bare-bench-key"
SERVER_CORE = 0
CLIENT_CORE = 1
CONCURRENCY = 16
FIXED_CONVERSATIONS = 8
GOAL = 2.0
PY_SPY = str(Path(sys.executable).parent / "py-spy")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the bare app


def bare_app(database_url: str) -> Any:
    """A Litestar app answering the REST chat route with the bare five-node LangGraph graph (``bench/bare.py``)."""
    from bench.bare import bare_pool, build_bare_graph

    pool = bare_pool(database_url)
    holder: dict[str, Any] = {}
    locks: dict[str, asyncio.Lock] = {}

    async def startup() -> None:
        await pool.open()
        saver = AsyncPostgresSaver(conn=pool)
        await saver.setup()
        holder["graph"] = build_bare_graph(saver)

    async def shutdown() -> None:
        await pool.close()

    @post(ROUTE, status_code=200)
    async def messages(data: dict[str, Any], request: Request[Any, Any, Any]) -> dict[str, Any]:
        if request.headers.get("authorization") != f"Bearer {BARE_KEY}":
            raise NotAuthorizedException("bad key")
        conversation_id = data.get("conversation_id") or str(uuid.uuid4())
        lock = locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            out = await holder["graph"].ainvoke(
                {"messages": [HumanMessage(content=str(data["text"]))]},
                {"configurable": {"thread_id": conversation_id}},
            )
        return {
            "conversation_id": conversation_id,
            "replies": [{"text": str(out["messages"][-1].content)}],
            "intent": out.get("intent"),
        }

    @post("/ready-probe", status_code=200)
    async def ready_probe() -> dict[str, bool]:
        return {"ok": "graph" in holder}

    return Litestar([messages, ready_probe], on_startup=[startup], on_shutdown=[shutdown])


def serve_bare(port: int, database_url: str) -> None:
    import uvicorn

    uvicorn.run(
        bare_app(database_url), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


# ------------------------------------------------------------------------------ servers


def pin(process: subprocess.Popen[bytes], core: int) -> None:
    """Keep a started process (and the threads it starts later) on one core."""
    os.sched_setaffinity(process.pid, {core})


def post_json(port: int, path: str, body: dict[str, Any], key: str, timeout: float = 30.0) -> tuple[int, Any]:
    import httpx

    response = httpx.post(
        f"http://127.0.0.1:{port}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def wait_until(check: Any, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(Exception):
            found = check()
            if found:
                return found
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def start_botloom(
    port: int, database_url: str, base: Path, name: str = "botloom", tree: str | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``botloom serve --demo``; with ``tree``, botloom imported from that folder (``PYTHONPATH``) instead."""
    import httpx

    log = base / f"{name}.log"
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    env.update(
        BOTLOOM_DATABASE_URL=database_url,
        BOTLOOM_SECRET_KEY="bench-secret-key-" + uuid.uuid4().hex,
        BOTLOOM_DATA_DIR=str(base / "botloom-data"),
        BOTLOOM_RATE_LIMIT_PER_MINUTE="100000000",
    )
    env.pop("OPENAI_API_KEY", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "botloom", "serve", "--port", str(port), "--demo"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(base),
        )
    pin(process, SERVER_CORE)
    pattern = re.compile(r"API key of tenant acme \(shown once\): (blk_\S+)")

    def key() -> str | None:
        match = pattern.search(log.read_text(errors="replace"))
        return match.group(1) if match else None

    try:
        api_key = wait_until(key, process, log, "botloom serve")
        ready = f"http://127.0.0.1:{port}/ready"
        wait_until(lambda: httpx.get(ready, timeout=2).status_code == 200, process, log, "botloom /ready")
    except BaseException:
        stop(process)  # never leave a server behind
        raise
    return process, api_key, log


def start_bare(port: int, database_url: str, base: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = base / "bare.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port), "--database-url", database_url],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pin(process, SERVER_CORE)
    try:
        ready = lambda: post_json(port, "/ready-probe", {}, BARE_KEY, 2)[1] == {"ok": True}  # noqa: E731
        wait_until(ready, process, log, "bare app")
    except BaseException:
        stop(process)  # never leave a server behind
        raise
    return process, log


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/PID/stat``), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu(postmaster: int | None) -> float:
    """CPU seconds of the PostgreSQL server so far: its main process, its reaped and its live backends."""
    if postmaster is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat(postmaster)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(postmaster):
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = _stat(int(entry.name))
                if int(child[1]) == postmaster:  # a backend
                    total += (int(child[11]) + int(child[12])) / tick
    return total


def postmaster_of(database_url: str) -> int | None:
    """The local PostgreSQL server's main process (a backend's parent), or ``None`` when it is not local."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        return int(_stat(int(row[0]))[1]) if row else None
    except OSError:
        return None


# ------------------------------------------------------------------------------ wrk

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local conversations = {%(conversations)s}
local n = 0
request = function()
  if #conversations == 0 then
    return wrk.format(nil, nil, nil, '{"text": "hi", "conversation_id": null}')
  end
  n = n + 1
  local id = conversations[(n %% #conversations) + 1]
  return wrk.format(nil, nil, nil, '{"text": "hi", "conversation_id": "' .. id .. '"}')
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %%d, "seconds": %%f, "non2xx": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p99_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def run_wrk(port: int, key: str, conversations: list[str], seconds: float, base: Path) -> dict[str, Any]:
    script = base / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(WRK_SCRIPT % {"key": key, "conversations": ", ".join(f'"{c}"' for c in conversations)})
    command = [
        "taskset", "-c", str(CLIENT_CORE),
        "wrk", "-t1", f"-c{CONCURRENCY}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
        "-s", str(script), f"http://127.0.0.1:{port}{ROUTE}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    found: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    found["rps"] = found["requests"] / found["seconds"]
    return found


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per configuration")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per configuration")
    parser.add_argument("--rounds", type=int, default=1, help="alternating botloom/bare rounds per workload")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: start one with tests/servers.py)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also measure botloom imported from DIR (a folder holding a 'botloom' package, e.g. a symlink tree of "
        "another commit), alternated with the others: an A/B of two versions in one run",
    )
    parser.add_argument("--only-new", action="store_true", help="only the new-conversation-per-request workload")
    parser.add_argument("--py-spy", metavar="DIR", help="record each botloom server with py-spy in its first round")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.database_url)
        return 0
    if shutil.which("wrk") is None:
        say("wrk is not installed (apt-get install -y wrk)")
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        say("needs two cores (server on core 0, load generator on core 1)")
        return 2
    seconds = 3.0 if args.quick else args.seconds
    warmup = 2.0 if args.quick else 5.0

    import psycopg

    from tests.servers import free_port, start_postgres

    base = Path(tempfile.mkdtemp(prefix="botloom-bench-http-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        if args.database_url:
            server_url = args.database_url
        else:
            began = time.perf_counter()
            pg = stack.enter_context(start_postgres(base / "postgres"))
            server_url = pg.url
            say(f"started PostgreSQL in {time.perf_counter() - began:.1f} s")
        variants = dict(v.split("=", 1) for v in args.variant)
        urls = {}
        for name in ("bench_http_botloom", "bench_http_bare", *(f"bench_http_{v}" for v in variants)):
            db = f"{name}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            urls[name] = server_url.rsplit("/", 1)[0] + "/" + db

        botloom_port, bare_port = free_port(), free_port()
        began = time.perf_counter()
        botloom, api_key, botloom_log = start_botloom(botloom_port, urls["bench_http_botloom"], base)
        stack.callback(stop, botloom)
        bare, bare_log = start_bare(bare_port, urls["bench_http_bare"], base)
        stack.callback(stop, bare)
        say(f"servers ready in {time.perf_counter() - began:.1f} s (botloom :{botloom_port}, bare :{bare_port})")

        postmaster = postmaster_of(server_url)
        targets = {"botloom": (botloom_port, api_key), "bare": (bare_port, BARE_KEY)}
        pids = {"botloom": botloom.pid}
        for variant, tree in variants.items():
            port = free_port()
            process, key, _ = start_botloom(port, urls[f"bench_http_{variant}"], base, variant, tree)
            stack.callback(stop, process)
            targets[variant] = (port, key)
            pids[variant] = process.pid
            say(f"{variant} ready (:{port}, botloom from {tree})")
        # Check each answers a turn, and create the fixed conversations.
        fixed: dict[str, list[str]] = {}
        for name, (port, key) in targets.items():
            fixed[name] = []
            for _ in range(FIXED_CONVERSATIONS):
                status, body = post_json(port, ROUTE, {"text": "hi", "conversation_id": None}, key)
                if status != 200 or not body.get("replies"):
                    raise RuntimeError(f"{name} answered {status}: {body}")
                fixed[name].append(body["conversation_id"])
            say(f"{name} answers: {json.dumps(body)[:160]}")

        workloads = [("new conversation per request", False), (f"{FIXED_CONVERSATIONS} fixed conversations", True)]
        if args.only_new:
            workloads = workloads[:1]
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for label, use_fixed in workloads:
            for name, (port, key) in targets.items():
                run_wrk(port, key, fixed[name] if use_fixed else [], warmup, base)
            for round_ in range(args.rounds):
                # each round starts one server later, so no server always follows the same one
                order = list(targets.items())
                order = order[round_ % len(order) :] + order[: round_ % len(order)]
                for name, (port, key) in order:
                    spy = None
                    if args.py_spy and round_ == 0 and name in pids:
                        out = Path(args.py_spy) / f"{name}-{'fixed' if use_fixed else 'new'}.txt"
                        spy = subprocess.Popen(
                            [PY_SPY, "record", "--pid", str(pids[name]), "--format", "raw", "--rate", "200", "--gil",
                             "--duration", str(max(1, round(seconds))), "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    pid = pids.get(name, bare.pid)
                    cpu_before, db_before = process_cpu(pid), postgres_cpu(postmaster)
                    found = run_wrk(port, key, fixed[name] if use_fixed else [], seconds, base)
                    found["cpu_ms"] = (process_cpu(pid) - cpu_before) * 1000 / max(1, found["requests"])
                    found["db_ms"] = (postgres_cpu(postmaster) - db_before) * 1000 / max(1, found["requests"])
                    if spy is not None:
                        spy.wait(60)
                    results.setdefault((label, name), []).append(found)
                    say(
                        f"[{label}] {name} round {round_ + 1}: {found['rps']:.1f} turns/s, "
                        f"p50 {found['p50_us'] / 1000:.1f} ms, p99 {found['p99_us'] / 1000:.1f} ms, "
                        f"non-2xx {found['non2xx']}, errors {found['errors']}, "
                        f"server CPU {found['cpu_ms']:.2f} ms/turn, PostgreSQL CPU {found['db_ms']:.2f} ms/turn"
                    )

        from bench.common import machine, markdown_table

        header = [
            "workload", "server", "turns/s", "p50 ms", "p99 ms", "non-2xx/errors", "server CPU ms/turn",
            "PostgreSQL CPU ms/turn", "vs bare turns/s", "vs bare CPU/turn",
        ]  # fmt: skip
        rows = []
        ratios = []
        for label, _ in workloads:
            summary = {}
            for name in targets:
                runs = results[(label, name)]
                requests = sum(r["requests"] for r in runs)
                secs = sum(r["seconds"] for r in runs)
                summary[name] = {
                    "rps": requests / secs,
                    "p50": sorted(r["p50_us"] for r in runs)[len(runs) // 2] / 1000,
                    "p99": max(r["p99_us"] for r in runs) / 1000,
                    "bad": f"{sum(r['non2xx'] for r in runs)}/{sum(r['errors'] for r in runs)}",
                    "cpu": sum(r["cpu_ms"] * r["requests"] for r in runs) / max(1, requests),
                    "db": sum(r["db_ms"] * r["requests"] for r in runs) / max(1, requests),
                }
            r = summary["botloom"]["rps"] / summary["bare"]["rps"]
            ratios.append((label, r))
            for name in targets:
                s = summary[name]
                ratio = "" if name == "bare" else f"{s['rps'] / summary['bare']['rps']:.2f}"
                cpu_ratio = "" if name == "bare" else f"{summary['bare']['cpu'] / s['cpu']:.2f}"
                rows.append(
                    [label, name, f"{s['rps']:.1f}", f"{s['p50']:.1f}", f"{s['p99']:.1f}", s["bad"], f"{s['cpu']:.2f}",
                     f"{s['db']:.2f}", ratio, cpu_ratio]
                )  # fmt: skip

        info = machine()
        print(
            f"machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, {info['os']}, "
            f"load average {info['load average']}"
        )
        print(
            f"wrk -t1 -c{CONCURRENCY} on core {CLIENT_CORE}; each server one uvicorn process (uvloop, httptools) "
            f"on core {SERVER_CORE}; {seconds:.0f} s measured x {args.rounds} round(s) after {warmup:.0f} s warm-up"
        )
        print(markdown_table(header, rows))
        for label, r in ratios:
            verdict = "met" if r >= GOAL else "NOT met"
            print(f"{label}: botloom/bare throughput {r:.2f} (goal >= {GOAL}: {verdict})")
        size = botloom_log.stat().st_size
        say(f"botloom log: {size} bytes; bare log: {bare_log.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
