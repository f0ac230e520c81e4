"""The fault suite: every inbound message gets exactly one proper reply, whatever breaks on the way.

Each test runs one scenario of :mod:`tests.faults` on a deployment of its own
(PostgreSQL, with ``redis`` a Valkey too, two ``botloom serve --no-workers``, two
``botloom worker``, a Twilio stand-in counting replies): 20 signed Twilio webhooks,
one fault while they arrive, then a wait (with a generous deadline) until the
deployment settles. The assertion is the same for every fault: no message lost,
none answered twice, none answered with anything but its answer (the fallback
text, most of all). How fast it recovers is measured by ``bench/faults.py``, not
asserted here.

Run alone with ``pytest -m faults``; a failure prints what every message got, the
stored state of the bad ones, and the error lines of every process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import Backend, Options, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OPTIONS = Options(messages=20, rate=5.0, turn_seconds=0.5, outage_seconds=5.0, turn_timeout=15.0, settle_deadline=180.0)
"""Generous: today a turn orphaned on Redis waits for twice the turn timeout, or for the minute's recovery sweep."""


def check(fault: str, backend: Backend, workdir: Path) -> None:
    """Run the scenario; one proper reply per message, and the fault hit something."""
    outcome = run_scenario(fault, backend, OPTIONS, workdir=workdir)
    assert outcome.fault.hit > 0, outcome.describe()
    assert len(outcome.results) == OPTIONS.messages
    assert outcome.ok, outcome.describe()


def test_a_worker_killed_mid_turn(tmp_path: Path) -> None:
    check("worker-mid-turn", "postgres", tmp_path)


def test_a_worker_killed_mid_send(tmp_path: Path) -> None:
    check("worker-mid-send", "postgres", tmp_path)


def test_a_server_killed_with_webhooks_in_flight(tmp_path: Path) -> None:
    check("server-kill", "postgres", tmp_path)


def test_postgres_stopped_and_started(tmp_path: Path) -> None:
    check("postgres-restart", "postgres", tmp_path)


def test_a_worker_killed_mid_turn_on_redis(tmp_path: Path) -> None:
    check("worker-mid-turn", "redis", tmp_path)


def test_redis_restarted(tmp_path: Path) -> None:
    check("redis-restart", "redis", tmp_path)
