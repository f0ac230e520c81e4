"""Fault benchmark: replies lost, doubled, improper and late under each fault, and the time to recover.

Each scenario is one run of :func:`tests.faults.run_scenario` (the harness of the
fault suite, ``tests/test_faults.py``) at a larger size: a deployment of its own
(PostgreSQL, with the ``redis`` backend a Valkey too, two ``botloom serve
--no-workers``, two ``botloom worker``, a Twilio stand-in counting replies), signed
Twilio webhooks at a steady rate, each for its own user, one fault while they
arrive, then a wait until the deployment settles. Per scenario it prints:

* **lost**: messages no reply reached; **doubled**: answered twice or more;
  **improper**: answered with anything but their answer (in brackets: with the
  bot's fallback text); **late**: first reply more than ``--late-after`` seconds
  after the webhook;
* **reply p50/p99**: seconds from the webhook's first post to its first reply
  (every turn sleeps ``--turn-seconds`` in its tool, so that turns are in flight
  when the fault strikes: that much of each figure is the workload's own);
* **recovery**: seconds from the fault's end until every message posted before
  it ended had its reply ("never": some did not, within the deadline);
* **webhook retries**: answers other than 200, by status or error (the sender
  posts a webhook again, like Twilio behind a load balancer, until it is
  acknowledged).

Usage::

    python bench/faults.py                                  # every scenario, 200 messages each
    python bench/faults.py --messages 100 --faults postgres/worker-mid-send,redis/redis-restart

Nothing asserts; the figures are printed as a Markdown table (details of every bad
message and the processes' error lines go to standard error).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/faults.py``, this file's directory comes first on sys.path, and
# ``bench/http.py`` would shadow the standard library's ``http`` package: move it last.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import os
import subprocess
import time

from common import ROOT, machine, markdown_table, percentile

os.environ.pop("OPENAI_API_KEY", None)  # the offline engine, always

from tests.faults import FAULTS, Options, Outcome, run_scenario

SCENARIOS = (
    "postgres/worker-mid-turn",
    "postgres/worker-mid-send",
    "postgres/server-kill",
    "postgres/postgres-restart",
    "redis/worker-mid-turn",
    "redis/worker-mid-send",
    "redis/redis-restart",
)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def commit() -> str:
    """The checkout's commit, with ``+changes`` when its tracked files differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, check=False).returncode != 0
    return head.strip() + (" +uncommitted changes" if dirty else "")


def row(outcome: Outcome) -> list[object]:
    """One table row."""
    latencies = outcome.latencies
    retries = {k: v for k, v in outcome.webhook_answers.items() if k != "200"}
    recovery = outcome.recovery
    return [
        outcome.scenario,
        outcome.fault.detail,
        len(outcome.results),
        len(outcome.lost),
        len(outcome.doubled),
        f"{len(outcome.improper)} ({len(outcome.fallbacks)})",
        len(outcome.late()),
        f"{percentile(latencies, 50):.1f}" if latencies else "-",
        f"{percentile(latencies, 99):.1f}" if latencies else "-",
        "never" if recovery is None else f"{recovery:.1f}",
        ", ".join(f"{k} ×{v}" for k, v in sorted(retries.items())) or "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="inbound messages per scenario")
    parser.add_argument(
        "--faults",
        default=",".join(SCENARIOS),
        help=f"comma-separated BACKEND/FAULT (backends postgres, redis; faults {', '.join(FAULTS)})",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="inbound messages a second")
    parser.add_argument("--turn-seconds", type=float, default=0.5, help="how long each turn's tool sleeps")
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="how long PostgreSQL or Valkey is down")
    parser.add_argument("--turn-timeout", type=float, default=60.0, help="BOTLOOM_TURN_TIMEOUT (default: botloom's)")
    parser.add_argument("--late-after", type=float, default=15.0, help="a reply later than this (s) is late")
    parser.add_argument("--settle-deadline", type=float, default=300.0, help="seconds to wait for every reply")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's directory (logs, turn log)")
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.faults.split(",") if s.strip()]
    for scenario in scenarios:
        backend, _, fault = scenario.partition("/")
        if backend not in ("postgres", "redis") or fault not in FAULTS:
            parser.error(f"unknown scenario {scenario!r}")
    if args.keep:
        os.environ["FAULTS_KEEP"] = "1"
    options = Options(
        messages=args.messages,
        rate=args.rate,
        turn_seconds=args.turn_seconds,
        outage_seconds=args.outage_seconds,
        turn_timeout=args.turn_timeout,
        late_after=args.late_after,
        settle_deadline=args.settle_deadline,
        send_deadline=args.settle_deadline,
        log_level="WARNING",
    )
    began, rows = time.monotonic(), []
    for scenario in scenarios:
        backend, _, fault = scenario.partition("/")
        outcome = run_scenario(fault, backend, options, say=say)  # type: ignore[arg-type]
        say(outcome.describe())
        rows.append(row(outcome))
    info = machine()
    print(
        "\n".join(
            [
                f"commit {commit()}; {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
                f"load average at the end {info['load average']}; {time.monotonic() - began:.0f} s",
                f"{args.messages} messages a scenario at {args.rate:g}/s, turns of {args.turn_seconds:g} s, "
                f"outages of {args.outage_seconds:g} s, BOTLOOM_TURN_TIMEOUT {args.turn_timeout:g}, "
                f"late after {args.late_after:g} s",
                "",
                markdown_table(
                    [
                        "scenario",
                        "what the fault hit",
                        "messages",
                        "lost",
                        "doubled",
                        "improper (fallback)",
                        "late",
                        "reply p50 s",
                        "reply p99 s",
                        "recovery s",
                        "webhook retries",
                    ],
                    rows,
                ),
            ]
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
