"""Shared helpers of botloom's benchmarks: servers, timing loops, percentiles, tables.

Every benchmark in ``bench/`` measures botloom next to a bare baseline in the same
run and prints ratios, so its figures survive a shared, noisy machine. This module
holds what they all need:

* :func:`add_server_arguments` / :func:`servers`: ``--database-url`` and
  ``--redis-url``, or real local servers started with ``tests/servers.py``
  (PostgreSQL with pgvector from ``pgserver``, Valkey with the search and JSON
  modules), stopped again on exit;
* :class:`Summary`, :func:`percentile`: latency statistics;
* :func:`run_for` / :func:`run_turns`: closed-loop asyncio drivers (N concurrent
  workers for a time budget, or a fixed number of calls) that record each call's
  latency;
* :func:`machine`, :func:`markdown_table`, :func:`print_table`, :func:`ratio`:
  reporting.

Nothing here asserts a timing: benchmarks report, people read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """Count, p50, p99 and mean of latencies in milliseconds."""

    n: int
    p50: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Summary:
        """Summarise latencies given in milliseconds."""
        if not values_ms:
            return cls(0, float("nan"), float("nan"), float("nan"))
        return cls(
            len(values_ms), percentile(values_ms, 50), percentile(values_ms, 99), sum(values_ms) / len(values_ms)
        )


@dataclass
class Run:
    """What a timed loop did: calls completed, wall time, and each call's latency (ms)."""

    calls: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    """CPU time this process used meanwhile (all threads): less sensitive to a noisy machine than wall time."""

    @property
    def per_second(self) -> float:
        """Calls completed per second of wall time."""
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        """This process's CPU milliseconds per call (servers it talks to not included)."""
        return self.cpu_seconds / self.calls * 1000 if self.calls else float("nan")

    @property
    def summary(self) -> Summary:
        """Latency statistics of the calls."""
        return Summary.of(self.latencies_ms)

    def merge(self, other: Run) -> Run:
        """This run and ``other`` together (rounds of the same measurement)."""
        return Run(
            self.calls + other.calls,
            self.seconds + other.seconds,
            self.latencies_ms + other.latencies_ms,
            self.cpu_seconds + other.cpu_seconds,
        )


# ------------------------------------------------------------------------------ drivers

Step = Callable[[int, int], Awaitable[Any]]
"""``step(worker, i)``: the ``i``-th call of worker ``worker`` (both from 0)."""


async def run_for(seconds: float, concurrency: int, step: Step) -> Run:
    """Closed loop: ``concurrency`` workers call ``step`` back to back until ``seconds`` have passed.

    Calls in flight at the deadline are finished and counted; the wall time is
    measured to the end of the last one, so throughput is calls / elapsed.
    """
    run = Run()
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await step(index, i)
            run.latencies_ms.append((time.perf_counter() - began) * 1000)
            run.calls += 1
            i += 1

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    run.seconds = time.perf_counter() - began
    run.cpu_seconds = time.process_time() - cpu
    return run


async def run_turns(count: int, step: Callable[[int], Awaitable[Any]]) -> Run:
    """Call ``step(i)`` for ``i`` in ``range(count)``, one at a time, recording each latency."""
    run = Run()
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        t0 = time.perf_counter()
        await step(i)
        run.latencies_ms.append((time.perf_counter() - t0) * 1000)
        run.calls += 1
    run.seconds = time.perf_counter() - began
    run.cpu_seconds = time.process_time() - cpu
    return run


# ------------------------------------------------------------------------------ servers


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--database-url`` and ``--redis-url``: use running servers instead of starting local ones."""
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server with pgvector (a fresh database is created on it "
        "when the URL's user may; else the URL's database is used as is)",
    )
    parser.add_argument("--redis-url", help="a Redis 8 / Redis Stack server (search and JSON modules)")


@dataclass
class Servers:
    """URLs of the servers a benchmark runs against."""

    database_url: str | None = None
    redis_url: str | None = None
    started: list[str] = field(default_factory=list)
    """Which servers this run started itself (``postgres``, ``redis``)."""


def _database_on(server_url: str, name: str) -> str | None:
    """Create database ``name`` on the server of ``server_url``; its URL, or None when not allowed."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error:
        return None
    base, _, query = server_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")


@contextlib.contextmanager
def servers(
    args: argparse.Namespace, *, postgres: bool = True, redis: bool = False, say: Callable[[str], None] = print
) -> Iterator[Servers]:
    """The servers a benchmark needs: the given URLs, or local ones started (and stopped) here.

    With ``postgres``, the run gets a database of its own: ``bench`` on a server
    started here, or a new ``bench_<random>`` on the ``--database-url`` server when
    its user may create one (it is left there; else the URL's database is used as
    is). Servers started here are stopped, and their directory removed, on exit.
    """
    from tests.servers import start_postgres, start_redis

    found = Servers()
    stack = contextlib.ExitStack()
    with stack:
        base = Path(tempfile.mkdtemp(prefix="botloom-bench-"))
        stack.callback(shutil.rmtree, base, True)  # registered first: runs after the servers have stopped
        if postgres:
            if getattr(args, "database_url", None):
                name = f"bench_{uuid.uuid4().hex[:8]}"
                found.database_url = _database_on(args.database_url, name) or args.database_url
            else:
                began = time.perf_counter()
                server = stack.enter_context(start_postgres(base / "postgres"))
                found.database_url = server.create_database("bench")
                found.started.append("postgres")
                say(f"started PostgreSQL (pgvector) in {time.perf_counter() - began:.1f} s")
        if redis:
            if getattr(args, "redis_url", None):
                found.redis_url = args.redis_url
            else:
                began = time.perf_counter()
                server = stack.enter_context(start_redis(base / "redis"))
                found.redis_url = server.url
                found.started.append("redis")
                say(f"started Valkey (search + JSON modules) in {time.perf_counter() - began:.1f} s")
        yield found


# ------------------------------------------------------------------------------ reporting


def machine() -> dict[str, str]:
    """What the figures were measured on: cores, CPU, Python, OS, load average at the time."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load average": load,
    }


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` as ``1.23×`` (``-`` when undefined)."""
    if not baseline or value != value or baseline != baseline:
        return "-"
    return f"{value / baseline:.2f}×"


def ms(value: float) -> str:
    """Milliseconds with sensible precision."""
    if value != value:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded to line up in plain text too."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print :func:`markdown_table`."""
    print(markdown_table(header, rows), flush=True)
