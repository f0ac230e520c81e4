"""Conversation-length benchmark (#16 goal 2): one conversation to 10,000 turns through botloom's whole turn path.

``bench/turn.py``'s conversation-length series drives the bare baseline and
botloom's turn one after the other, each within a time budget; the bare Redis
baseline slows down so fast (hundreds of ms a turn by turn 400) that it eats its
budget, and the series stop long before 10,000 turns. This one drives only
**botloom turn (b)** (``inbound.answer``: the message stored, the conversation
lock, the graph, the checkpoint, the reply stored), with the same measurement as
``bench/turn.py`` (its ``measure_length``: after every other turn of the long
conversation, one turn of a fresh conversation runs as the control), for each
checkpointer given, to ``--turns`` turns. It reports the p50 of 20-turn windows
at turns 1, 100, 1,000, 2,500, 5,000, 7,500 and the last, each next to the p50
of the fresh conversations' turns run among them (the bracketed ratio: 1.00x is
flat, and the machine's noise cancels), and the last window over the first.

Usage::

    python bench/length.py --checkpointers redis --turns 10000       # ~7 minutes here
    python bench/length.py --checkpointers postgres,redis --turns 10000
    python bench/length.py --checkpointers redis --turns 10000 --profile-every 2500

``--profile-every N`` times the checkpointer's reads and writes (``aget_tuple``,
``aput``, ``aput_writes``) of the long conversation's turns in the N turns up to
each point, to see which of them grows when a series is not flat.
Nothing asserts a timing.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/length.py`` puts bench/ first on sys.path, where http.py would shadow the standard
# library's ``http``: move it to the end (turn.py and common.py are still found there).
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import logging
import tempfile
import time
from collections import defaultdict
from typing import Any

from common import Summary, add_server_arguments, machine, markdown_table, ms, servers
from turn import BOTLOOM_TURN, BotloomTurn, Check, LengthSeries, measure_length, say

from botloom.core.settings import load_settings
from botloom.runtime.services import open_services
from botloom.server.demo import ensure_demo

POINTS = (1, 100, 1000, 2500, 5000, 7500)


def windows(turns: int) -> list[tuple[int, int, int]]:
    """(point, first, last): 20-turn windows (1-based) around each point below ``turns``, and the last 20."""
    out = [(1, 1, min(20, turns))]
    out += [(p, p - 9, p + 10) for p in POINTS[1:] if p + 30 < turns]
    out.append((turns, turns - 19, turns))
    return out


class Timed:
    """Wraps a checkpointer's methods to sum their wall time per method while ``on`` is set."""

    def __init__(self, saver: Any) -> None:
        self.on = False
        self.ms: dict[str, list[float]] = defaultdict(list)
        for name in ("aget_tuple", "aput", "aput_writes"):
            inner = getattr(saver, name)

            async def timed(*args: Any, _inner: Any = inner, _name: str = name, **kwargs: Any) -> Any:
                if not self.on:
                    return await _inner(*args, **kwargs)
                began = time.perf_counter()
                try:
                    return await _inner(*args, **kwargs)
                finally:
                    self.ms[_name].append((time.perf_counter() - began) * 1000)

            setattr(saver, name, timed)

    def take(self) -> dict[str, float]:
        """p50 ms per method since the last take."""
        out = {name: Summary.of(values).p50 for name, values in self.ms.items()}
        self.ms.clear()
        return out


