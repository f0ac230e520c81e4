"""The turn's end prepared or not (#16 goal 1): PostgreSQL's CPU and the process's CPU per turn, in one process.

The turn's end goes to PostgreSQL as one query string (``runtime/turns.py``,
``Turns._end_on``); ``runtime/prepared.py`` sends each of its statements as
``EXECUTE`` of a statement prepared once per connection. This runs botloom turns
(the demo bot, offline engine, PostgreSQL checkpoints and locks, one at a time) in
batches, alternating two variants batch by batch so the machine's drift hits both:

* **prepared** — the code as it is;
* **unprepared** — ``PreparedStatements.render`` replaced by plain ``mogrify`` (the
  statements' text in the string, as before ``runtime/prepared.py``): PostgreSQL
  parses, analyses and plans each statement every turn.

Per variant: the CPU time of the PostgreSQL backends serving the process's pools
(``/proc``, their pids from ``pg_stat_activity``), the process's own CPU, and wall
time, per turn. Nothing asserts a timing.

Usage::

    python bench/turn_end.py                       # ~2 minutes
    python bench/turn_end.py --batches 12 --per 40 --database-url postgresql://...
"""

from __future__ import annotations

import sys
from pathlib import Path

# as bench/turn.py: this folder's http.py must not shadow the standard library's http package
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any

from common import add_server_arguments, machine, markdown_table, servers

from botloom.core.settings import load_settings
from botloom.runtime.prepared import PreparedStatements
from botloom.runtime.services import open_services
from botloom.server.demo import ensure_demo

VARIANTS = ("unprepared", "prepared")
PREPARED_RENDER = PreparedStatements.render


def plain(self: PreparedStatements, cur: Any, sql: str, params: Any) -> list[str]:
    """The statement itself, its values bound (the turn's end before ``runtime/prepared.py``)."""
    return [cur.mogrify(sql, params)]


def backends_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of the processes ``pids`` so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def run(url: str, batches: int, per: int) -> dict[str, list[float]]:
    """``batches`` batches of ``per`` turns per variant, alternated; PostgreSQL CPU, process CPU, wall per variant."""
    from turn import BotloomTurn, Check, short_conversations

    with tempfile.TemporaryDirectory(prefix="botloom-bench-data-") as data:
        settings = load_settings(
            environ={}, data_dir=data, secret_key="bench-secret-key", checkpointer="postgres", database_url=url
        )
        async with open_services(settings, url=url) as services:
            bot = (await ensure_demo(services)).bot
            turn = BotloomTurn(services, bot, Check())
            await turn.prepare(batches * len(VARIANTS) * per // 5 + 20)
            step = short_conversations(turn)
            done = 0
            for _ in range(50):  # warm-up: the pools' connections open, psycopg prepares its statements
                await step(0, done)
                done += 1
            async with services.db.connection() as conn:
                cur = await conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                pids = [row["pid"] for row in await cur.fetchall()]
            spent = {name: [0.0, 0.0, 0.0] for name in VARIANTS}
            try:
                for batch in range(batches):
                    for name in VARIANTS if batch % 2 == 0 else tuple(reversed(VARIANTS)):
                        PreparedStatements.render = plain if name == "unprepared" else PREPARED_RENDER  # type: ignore[method-assign]
                        pg, cpu, wall = backends_cpu(pids), time.process_time(), time.perf_counter()
                        for _ in range(per):
                            await step(0, done)
                            done += 1
                        totals = spent[name]
                        totals[0] += backends_cpu(pids) - pg
                        totals[1] += time.process_time() - cpu
                        totals[2] += time.perf_counter() - wall
            finally:
                PreparedStatements.render = PREPARED_RENDER  # type: ignore[method-assign]
            return {name: [value / (batches * per) * 1000 for value in totals] for name, totals in spent.items()}


def main() -> None:
    """Run the A/B and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=12, help="batches per variant")
    parser.add_argument("--per", type=int, default=40, help="turns a batch")
    add_server_arguments(parser)
    args = parser.parse_args()
    with servers(args, postgres=True, redis=False, say=lambda line: print(line, flush=True)) as urls:
        result = asyncio.run(run(urls.database_url, args.batches, args.per))
    rows = [[name, f"{pg:.2f}", f"{cpu:.2f}", f"{wall:.2f}"] for name, (pg, cpu, wall) in result.items()]
    info = machine()
    print(f"{args.batches} x {args.per} turns per variant, alternated; load average at the end {info['load average']}")
    print(markdown_table(["variant", "PostgreSQL CPU ms/turn", "process CPU ms/turn", "wall ms/turn"], rows))


if __name__ == "__main__":
    main()