class LongTurn(BotloomTurn):
    """botloom turn (b), timing the checkpointer in the long conversation's turns when asked."""

    def __init__(self, *args: Any, timed: Timed | None, every: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timed, self.every, self.long = timed, every, ""
        self.profile: list[tuple[int, dict[str, float]]] = []

    async def turn(self, conversation: str, i: int) -> None:
        timing = self.timed is not None and conversation == self.long and (i % self.every) >= self.every - 50
        if self.timed is not None:
            self.timed.on = timing
        await super().turn(conversation, i)
        if self.timed is not None:
            self.timed.on = False
            if timing and i % self.every == self.every - 1:
                self.profile.append((i + 1, self.timed.take()))


async def series(kind: str, urls: Any, turns: int, budget: float, every: int, data_dir: str) -> tuple[Any, ...]:
    """Drive one conversation to ``turns`` turns with the ``kind`` checkpointer."""
    settings = load_settings(
        environ={},
        data_dir=data_dir,
        secret_key="bench-secret-key",
        checkpointer=kind,
        database_url=urls.database_url,
        redis_url=urls.redis_url if kind == "redis" else None,
    )
    async with open_services(settings, url=urls.database_url) as services:
        demo = await ensure_demo(services)
        timed = Timed(services.graphs.checkpointer) if every else None
        check = Check()
        turn = LongTurn(services, demo.bot, check, timed=timed, every=every or 1)
        await turn.prepare(2 + turns // 10)
        warm = await turn.conversation()
        for i in range(10):
            await turn.turn(warm, i)
        real_conversation = turn.conversation

        async def first_is_long() -> str:  # the first conversation measure_length asks for is the long one
            turn.long = await real_conversation()
            turn.conversation = real_conversation  # type: ignore[method-assign]
            return turn.long

        turn.conversation = first_is_long  # type: ignore[method-assign]
        began = time.perf_counter()
        result = await measure_length(turn, turns, budget)
        say(f"[{kind}] {len(result.long_ms)} turns in {time.perf_counter() - began:.0f} s")
        return result, check, turn.profile


def report(kind: str, result: LengthSeries, check: Check, profile: list[tuple[int, dict[str, float]]]) -> str:
    """The series as a Markdown table (and the checkpointer profile, when taken)."""
    reached = len(result.long_ms)
    header, cells, longs = [], [], []
    for point, first, last in windows(reached):
        long, fresh = result.window(first, last)
        longs.append(long)
        header.append(f"p50 ms @ turn {point}")
        cells.append(f"{ms(long)} ({long / fresh:.2f}×)" if fresh == fresh else ms(long))
    header.append("last / first")
    cells.append(f"{longs[-1] / longs[0]:.2f}×")
    out = [markdown_table(["checkpointer", *header], [[kind, *cells]])]
    bad = [b for b in check.bad if b]
    out.append(f"turns checked: {check.turns}, not as expected: {len(check.bad)} {bad[:3] if bad else ''}".rstrip())
    if profile:
        rows = [
            [f"{n - 49}-{n}", *(ms(p.get(k, float("nan"))) for k in ("aget_tuple", "aput", "aput_writes"))]
            for n, p in profile
        ]
        out += ["", markdown_table(["long turns", "aget_tuple p50 ms", "aput p50 ms", "aput_writes p50 ms"], rows)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpointers", default="redis", help="comma-separated: postgres, redis")
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds a series may take at most")
    parser.add_argument("--profile-every", type=int, default=0, help="time the checkpointer every N turns")
    add_server_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    kinds = [k.strip() for k in args.checkpointers.split(",") if k.strip()]
    command = "python bench/length.py" + " ".join(a for a in ["", *sys.argv[1:]] if "url" not in a)
    began = time.perf_counter()
    out = []
    with (
        servers(args, postgres=True, redis="redis" in kinds, say=say) as urls,
        tempfile.TemporaryDirectory(prefix="botloom-bench-length-") as data,
    ):
        for kind in kinds:
            say(f"[{kind}] {BOTLOOM_TURN}: one conversation to {args.turns} turns ...")
            result, check, profile = asyncio.run(series(kind, urls, args.turns, args.budget, args.profile_every, data))
            out.append(report(kind, result, check, profile))
    info = machine()
    print(f"command: `{command}`")
    print(
        f"machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, "
        f"load average at the end {info['load average']}; total {time.perf_counter() - began:.0f} s"
    )
    print("p50 of 20-turn windows of the long conversation; in brackets, over the fresh turns among them")
    print()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
