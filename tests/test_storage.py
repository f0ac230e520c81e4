"""Storage: migrations (once, concurrently, past a stale lock), tenant scoping of every
repository query, idempotent messages, encrypted plugin secrets and hashed API keys.

Everything runs against the real PostgreSQL of the test session; rows are checked
with raw SQL next to the repositories.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import inspect
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast, get_args

import msgspec
import psycopg
import pytest

from botloom.core import statuses
from botloom.core.crypto import Cipher, InvalidToken
from botloom.core.domain import ApiKey, Bot, BotSettings, Conversation, StoredMessage, Tenant, UsageEvent
from botloom.core.language import Teaching
from botloom.core.messages import InboundMessage
from botloom.core.statuses import (
    CONVERSATION_STATUSES,
    DELIVERY_STATUSES,
    INBOUND_STATUSES,
    MESSAGE_STATUSES,
    OUTBOUND_STATUSES,
    MessageDirection,
    PartVia,
)
from botloom.core.storage import repositories
from botloom.core.storage.database import Database
from botloom.core.storage.migrations import (
    MIGRATION_LOCK_ID,
    MIGRATIONS_DIR,
    apply_migrations,
    pending_migrations,
)
from botloom.core.storage.repositories import (
    Repository,
    Store,
    hash_api_key,
)
from botloom.core.storage.repositories.agents import Agent, CannedResponse, Presence
from botloom.core.storage.repositories.budgets import BudgetState
from botloom.core.storage.repositories.events import Event
from botloom.core.storage.repositories.forks import Fork, ForkRepository
from botloom.core.storage.repositories.handovers import HANDOVER_STATUSES, OPEN_STATUSES, HandoverRecord
from botloom.core.storage.repositories.usage import UsageGroup
from botloom.core.storage.repositories.webhooks import WebhookEndpoint
from tests.conftest import scratch_database

ALL_MIGRATIONS = sorted(path.name.removesuffix(".sql") for path in MIGRATIONS_DIR.glob("*.sql"))
CORE_TABLES = ("tenants", "api_keys", "bots", "bot_plugins", "conversations", "messages", "usage_events")
DEADLINE = 60.0


# --------------------------------------------------------------------------- migrations


def applied_counts(url: str) -> dict[str, int]:
    """How many times yoyo recorded each migration id."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT migration_id, count(*) FROM _yoyo_migration GROUP BY migration_id").fetchall()
    return dict(rows)


def missing_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [t for t in CORE_TABLES if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() == (None,)]


def assert_migrated_exactly_once(url: str) -> None:
    assert applied_counts(url) == dict.fromkeys(ALL_MIGRATIONS, 1)
    assert missing_tables(url) == []
    assert pending_migrations(url) == []


class MigrationLockHeld:
    """Holds the migration lock so that concurrent callers queue up, then lets them go at once."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))

    def wait_for_waiters(self, count: int) -> None:
        """Poll until ``count`` sessions wait for the lock."""
        deadline = time.monotonic() + DEADLINE
        while True:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            assert time.monotonic() < deadline, f"{count} migration runs never queued for the lock"
            time.sleep(0.02)

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        self.conn.close()


def test_migrations_apply_once_then_report_up_to_date(empty_database_url: str) -> None:
    assert ALL_MIGRATIONS, "no migrations found"
    assert pending_migrations(empty_database_url) == ALL_MIGRATIONS
    lines: list[str] = []
    assert apply_migrations(empty_database_url, progress=lines.append) == ALL_MIGRATIONS
    assert lines == [f"applying migration {m}" for m in ALL_MIGRATIONS]
    assert apply_migrations(empty_database_url) == []
    assert_migrated_exactly_once(empty_database_url)


def test_migrations_from_two_threads_apply_each_once(empty_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(empty_database_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    lock = MigrationLockHeld(empty_database_url)
    threads = [threading.Thread(target=run) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        lock.wait_for_waiters(2)
    finally:
        lock.release()
        for thread in threads:
            thread.join(DEADLINE)
    assert errors == []
    assert sorted(results) == [[], ALL_MIGRATIONS]
    assert_migrated_exactly_once(empty_database_url)


MIGRATE_SCRIPT = (
    "import json, sys\n"
    "from botloom.core.storage.migrations import apply_migrations\n"
    "print(json.dumps(apply_migrations(sys.argv[1])))\n"
)


@pytest.mark.slow
def test_migrations_from_two_processes_apply_each_once(empty_database_url: str) -> None:
    lock = MigrationLockHeld(empty_database_url)
    processes: list[subprocess.Popen[str]] = []
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", MIGRATE_SCRIPT, empty_database_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        lock.wait_for_waiters(2)
    finally:
        lock.release()
    outputs = [process.communicate(timeout=DEADLINE) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    assert sorted(json.loads(out) for out, _ in outputs) == [[], ALL_MIGRATIONS]
    assert_migrated_exactly_once(empty_database_url)


def test_a_stale_yoyo_lock_does_not_block_the_next_run(empty_database_url: str, tmp_path: Path) -> None:
    apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:  # a crashed run's lock row
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "9001.extra.sql").write_text("CREATE TABLE extra_table (id int);\n", encoding="utf-8")
    applied = apply_migrations(empty_database_url, directories=[MIGRATIONS_DIR, extra], lock_timeout=30)
    assert applied == ["9001.extra"]
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('extra_table')").fetchone() != (None,)
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


# --------------------------------------------------------------------------- a world of two tenants


@dataclass(frozen=True)
class TenantWorld:
    """One tenant with a row in every table the repositories touch."""

    tenant: Tenant
    api_key: ApiKey
    key: str
    bot: Bot
    only_bot: Bot
    """A bot whose slug no other tenant has."""
    conversation: Conversation
    closed: Conversation
    """A closed conversation of ``bot`` (the archiving job's input)."""
    inbound: StoredMessage
    outbound: StoredMessage
    """A reply still ``pending`` (due for delivery), of the turn that answers ``inbound``."""
    sending: StoredMessage
    """A reply being sent, with part 0 handed to the provider as ``provider_id``."""
    dead_letter: StoredMessage
    provider_id: str
    turn_id: str
    usage: UsageEvent
    desk: DeskWorld
    outbox: OutboxWorld
    month: date
    """The calendar month (UTC) of ``usage`` and of the spend it added, by the database's clock when it was
    recorded: the probes of a month name this one, not today's (a test may run in the next month)."""

    @property
    def markers(self) -> set[str]:
        """Strings found only in this tenant's rows: its ids and texts."""
        slug = self.tenant.slug
        return {
            self.tenant.id,
            self.api_key.id,
            self.bot.id,
            self.only_bot.id,
            self.conversation.id,
            self.closed.id,
            self.inbound.id,
            self.outbound.id,
            self.sending.id,
            self.dead_letter.id,
            self.provider_id,
            self.turn_id,
            f"{slug} says hi",
            f"{slug} replies",
            f"{slug} replies at length",
            f"{slug} cannot reach you",
            f"{slug} shop",
            f"{slug}-token",
            *self.desk.markers,
            *self.outbox.markers,
        }


@dataclass(frozen=True)
class OutboxWorld:
    """A tenant's webhook endpoint, an event of its conversation (with a pending delivery to it) and a debug fork."""

    endpoint: WebhookEndpoint
    event: Event
    fork: Fork

    @property
    def markers(self) -> set[str]:
        """Strings found only in this tenant's events, webhook and fork rows."""
        return {
            self.endpoint.id,
            self.endpoint.url,
            self.event.id,
            str(self.event.data["note"]),
            self.fork.id,
            self.fork.thread_id,
        }


def forks_of(store: Store) -> ForkRepository:
    """The store's fork repository."""
    return store.forks


async def build_outbox(store: Store, tenant: Tenant, bot: Bot, conversation: Conversation) -> OutboxWorld:
    """The events, webhook and fork rows of one tenant (the endpoint first, so the event is due to it)."""
    slug = tenant.slug
    endpoint = await store.webhooks.create(tenant.id, f"https://{slug}.example.test/hook", f"{slug}-webhook-secret")
    assert endpoint is not None
    appended = await store.events.append(
        tenant.id, "handover.opened", {"note": f"{slug} event"}, conversation_id=conversation.id
    )
    assert appended is not None and appended[1] == [endpoint.id]
    fork_id = str(uuid.uuid4())
    fork = await forks_of(store).create(
        tenant.id,
        fork_id=fork_id,
        bot_id=bot.id,
        conversation_id=conversation.id,
        checkpoint_id=f"{slug}-checkpoint",
        thread_id=f"{slug}-fork-thread",
        break_before=[],
        break_after=[],
    )
    return OutboxWorld(endpoint, appended[0], fork)


@dataclass(frozen=True)
class DeskWorld:
    """A tenant's agent desk: an agent (signed in), a waiting and an assigned handover, a note, a team, canned text."""

    agent: Agent
    session: str
    waiting: HandoverRecord
    assigned: HandoverRecord
    canned: CannedResponse
    team: str
    pending: HandoverRecord
    """Handed back to the bot, its resume pending."""

    @property
    def markers(self) -> set[str]:
        """Strings found only in this tenant's desk rows."""
        return {
            self.agent.id,
            self.agent.email,
            self.waiting.id,
            self.assigned.id,
            self.pending.id,
            self.canned.id,
            self.canned.text,
            self.team,
            f"{self.team} note",
        }


async def build_desk(
    store: Store, tenant: Tenant, bot: Bot, conversation: Conversation, other: Conversation
) -> DeskWorld:
    """The desk rows of one tenant (its agent available, so routing would pick it)."""
    slug, team = tenant.slug, f"{tenant.slug}-team"
    agent, _ = await store.agents.create(
        tenant.id, email=f"{slug}-agent@example.test", name=f"{slug} agent", password="pw-123456", teams=[team]
    )
    signed = await store.agents.sign_in(tenant.id, agent.email, "pw-123456")
    assert signed is not None
    await store.agents.heartbeat(tenant.id, agent.id, "available")
    await store.teams.put(tenant.id, team, timezone="UTC", hours={})
    canned = await store.canned.create(tenant.id, team=team, shortcut="hi", text=f"{slug} canned reply")

    async def open_on(on: Conversation) -> HandoverRecord:
        made, _ = await store.handovers.open(
            tenant.id,
            bot_id=bot.id,
            conversation_id=on.id,
            reason="asked",
            team=team,
            summary={},
            wait_until=None,
            first_response_due=None,
            resolution_due=None,
        )
        return made

    waiting = await open_on(conversation)
    # Closed (handed back), its resume still pending: what an agent may take back.
    handed = await store.conversations.create(tenant.id, bot.id, "web")
    pending = (
        await store.handovers.move(tenant.id, (await open_on(handed)).id, "returned_to_bot", allowed=["waiting"])
    ).handover
    assert pending is not None
    assigned = (
        await store.handovers.move(
            tenant.id, (await open_on(other)).id, "assigned", allowed=["waiting"], actor=agent.id, take=True
        )
    ).handover
    assert assigned is not None
    await store.handovers.add_note(tenant.id, waiting.id, agent.id, f"{team} note")
    return DeskWorld(agent, signed[1], waiting, assigned, canned, team, pending)


SENDER = "+15550100"
INBOUND_KEY = "SM0001"
OUTBOUND_KEY = "reply-1"


@pytest.fixture
def repos(db: Database, cipher: Cipher) -> Store:
    return Store(db, cipher)


async def build_world(store: Store, slug: str, tokens: int) -> TenantWorld:
    tenant = await store.tenants.create(slug, f"{slug} inc")
    api_key, key = await store.api_keys.create(tenant.id)
    await store.audit.append(  # the audit log (0021): a row of the tenant's, naming its key
        tenant_id=tenant.id,
        principal_kind="api_key",
        principal_id=api_key.id,
        action="api_key.created",
        target_kind="api_key",
        target_id=api_key.id,
        request_id=None,
        details={},
    )
    bot = await store.bots.create(tenant.id, "support", f"{slug} support")
    only_bot = await store.bots.create(tenant.id, f"{slug}-only", f"{slug} only")
    await store.plugin_settings.put(
        tenant.id,
        bot.id,
        "demo_shop",
        enabled=True,
        config={"shop_name": f"{slug} shop"},
        secrets={"auth_token": f"{slug}-token"},
    )
    conversation = await store.conversations.get_or_create(tenant.id, bot.id, "sms", SENDER, user=SENDER)
    closed = await store.conversations.create(tenant.id, bot.id, "web")
    await store.conversations.set_status(tenant.id, closed.id, "closed")
    message = InboundMessage(channel="sms", text=f"{slug} says hi", sender=SENDER, idempotency_key=INBOUND_KEY)
    inbound, _ = await store.messages.add_inbound(tenant.id, bot.id, conversation.id, message)
    turn_id = str(uuid.uuid4())
    await store.messages.set_status(tenant.id, inbound.id, "received", turn_id=turn_id)

    async def reply(text: str, key: str, status: str) -> StoredMessage:
        stored, _ = await store.messages.add_outbound(
            tenant.id, conversation.id, channel="sms", text=text, turn_id=turn_id, idempotency_key=key, status=status
        )
        return stored

    outbound = await reply(f"{slug} replies", OUTBOUND_KEY, "pending")
    sending = await reply(f"{slug} replies at length", "reply-2", "sending")
    provider_id = f"{slug}-SM-part0"
    await store.deliveries.add_part(tenant.id, sending.id, 0, channel="sms", provider_id=provider_id)
    await store.deliveries.begin_attempt(tenant.id, sending.id, 1, channel="sms")  # part 1's outcome unknown
    dead_letter = await reply(f"{slug} cannot reach you", "reply-3", "failed")
    usage = UsageEvent(
        tenant_id=tenant.id,
        bot_id=bot.id,
        conversation_id=conversation.id,
        kind="chat",
        model="gpt-4o-mini",
        prompt_tokens=tokens,
        completion_tokens=tokens // 2,
    )
    spent = await store.usage.record(usage, Decimal(tokens) / 1000)  # priced: the month's spend (cost control, 0020)
    assert spent is not None
    await store.budgets.put(tenant.id, monthly_usd=Decimal(tokens), alert_at=[0.5], on_exhausted="refuse")
    await store.budgets.claim_alert(tenant.id, spent.month, "alert", Decimal(tokens))
    await store.channel_polls.save(tenant.id, bot.id, "imap", {"mailbox": f"{slug}-inbox", "last_uid": 7})
    desk = await build_desk(store, tenant, bot, conversation, closed)
    # What the tenant taught its bot, and a question the bot could not answer (#17).
    await store.teaching.put_synonyms(tenant.id, bot.id, {f"{slug} synonym": f"{slug} meaning"})
    await store.teaching.add_example(tenant.id, bot.id, "greeting", f"{slug} taught hello")
    unanswered = InboundMessage(channel="sms", text=f"{slug} unanswered", sender=SENDER, idempotency_key="fallback-1")
    fallback, _ = await store.messages.add_inbound(tenant.id, bot.id, conversation.id, unanswered)
    await store.messages.finish(tenant.id, fallback.id, "answered", turn_id=None, outcome={"intent": None})
    held = InboundMessage(channel="sms", text=f"{slug} held for a person", sender=SENDER, idempotency_key="held-1")
    held_message, _ = await store.messages.add_inbound(tenant.id, bot.id, conversation.id, held)
    await store.messages.finish(tenant.id, held_message.id, "for_agent", turn_id=None, outcome={"escalated": True})
    outbox = await build_outbox(store, tenant, bot, conversation)
    return TenantWorld(
        tenant, api_key, key, bot, only_bot, conversation, closed, inbound, outbound, sending, dead_letter, provider_id,
        turn_id, usage, desk, outbox, spent.month,
    )  # fmt: skip


WORLDS_CIPHER = Cipher(b"0" * 43 + b"=")
"""The key of the ``cipher`` fixture (tests/conftest.py): the worlds' plugin secrets are encrypted with it."""


@dataclass(frozen=True)
class Worlds:
    """A database holding tenants A and B (built once per session and xdist worker), cloned for each test."""

    name: str
    a: TenantWorld
    b: TenantWorld


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]


async def build_worlds(url: str) -> tuple[TenantWorld, TenantWorld]:
    """Tenants A (``alpha``) and B (``beta``) built into the database at ``url``, its connections closed after."""
    database = await Database.open(url, migrate=False, max_size=2)
    try:
        store = Store(database, WORLDS_CIPHER)
        return await build_world(store, "alpha", 10), await build_world(store, "beta", 1000)
    finally:
        await database.close()  # a database with a connection open cannot be a template


@pytest.fixture(scope="session")
def worlds(pg_server_url: str, template_database_url: str) -> Iterator[Worlds]:
    """The worlds' database: a clone of the migrated template with tenants A and B in it, dropped at the end.

    Built on an event loop of its own (in a thread: the tests' loops stay untouched).
    """
    with (
        scratch_database(pg_server_url, "worlds", database_name(template_database_url)) as url,
        ThreadPoolExecutor(1) as thread,
    ):
        a, b = thread.submit(asyncio.run, build_worlds(url)).result()
        yield Worlds(database_name(url), a, b)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, pg_server_url: str, template_database_url: str) -> Iterator[str]:
    """A fresh database of the test's own: a clone of the worlds' database for a test of ``tenants``, else of
    the migrated template (as tests/conftest.py's fixture of the same name)."""
    worlds: Worlds | None = request.getfixturevalue("worlds") if "tenants" in request.fixturenames else None
    template = worlds.name if worlds is not None else database_name(template_database_url)
    with scratch_database(pg_server_url, "t", template) as url:
        yield url


@pytest.fixture
async def tenants(worlds: Worlds, db: Database, cipher: Cipher) -> tuple[TenantWorld, TenantWorld]:
    """Tenants A (``alpha``) and B (``beta``), each with a row in every table: the worlds, in the test's database.

    The worlds were built earlier in the session, so the one row whose meaning is "lately" is made recent
    again: each agent's heartbeat (available: seen within ``away_after`` seconds). The test gets copies
    of the worlds' objects (whatever it does to them, the next test gets them as built).
    """
    probe = b"the worlds' key"
    assert cipher.decrypt(WORLDS_CIPHER.encrypt(probe)) == probe, "WORLDS_CIPHER must be the cipher fixture's key"
    agents = [worlds.a.desk.agent.id, worlds.b.desk.agent.id]
    async with db.connection() as conn:
        cur = await conn.execute(
            "UPDATE agents SET last_seen_at = now() WHERE id = ANY(%s::uuid[]) RETURNING id", (agents,)
        )
        assert len(await cur.fetchall()) == 2, "the test's database is not a clone of the worlds' database"
    return copy.deepcopy((worlds.a, worlds.b))


async def footprint(db: Database, markers: set[str]) -> dict[str, list[str]]:
    """Every row of every table that mentions one of ``markers``, as JSON text."""
    out: dict[str, list[str]] = {}
    async with db.connection() as conn:
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        for (table,) in [tuple(r.values()) for r in await cur.fetchall()]:
            rows = await (await conn.execute(f'SELECT to_jsonb(t)::text AS row FROM "{table}" t')).fetchall()
            out[table] = sorted(r["row"] for r in rows if any(m in r["row"] for m in markers))
    return out


def as_text(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value), default=str)


def is_nothing(value: Any) -> bool:
    """None, False, zero, an empty collection, or all-zero totals."""
    if isinstance(value, dict):
        return all(v == 0 for v in value.values())
    return not value


# --------------------------------------------------------------------------- tenant scoping

Call = Callable[[Store, TenantWorld, TenantWorld], Awaitable[Any]]


@dataclass(frozen=True)
class Probe:
    """A call of one repository method with tenant A's id and tenant B's object ids (or none).

    ``nothing``: the call must find, change and return nothing. ``own``: it returns tenant A's
    data only (``expected`` pins it exactly where a count could hide B's rows).
    """

    repo: str
    method: str
    call: Call
    expect: Literal["nothing", "own"]
    label: str = ""
    expected: Callable[[TenantWorld], Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.repo}.{self.method}" + (f"[{self.label}]" if self.label else "")


FOREIGN_INBOUND = InboundMessage(channel="sms", text="injected", sender=SENDER, idempotency_key=INBOUND_KEY)
"""What tenant A tries to add to tenant B's conversation (with B's idempotency key)."""


async def received_after_foreign(store: Store, a: TenantWorld, b: TenantWorld) -> bool:
    """Whether A's conversation has a waiting message newer than B's message (B's time must not count)."""
    later = InboundMessage(channel="sms", text="later", sender=SENDER)
    await store.messages.add_inbound(a.tenant.id, a.bot.id, a.conversation.id, later)
    return await store.messages.received_after(a.tenant.id, a.conversation.id, b.inbound.id)


async def flattened(call: Awaitable[tuple[Any, list[Any]]]) -> list[Any]:
    """A ``(conversation, messages)`` answer as one list (empty when nothing was found)."""
    conversation, messages = await call
    return [conversation, *messages] if conversation is not None else list(messages)


async def pending_in_pipeline(store: Store, tenant_id: str, conversation_id: str) -> list[Any]:
    """``messages.queue_pending_with_conversation`` as the runner sends it: in a pipeline, claiming every message."""
    async with store.messages.db.connection() as conn, conn.pipeline() as pipeline:
        read = await store.messages.queue_pending_with_conversation(conn, tenant_id, conversation_id, claim="all")
        await pipeline.sync()
        return await flattened(read())


async def plugin_settings_in_pipeline(store: Store, tenant_id: str, bot_id: str) -> Any:
    """``plugin_settings.queue_list_all`` as the turn loop sends it: in a pipeline, read after the sync."""
    async with store.messages.db.connection() as conn:
        async with conn.pipeline():
            read = await store.plugin_settings.queue_list_all(conn, tenant_id, bot_id)
        return await read()


async def store_turn_in_pipeline(store: Store, tenant_id: str, conversation_id: str, message_id: str) -> Any:
    """``messages.queue_store_turn`` as the runner sends it: in a pipeline and a transaction, read after the sync."""
    async with store.messages.db.connection() as conn:
        async with conn.pipeline(), conn.transaction():
            read = await store.messages.queue_store_turn(
                conn,
                tenant_id,
                conversation_id,
                channel="sms",
                turn_id=str(uuid.uuid4()),
                replies=["injected"],
                status="pending",
                finished=[(message_id, "answered")],
                outcome={"x": 1},
            )
        return await read()


def last_day(month: date) -> date:
    """The last day of the calendar month that starts on ``month``."""
    return (month + timedelta(days=31)).replace(day=1) - timedelta(days=1)


async def spent_of(call: Awaitable[BudgetState]) -> Decimal:
    """The month-to-date spend a budget state read found."""
    return (await call).spent_usd


PROBES: list[Probe] = [
    Probe("audit", "page", lambda s, a, b: s.audit.page(a.tenant.id), "own"),
    Probe(
        "audit",
        "append",
        lambda s, a, b: s.audit.append(
            tenant_id=a.tenant.id,
            principal_kind="system",
            principal_id=None,
            action="bot.updated",
            target_kind="bot",
            target_id=a.bot.id,
            request_id=None,
            details={},
        ),
        "own",
    ),
    Probe("api_keys", "create", lambda s, a, b: s.api_keys.create(a.tenant.id, "extra"), "own"),
    Probe("api_keys", "list_all", lambda s, a, b: s.api_keys.list_all(a.tenant.id), "own"),
    Probe("api_keys", "revoke", lambda s, a, b: s.api_keys.revoke(a.tenant.id, b.api_key.id), "nothing"),
    Probe("bots", "create", lambda s, a, b: s.bots.create(a.tenant.id, b.only_bot.slug, "Copy"), "own"),
    Probe("bots", "get", lambda s, a, b: s.bots.get(a.tenant.id, b.bot.id), "nothing"),
    Probe("bots", "get_by_slug", lambda s, a, b: s.bots.get_by_slug(a.tenant.id, b.only_bot.slug), "nothing", "B's"),
    Probe("bots", "get_by_slug", lambda s, a, b: s.bots.get_by_slug(a.tenant.id, "support"), "own", "shared"),
    Probe("bots", "list_all", lambda s, a, b: s.bots.list_all(a.tenant.id), "own"),
    Probe(
        "bots",
        "update",
        lambda s, a, b: s.bots.update(a.tenant.id, b.bot.id, name="hijacked", settings=BotSettings(persona="evil")),
        "nothing",
    ),
    Probe("bots", "delete", lambda s, a, b: s.bots.delete(a.tenant.id, b.bot.id), "nothing"),
    Probe(
        "plugin_settings",
        "put",
        lambda s, a, b: s.plugin_settings.put(
            a.tenant.id, b.bot.id, "demo_shop", enabled=False, config={}, secrets={"auth_token": "stolen"}
        ),
        "nothing",
    ),
    Probe(
        "plugin_settings", "get", lambda s, a, b: s.plugin_settings.get(a.tenant.id, b.bot.id, "demo_shop"), "nothing"
    ),
    Probe("plugin_settings", "list_all", lambda s, a, b: s.plugin_settings.list_all(a.tenant.id, b.bot.id), "nothing"),
    Probe(
        "plugin_settings",
        "queue_list_all",
        lambda s, a, b: plugin_settings_in_pipeline(s, a.tenant.id, b.bot.id),
        "nothing",
    ),
    Probe(
        "conversations",
        "get_or_create",
        lambda s, a, b: s.conversations.get_or_create(a.tenant.id, b.bot.id, "sms", b.conversation.external_key),
        "nothing",
    ),
    Probe("conversations", "create", lambda s, a, b: s.conversations.create(a.tenant.id, b.bot.id, "web"), "nothing"),
    Probe("conversations", "get", lambda s, a, b: s.conversations.get(a.tenant.id, b.conversation.id), "nothing"),
    Probe(
        "conversations",
        "list_all",
        lambda s, a, b: s.conversations.list_all(a.tenant.id, b.bot.id),
        "nothing",
        "B's bot",
    ),
    Probe("conversations", "list_all", lambda s, a, b: s.conversations.list_all(a.tenant.id), "own", "all"),
    Probe(
        "conversations",
        "idle_unpruned",
        lambda s, a, b: s.conversations.idle_unpruned(a.tenant.id, b.bot.id, datetime.now(UTC) + timedelta(hours=1)),
        "nothing",
    ),
    Probe(
        "conversations",
        "close_idle",
        lambda s, a, b: s.conversations.close_idle(a.tenant.id, b.bot.id, datetime.now(UTC) + timedelta(hours=1)),
        "nothing",
    ),
    Probe(
        "conversations",
        "closed_unarchived",
        lambda s, a, b: s.conversations.closed_unarchived(a.tenant.id, b.bot.id),
        "nothing",
    ),
    Probe(
        "conversations",
        "mark",
        lambda s, a, b: s.conversations.mark(a.tenant.id, [b.conversation.id, b.closed.id], "archived"),
        "nothing",
    ),
    Probe(
        "conversations",
        "set_state_version",
        lambda s, a, b: s.conversations.set_state_version(a.tenant.id, b.conversation.id, 99),
        "nothing",
    ),
    Probe(
        "conversations",
        "set_status",
        lambda s, a, b: s.conversations.set_status(a.tenant.id, b.conversation.id, "closed"),
        "nothing",
    ),
    Probe(
        "messages",
        "add_inbound",
        lambda s, a, b: s.messages.add_inbound(a.tenant.id, b.bot.id, b.conversation.id, FOREIGN_INBOUND),
        "nothing",
    ),
    Probe(
        "messages",
        "receive",
        lambda s, a, b: s.messages.receive(a.tenant.id, b.bot.id, FOREIGN_INBOUND),
        "nothing",
    ),
    Probe(
        "messages",
        "add_outbound",
        lambda s, a, b: s.messages.add_outbound(
            a.tenant.id, b.conversation.id, channel="sms", text="injected", idempotency_key=OUTBOUND_KEY
        ),
        "nothing",
    ),
    Probe(
        "messages",
        "find",
        lambda s, a, b: s.messages.find(a.tenant.id, b.bot.id, "sms", "inbound", INBOUND_KEY),
        "nothing",
    ),
    Probe("messages", "get", lambda s, a, b: s.messages.get(a.tenant.id, b.inbound.id), "nothing"),
    Probe("messages", "list_all", lambda s, a, b: s.messages.list_all(a.tenant.id, b.conversation.id), "nothing"),
    Probe(
        "messages",
        "set_status",
        lambda s, a, b: s.messages.set_status(a.tenant.id, b.outbound.id, "failed", provider_id="SMx", error="x"),
        "nothing",
    ),
    Probe(
        "messages",
        "pending_inbound",
        lambda s, a, b: s.messages.pending_inbound(a.tenant.id, b.conversation.id),
        "nothing",
    ),
    Probe(
        "messages",
        "finish",
        lambda s, a, b: s.messages.finish(a.tenant.id, b.inbound.id, "answered", turn_id=None, outcome={"x": 1}),
        "nothing",
    ),
    Probe(
        "messages",
        "claim",
        lambda s, a, b: s.messages.claim(a.tenant.id, b.inbound.id, "processing", expected=["received"]),
        "nothing",
    ),
    Probe("messages", "received_after", received_after_foreign, "nothing"),
    Probe(
        "messages",
        "pending_with_conversation",
        lambda s, a, b: flattened(s.messages.pending_with_conversation(a.tenant.id, b.conversation.id)),
        "nothing",
    ),
    Probe(
        "messages",
        "release_held",
        lambda s, a, b: s.messages.release_held(a.tenant.id, b.conversation.id, datetime(2000, 1, 1, tzinfo=UTC)),
        "nothing",
    ),
    Probe(
        "messages",
        "queue_pending_with_conversation",
        lambda s, a, b: pending_in_pipeline(s, a.tenant.id, b.conversation.id),
        "nothing",
    ),
    Probe(
        "messages",
        "store_turn",
        lambda s, a, b: s.messages.store_turn(
            a.tenant.id,
            b.conversation.id,
            channel="sms",
            turn_id=str(uuid.uuid4()),
            replies=["injected"],
            status="pending",
            finished=[(b.inbound.id, "answered")],
            outcome={"x": 1},
        ),
        "nothing",
    ),
    Probe(
        "messages",
        "store_turn",
        lambda s, a, b: s.messages.store_turn(
            a.tenant.id,
            a.conversation.id,
            channel="sms",
            turn_id=str(uuid.uuid4()),
            replies=["own"],
            status="pending",
            finished=[(b.inbound.id, "answered")],
            outcome={"x": 1},
        ),
        "own",
        "B's message in A's turn",
    ),
    Probe(
        "messages",
        "queue_store_turn",
        lambda s, a, b: store_turn_in_pipeline(s, a.tenant.id, b.conversation.id, b.inbound.id),
        "nothing",
    ),
    Probe("messages", "replies_of_turn", lambda s, a, b: s.messages.replies_of_turn(a.tenant.id, b.turn_id), "nothing"),
    Probe(
        "usage",
        "record",
        lambda s, a, b: s.usage.record(
            UsageEvent(
                tenant_id=a.tenant.id, bot_id=b.bot.id, conversation_id=b.conversation.id, kind="chat", model="m"
            )
        ),
        "nothing",
    ),
    Probe("usage", "totals", lambda s, a, b: s.usage.totals(a.tenant.id, b.bot.id), "nothing", "B's bot"),
    Probe(
        "usage",
        "totals",
        lambda s, a, b: s.usage.totals(a.tenant.id),
        "own",
        "all",
        expected=lambda a: {"calls": 1, "prompt_tokens": 10, "completion_tokens": 5},
    ),
    Probe(
        "usage",
        "report",
        lambda s, a, b: s.usage.report(a.tenant.id, a.month, last_day(a.month), "bot"),
        "own",
        expected=lambda a: [
            UsageGroup(
                key=a.bot.id,
                label="support",
                calls=1,
                input_tokens=10,
                output_tokens=5,
                cost_usd=Decimal("0.01"),
                unpriced_calls=0,
            )
        ],
    ),
    Probe("budgets", "get", lambda s, a, b: s.budgets.get(a.tenant.id), "own"),
    Probe(
        "budgets",
        "put",
        lambda s, a, b: s.budgets.put(a.tenant.id, monthly_usd=Decimal(5), alert_at=[], on_exhausted="offline"),
        "own",
    ),
    Probe("budgets", "delete", lambda s, a, b: s.budgets.delete(a.tenant.id), "own"),
    Probe(
        "budgets",
        "state",
        lambda s, a, b: spent_of(s.budgets.state(a.tenant.id, a.month)),
        "own",
        expected=lambda a: Decimal("0.01"),
    ),
    Probe(
        "budgets",
        "claim_alert",
        lambda s, a, b: s.budgets.claim_alert(a.tenant.id, a.month, "alert", Decimal(1000)),
        "own",
    ),
    Probe("deliveries", "next_due", lambda s, a, b: s.deliveries.next_due(a.tenant.id, b.conversation.id), "nothing"),
    Probe("deliveries", "start", lambda s, a, b: s.deliveries.start(a.tenant.id, b.sending.id), "nothing"),
    Probe(
        "deliveries",
        "add_part",
        lambda s, a, b: s.deliveries.add_part(a.tenant.id, b.sending.id, 1, channel="sms", provider_id="forged"),
        "nothing",
    ),
    Probe(
        "deliveries",
        "begin_attempt",
        lambda s, a, b: s.deliveries.begin_attempt(a.tenant.id, b.sending.id, 1, channel="sms"),
        "nothing",
    ),
    Probe(
        "deliveries",
        "forget_attempt",
        lambda s, a, b: s.deliveries.forget_attempt(a.tenant.id, b.sending.id, 1),
        "nothing",
    ),
    Probe("deliveries", "finish", lambda s, a, b: s.deliveries.finish(a.tenant.id, b.sending.id), "nothing"),
    Probe(
        "deliveries",
        "fail",
        lambda s, a, b: s.deliveries.fail(a.tenant.id, b.sending.id, "x", retry_at=None),
        "nothing",
    ),
    Probe(
        "deliveries",
        "claim_for_response",
        lambda s, a, b: s.deliveries.claim_for_response(a.tenant.id, [b.inbound.id]),
        "nothing",
    ),
    Probe(
        "deliveries",
        "apply_report",
        lambda s, a, b: s.deliveries.apply_report(
            a.tenant.id, b.bot.id, "sms", status="delivered", provider_id=b.provider_id
        ),
        "nothing",
        "by provider id",
    ),
    Probe(
        "deliveries",
        "apply_report",
        lambda s, a, b: s.deliveries.apply_report(
            a.tenant.id, b.bot.id, "sms", status="delivered", provider_id=None, ref=(b.sending.id, 0)
        ),
        "nothing",
        "by reference",
    ),
    Probe("deliveries", "dead_letters", lambda s, a, b: s.deliveries.dead_letters(a.tenant.id, b.bot.id), "nothing"),
    Probe("deliveries", "requeue", lambda s, a, b: s.deliveries.requeue(a.tenant.id, b.dead_letter.id), "nothing"),
    Probe("deliveries", "state", lambda s, a, b: s.deliveries.state(a.tenant.id, b.outbound.id), "nothing"),
    Probe("channel_polls", "cursor", lambda s, a, b: s.channel_polls.cursor(a.tenant.id, b.bot.id, "imap"), "nothing"),
    Probe(
        "channel_polls",
        "save",
        lambda s, a, b: s.channel_polls.save(a.tenant.id, b.bot.id, "imap", {"last_uid": 0}),
        "nothing",
    ),
]


async def moved_handover(call: Awaitable[Any]) -> Any:
    """The handover a move found (``None``: none of the caller's)."""
    return (await call).handover


def open_handover(s: Store, a: TenantWorld, b: TenantWorld) -> Awaitable[Any]:
    return s.handovers.open(
        a.tenant.id,
        bot_id=b.bot.id,
        conversation_id=b.conversation.id,
        reason="hijack",
        team=None,
        summary={},
        wait_until=None,
        first_response_due=None,
        resolution_due=None,
    )


async def teaching_of(call: Awaitable[Teaching]) -> list[Any] | None:
    """What a bot was taught, or ``None`` when nothing (an empty ``Teaching`` is still an object)."""
    taught = await call
    return [dict(taught.synonyms), dict(taught.examples)] if taught.revision else None


async def delete_foreign_example(store: Store, a: TenantWorld, b: TenantWorld) -> bool:
    """Tenant A deletes the example B taught (looked up as B)."""
    (example,) = await store.teaching.examples(b.tenant.id, b.bot.id, "greeting")
    return await store.teaching.delete_example(a.tenant.id, b.bot.id, "greeting", example.id)


PROBES += [
    Probe("teaching", "load", lambda s, a, b: teaching_of(s.teaching.load(a.tenant.id, b.bot.id)), "nothing"),
    Probe("teaching", "synonyms", lambda s, a, b: s.teaching.synonyms(a.tenant.id, b.bot.id), "nothing"),
    Probe(
        "teaching",
        "put_synonyms",
        lambda s, a, b: s.teaching.put_synonyms(a.tenant.id, b.bot.id, {"x": "y"}),
        "nothing",
    ),
    Probe("teaching", "examples", lambda s, a, b: s.teaching.examples(a.tenant.id, b.bot.id, "greeting"), "nothing"),
    Probe(
        "teaching",
        "add_example",
        lambda s, a, b: s.teaching.add_example(a.tenant.id, b.bot.id, "greeting", "x"),
        "nothing",
    ),
    Probe("teaching", "delete_example", delete_foreign_example, "nothing"),
    Probe("teaching", "fallbacks", lambda s, a, b: s.teaching.fallbacks(a.tenant.id, b.bot.id, None, None), "nothing"),
]
PROBES += [
    Probe(
        "agents",
        "create",
        lambda s, a, b: s.agents.create(a.tenant.id, email="x@alpha.test", name="X", password="p"),
        "own",
    ),
    Probe(
        "agents", "sign_in", lambda s, a, b: s.agents.sign_in(a.tenant.id, b.desk.agent.email, "pw-123456"), "nothing"
    ),
    Probe("agents", "sign_out", lambda s, a, b: s.agents.sign_out(a.tenant.id, b.desk.session), "nothing"),
    Probe("agents", "get", lambda s, a, b: s.agents.get(a.tenant.id, b.desk.agent.id), "nothing"),
    Probe("agents", "list_all", lambda s, a, b: s.agents.list_all(a.tenant.id), "own"),
    Probe(
        "agents",
        "update",
        lambda s, a, b: s.agents.update(a.tenant.id, b.desk.agent.id, {"name": "hijacked"}),
        "nothing",
    ),
    Probe("agents", "delete", lambda s, a, b: s.agents.delete(a.tenant.id, b.desk.agent.id), "nothing"),
    Probe("agents", "heartbeat", lambda s, a, b: s.agents.heartbeat(a.tenant.id, b.desk.agent.id, "away"), "nothing"),
    Probe(
        "agents", "count_available", lambda s, a, b: s.agents.count_available(a.tenant.id, b.desk.team, 90), "nothing"
    ),
    Probe("teams", "put", lambda s, a, b: s.teams.put(a.tenant.id, "probe", timezone="UTC", hours={}), "own"),
    Probe("teams", "get", lambda s, a, b: s.teams.get(a.tenant.id, b.desk.team), "nothing"),
    Probe("teams", "list_all", lambda s, a, b: s.teams.list_all(a.tenant.id), "own"),
    Probe("teams", "delete", lambda s, a, b: s.teams.delete(a.tenant.id, b.desk.team), "nothing"),
    Probe("canned", "create", lambda s, a, b: s.canned.create(a.tenant.id, team="", shortcut="x", text="y"), "own"),
    Probe("canned", "list_all", lambda s, a, b: s.canned.list_all(a.tenant.id), "own"),
    Probe(
        "canned",
        "update",
        lambda s, a, b: s.canned.update(a.tenant.id, b.desk.canned.id, shortcut=None, text="z"),
        "nothing",
    ),
    Probe("canned", "delete", lambda s, a, b: s.canned.delete(a.tenant.id, b.desk.canned.id), "nothing"),
    Probe("handovers", "open", open_handover, "nothing"),
    Probe("handovers", "get", lambda s, a, b: s.handovers.get(a.tenant.id, b.desk.waiting.id), "nothing"),
    Probe("handovers", "open_of", lambda s, a, b: s.handovers.open_of(a.tenant.id, b.conversation.id), "nothing"),
    Probe("handovers", "list_all", lambda s, a, b: s.handovers.list_all(a.tenant.id), "own"),
    Probe(
        "handovers",
        "move",
        lambda s, a, b: moved_handover(
            s.handovers.move(a.tenant.id, b.desk.waiting.id, "resolved", allowed=OPEN_STATUSES, actor=a.desk.agent.id)
        ),
        "nothing",
    ),
    Probe("handovers", "assign_next", lambda s, a, b: s.handovers.assign_next(a.tenant.id, away_after=90), "own"),
    Probe("handovers", "unassign", lambda s, a, b: s.handovers.unassign(a.tenant.id, b.desk.agent.id), "nothing"),
    Probe("handovers", "responded", lambda s, a, b: s.handovers.responded(a.tenant.id, b.desk.assigned.id), "nothing"),
    Probe("handovers", "resumed", lambda s, a, b: s.handovers.resumed(a.tenant.id, b.desk.assigned.id), "nothing"),
    Probe(
        "handovers",
        "resume_failed",
        lambda s, a, b: s.handovers.resume_failed(a.tenant.id, b.desk.waiting.id),
        "nothing",
    ),
    Probe(
        "handovers",
        "take_back",
        lambda s, a, b: s.handovers.take_back(a.tenant.id, b.desk.pending.id, a.desk.agent.id),
        "nothing",
    ),
    Probe(
        "handovers", "transitions", lambda s, a, b: s.handovers.transitions(a.tenant.id, b.desk.assigned.id), "nothing"
    ),
    Probe(
        "handovers",
        "add_note",
        lambda s, a, b: s.handovers.add_note(a.tenant.id, b.desk.waiting.id, None, "x"),
        "nothing",
    ),
    Probe("handovers", "notes", lambda s, a, b: s.handovers.notes(a.tenant.id, b.desk.waiting.id), "nothing"),
    Probe(
        "handovers",
        "last_inbound_at",
        lambda s, a, b: s.handovers.last_inbound_at(a.tenant.id, b.conversation.id),
        "nothing",
    ),
    Probe("handovers", "stats", lambda s, a, b: s.handovers.stats(a.tenant.id, bot_id=b.bot.id), "nothing", "B's bot"),
    Probe("handovers", "stats", lambda s, a, b: s.handovers.stats(a.tenant.id), "own", "all"),
]


async def new_fork_on(store: Store, a: TenantWorld, b: TenantWorld) -> Fork:
    """Tenant A records a fork of B's conversation (of B's bot)."""
    return await forks_of(store).create(
        a.tenant.id,
        fork_id=str(uuid.uuid4()),
        bot_id=b.bot.id,
        conversation_id=b.conversation.id,
        checkpoint_id="forged",
        thread_id=f"forged-{uuid.uuid4()}",
        break_before=[],
        break_after=[],
    )


PROBES += [
    Probe(
        "events",
        "append",
        lambda s, a, b: s.events.append(a.tenant.id, "probe.kind", {}, conversation_id=b.conversation.id),
        "nothing",
        "B's conversation",
    ),
    Probe(
        "events",
        "append",
        lambda s, a, b: s.events.append(a.tenant.id, "handover.opened", {"note": "own"}),
        "own",
        "tenant stream, A's endpoints only",
    ),
    Probe("events", "get", lambda s, a, b: s.events.get(a.tenant.id, b.outbox.event.id), "nothing"),
    Probe(
        "events",
        "in_conversation",
        lambda s, a, b: s.events.in_conversation(a.tenant.id, b.conversation.id, 0),
        "nothing",
    ),
    Probe(
        "events",
        "last_in_conversation",
        lambda s, a, b: s.events.last_in_conversation(a.tenant.id, b.conversation.id),
        "nothing",
    ),
    Probe(
        "events",
        "after",
        lambda s, a, b: s.events.after(a.tenant.id, 0),
        "own",
        expected=lambda a: [a.outbox.event],
    ),
    Probe(
        "webhooks",
        "create",
        lambda s, a, b: s.webhooks.create(a.tenant.id, "https://probe.example.test/hook", "secret"),
        "own",
    ),
    Probe("webhooks", "of_tenant", lambda s, a, b: s.webhooks.of_tenant(a.tenant.id), "own"),
    Probe("webhooks", "get", lambda s, a, b: s.webhooks.get(a.tenant.id, b.outbox.endpoint.id), "nothing"),
    Probe("webhooks", "count", lambda s, a, b: s.webhooks.count(a.tenant.id), "own", expected=lambda a: 1),
    Probe("webhooks", "delete", lambda s, a, b: s.webhooks.delete(a.tenant.id, b.outbox.endpoint.id), "nothing"),
    Probe(
        "webhooks",
        "deliveries",
        lambda s, a, b: s.webhooks.deliveries(a.tenant.id, b.outbox.endpoint.id),
        "nothing",
    ),
    Probe("inbound", "to_inbox", lambda s, a, b: s.inbound.to_inbox(a.tenant.id, b.bot.id, FOREIGN_INBOUND), "nothing"),
    Probe("forks", "create", new_fork_on, "nothing"),
    Probe("forks", "get", lambda s, a, b: forks_of(s).get(a.tenant.id, b.outbox.fork.id), "nothing"),
    Probe("forks", "touch", lambda s, a, b: forks_of(s).touch(a.tenant.id, b.outbox.fork.id, edited=True), "nothing"),
    Probe("forks", "delete", lambda s, a, b: forks_of(s).delete(a.tenant.id, b.outbox.fork.id), "nothing"),
    Probe(
        "forks",
        "of_conversation",
        lambda s, a, b: forks_of(s).of_conversation(a.tenant.id, b.conversation.id),
        "nothing",
    ),
    Probe(
        "inspection",
        "find_conversations",
        lambda s, a, b: s.inspection.find_conversations(a.tenant.id, b.bot.id),
        "nothing",
        "B's bot",
    ),
    Probe(
        "inspection",
        "find_conversations",
        lambda s, a, b: s.inspection.find_conversations(a.tenant.id, a.bot.id, text="says hi"),
        "own",
        "text search",
    ),
    Probe(
        "inspection",
        "transcript_page",
        lambda s, a, b: s.inspection.transcript_page(a.tenant.id, b.conversation.id),
        "nothing",
    ),
    Probe(
        "inspection",
        "turn_messages",
        lambda s, a, b: s.inspection.turn_messages(a.tenant.id, b.conversation.id, b.turn_id),
        "nothing",
    ),
]


async def conversation_ids(call: Awaitable[list[Conversation]]) -> list[str]:
    """The ids of the conversations a call found."""
    return [c.id for c in await call]


PROBES += [
    Probe(
        "contacts",
        "conversations",
        lambda s, a, b: conversation_ids(s.contacts.conversations(a.tenant.id, "sms", SENDER)),
        "own",
        "the same address in both tenants",
        expected=lambda a: [a.conversation.id],
    ),
    Probe("contacts", "messages", lambda s, a, b: s.contacts.messages(a.tenant.id, b.conversation.id), "nothing"),
    Probe("contacts", "handovers", lambda s, a, b: s.contacts.handovers(a.tenant.id, b.conversation.id), "nothing"),
    Probe("contacts", "usage", lambda s, a, b: s.contacts.usage(a.tenant.id, b.conversation.id), "nothing"),
    Probe("contacts", "erase", lambda s, a, b: s.contacts.erase(a.tenant.id, b.conversation.id), "nothing"),
    Probe(
        "checkpoint_erasures",
        "retire",
        lambda s, a, b: s.checkpoint_erasures.retire(a.tenant.id, [b.conversation.id], "archived"),
        "nothing",
    ),
]


OPERATOR_LEVEL = "operator-level: the tenants table itself"
WEBHOOK_JOB = "the webhook delivery job over every tenant, by endpoint id (tests/test_webhooks_events.py)"
NOT_TENANT_SCOPED: dict[tuple[str, str], str] = {
    ("TenantRepository", "create"): OPERATOR_LEVEL,
    ("TenantRepository", "get"): OPERATOR_LEVEL,
    ("TenantRepository", "get_by_slug"): OPERATOR_LEVEL,
    ("TenantRepository", "list_all"): OPERATOR_LEVEL,
    ("TenantRepository", "delete"): OPERATOR_LEVEL,
    ("ApiKeyRepository", "authenticate"): "the key names its own tenant (test_api_keys_*)",
    ("InboundRepository", "receive_and_queue"): "messages.receive's statement (probed) with the queue's job row, which "
    "needs SAQ's jobs table (not created here); tests/test_inbound_store.py",
    ("InboundRepository", "ingest_inbox"): "the workers' ingest of the webhook inbox over every tenant (each row "
    "names its tenant and bot); tests/test_webhook_inbox.py",
    ("BotRepository", "find"): "routing across tenants by design; the caller checks the owner (test_find_*)",
    ("BotRepository", "all_tenants_bots"): "operator-level jobs (retention) over every tenant",
    ("ConversationRepository", "tenant_of"): "operator-level: finds the tenant of a conversation named by id alone",
    ("ChannelRouteRepository", "find"): "routing a public webhook across tenants by design; the signature decides",
    ("DeliveryRepository", "tenant_of"): "operator-level: finds the tenant of a message named by id alone",
    ("DeliveryRepository", "unfinished"): "the recovery sweep over every tenant; answers tenant ids",
    ("ChannelPollRepository", "enabled_bots"): "the polling sweep over every tenant; answers tenant ids",
    ("AgentRepository", "authenticate"): "the agent's token names its own tenant (tests/test_desk_auth.py)",
    ("HandoverRepository", "timed_out"): "the desk's sweep over every tenant; answers tenant ids",
    ("HandoverRepository", "missed_deadlines"): "the desk's sweep over every tenant; answers tenant ids",
    ("HandoverRepository", "waiting_counts"): "the metrics gauge over every tenant: counts per bot and team",
    ("HandoverRepository", "resume_pending"): "the desk's sweep over every tenant: closed handovers to resume",
    ("EventRepository", "prune"): "the retention job over every tenant: deletes events older than N days",
    ("AuditRepository", "prune"): "the retention job over every tenant: deletes audit rows older than N days",
    ("BudgetRepository", "budgeted"): "cost control's refresh over every tenant: answers tenant ids",
    ("WebhookRepository", "next_pending"): WEBHOOK_JOB,
    ("WebhookRepository", "delivered"): WEBHOOK_JOB,
    ("WebhookRepository", "failed"): WEBHOOK_JOB,
    ("WebhookRepository", "overdue"): "the webhook sweep over every tenant; answers endpoint ids",
    ("ForkRepository", "tenant_of"): "operator-level: finds the tenant of a fork named by id alone",
    ("CheckpointErasureRepository", "due"): "the erasure sweep over every tenant (tenant_id only narrows it); "
    "tests/test_data_rights.py",
    ("CheckpointErasureRepository", "erased"): "the erasure sweep, by the row ids due() listed",
    ("CheckpointErasureRepository", "forget"): "the erasure sweep, by the row ids due() listed",
}
"""``(repository class, method)`` that take no tenant on purpose, with the reason."""


def repository_classes() -> set[type[Repository]]:
    """Every repository class of every module of the repositories package, whether or not ``Store`` holds it."""
    found: set[type[Repository]] = set()
    for module in pkgutil.iter_modules(repositories.__path__, f"{repositories.__name__}."):
        namespace = vars(importlib.import_module(module.name))
        found |= {cls for cls in namespace.values() if isinstance(cls, type) and issubclass(cls, Repository)}
    return found - {Repository}


def public_repository_methods() -> set[tuple[str, str]]:
    """``(repository class, method)`` of every public async method of every repository."""
    return {
        (cls.__name__, method)
        for cls in repository_classes()
        for method, _ in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not method.startswith("_")
    }


def probed_methods() -> set[tuple[str, str]]:
    """``(repository class, method)`` that a probe of ``PROBES`` calls."""
    store = Store(cast(Database, None), cast(Cipher, None))
    repository = {probe.repo: getattr(store, probe.repo, None) for probe in PROBES}
    repository["forks"] = forks_of(store)
    return {(type(repository[probe.repo]).__name__, probe.method) for probe in PROBES}


def test_the_store_holds_one_of_every_repository() -> None:
    store = Store(cast(Database, None), cast(Cipher, None))
    held = [type(value) for value in vars(store).values() if isinstance(value, Repository)]
    assert sorted(cls.__name__ for cls in held) == sorted(cls.__name__ for cls in repository_classes())
    assert store.channel_routes.settings is store.plugin_settings


def test_every_repository_is_importable_from_the_package() -> None:
    """``from botloom.core.storage.repositories import X`` keeps working for every repository after the split."""
    exported = {getattr(repositories, cls.__name__, None) for cls in repository_classes()}
    assert exported == repository_classes()
    assert {"Store", "OutboundState", "Conflict", "as_uuid", "hash_api_key"} <= set(repositories.__all__)


def test_every_repository_method_has_a_tenant_scoping_probe() -> None:
    covered = probed_methods() | set(NOT_TENANT_SCOPED)
    methods = public_repository_methods()
    assert sorted(methods - covered) == [], "these repository methods need a probe in PROBES"
    assert sorted(covered - methods) == [], "PROBES names methods that no longer exist"


async def attempt(probe: Probe, repos: Store, caller: TenantWorld, owner: TenantWorld) -> Any:
    """Run a probe as ``caller`` on ``owner``'s objects; a refusal (not found, foreign key) is ``None``."""
    try:
        return await probe.call(repos, caller, owner)
    except (LookupError, psycopg.IntegrityError):
        return None


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.id)
async def test_tenant_a_cannot_reach_tenant_b(
    repos: Store, db: Database, tenants: tuple[TenantWorld, TenantWorld], probe: Probe
) -> None:
    a, b = tenants
    before = await footprint(db, b.markers)
    assert all(before[t] for t in (*CORE_TABLES, "message_parts")), "tenant B should have a row in every table"
    result = await attempt(probe, repos, a, b)
    leaked = sorted(m for m in b.markers if m in as_text(result))
    assert leaked == [], f"{probe.id} returned tenant B's data"
    if probe.expect == "nothing":
        assert is_nothing(result), f"{probe.id} returned {result!r}"
    else:
        assert not is_nothing(result)
        if probe.expected is not None:
            assert result == probe.expected(a)
    assert await footprint(db, b.markers) == before, f"{probe.id} changed or added rows about tenant B"


@pytest.mark.parametrize("probe", [p for p in PROBES if p.expect == "nothing"], ids=lambda p: p.id)
async def test_each_probe_reaches_the_data_of_its_own_tenant(
    repos: Store, db: Database, tenants: tuple[TenantWorld, TenantWorld], probe: Probe
) -> None:
    """The control of the test above: as tenant B, the same call finds or changes B's rows.

    So each probe aims at rows that exist and qualify, and its "nothing" means scoping.
    """
    _, b = tenants
    before = await footprint(db, b.markers)
    result = await attempt(probe, repos, b, b)
    assert not is_nothing(result) or await footprint(db, b.markers) != before


MALFORMED = "not-a-uuid"
MALFORMED_ID_CALLS: dict[str, Callable[[Store, TenantWorld], Awaitable[Any]]] = {
    "bots.get": lambda s, a: s.bots.get(a.tenant.id, MALFORMED),
    "bots.find": lambda s, a: s.bots.find(MALFORMED),
    "bots.update": lambda s, a: s.bots.update(a.tenant.id, MALFORMED, name="x"),
    "plugin_settings.list_all": lambda s, a: s.plugin_settings.list_all(a.tenant.id, MALFORMED),
    "conversations.get": lambda s, a: s.conversations.get(a.tenant.id, MALFORMED),
    "conversations.list_all": lambda s, a: s.conversations.list_all(a.tenant.id, MALFORMED),
    "messages.list_all": lambda s, a: s.messages.list_all(a.tenant.id, MALFORMED),
    "messages.set_status": lambda s, a: s.messages.set_status(a.tenant.id, MALFORMED, "failed"),
    "usage.totals": lambda s, a: s.usage.totals(a.tenant.id, MALFORMED),
    "tenant id": lambda s, a: s.bots.list_all(MALFORMED),
}


@pytest.mark.parametrize("call", list(MALFORMED_ID_CALLS))
async def test_a_malformed_id_finds_nothing(store: Store, tenants: tuple[TenantWorld, TenantWorld], call: str) -> None:
    """The repositories' contract: "a malformed id simply finds nothing" (not everything)."""
    a, _ = tenants
    assert is_nothing(await MALFORMED_ID_CALLS[call](store, a))


async def test_find_resolves_both_reference_forms_with_the_owner(
    store: Store, tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    a, b = tenants
    assert await store.bots.find(f"{b.tenant.slug}/support") == b.bot
    assert await store.bots.find(b.bot.id) == b.bot
    assert await store.bots.find(f"{a.tenant.slug}/{b.only_bot.slug}") is None


# --------------------------------------------------------------------------- idempotency


async def message_count(db: Database, conversation_id: str) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM messages WHERE conversation_id = %s", (conversation_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_an_inbound_message_is_stored_once_per_idempotency_key(
    store: Store, db: Database, tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    a, _ = tenants
    conversation = await store.conversations.create(a.tenant.id, a.bot.id, "web")
    message = InboundMessage(channel="web", text="hello", sender="u1", idempotency_key="client-1")
    first, created = await store.messages.add_inbound(a.tenant.id, a.bot.id, conversation.id, message)
    assert created
    again, created_again = await store.messages.add_inbound(a.tenant.id, a.bot.id, conversation.id, message)
    assert (again, created_again) == (first, False)
    assert await message_count(db, conversation.id) == 1


async def test_an_outbound_message_is_stored_once_per_idempotency_key(
    store: Store, db: Database, tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    a, _ = tenants
    conversation = await store.conversations.create(a.tenant.id, a.bot.id, "web")

    async def reply(key: str | None) -> tuple[StoredMessage, bool]:
        stored: tuple[StoredMessage, bool] = await store.messages.add_outbound(
            a.tenant.id, conversation.id, channel="web", text="hi", idempotency_key=key
        )
        return stored

    first, created = await reply("turn-1/0")
    assert created
    assert await reply("turn-1/0") == (first, False)
    assert await message_count(db, conversation.id) == 1
    assert [(await reply(None))[1] for _ in range(2)] == [True, True]  # no key: every reply is new
    assert await message_count(db, conversation.id) == 3


# --------------------------------------------------------------------------- statuses


async def accepts(db: Database, sql: str, params: tuple[Any, ...]) -> bool:
    """Whether the database takes this write (in a transaction rolled back either way)."""
    async with db.connection() as conn:
        try:
            async with conn.transaction():
                await conn.execute(sql, params)
                raise psycopg.Rollback()
        except psycopg.errors.CheckViolation:
            return False
    return True


async def test_the_database_takes_exactly_the_statuses_of_core_statuses(
    db: Database, tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    a, _ = tenants
    candidates = sorted({*MESSAGE_STATUSES, *CONVERSATION_STATUSES, *get_args(PartVia), "bogus", "Sent", ""})

    async def taken(sql: str, row_id: str) -> set[str]:
        return {value for value in candidates if await accepts(db, sql, (value, row_id))}

    message = "UPDATE messages SET status = %s WHERE id = %s"
    assert await taken(message, a.inbound.id) == set(INBOUND_STATUSES)
    assert await taken(message, a.outbound.id) == set(OUTBOUND_STATUSES)
    conversation = "UPDATE conversations SET status = %s WHERE id = %s"
    assert await taken(conversation, a.closed.id) == set(CONVERSATION_STATUSES)
    part = "UPDATE message_parts SET {} = %s WHERE message_id = %s"
    assert await taken(part.format("status"), a.sending.id) == set(DELIVERY_STATUSES)
    assert await taken(part.format("via"), a.sending.id) == set(get_args(PartVia))


def test_the_repositories_name_only_known_statuses_in_their_sql() -> None:
    """A status spelled in a repository's SQL is one of ``botloom.core.statuses`` (a typo matches no row)."""
    known = {
        *MESSAGE_STATUSES,
        *CONVERSATION_STATUSES,
        *DELIVERY_STATUSES,
        *get_args(PartVia),
        *get_args(MessageDirection),
        *HANDOVER_STATUSES,  # the agent desk's own statuses (repositories/handovers.py)
        *get_args(Presence),  # an agent's presence (repositories/agents.py)
        "outcome",  # a JSON key, not a status
        "intent",  # a JSON key of the outcome (fallbacks: repositories/teaching.py)
    }
    spelled: dict[str, set[str]] = {}
    for module in pkgutil.iter_modules(repositories.__path__, f"{repositories.__name__}."):
        source = inspect.getsource(importlib.import_module(module.name))
        spelled[module.name] = set(re.findall(r"'([a-z_]+)'", source))
    assert {name: words - known for name, words in spelled.items() if words - known} == {}
    groups = {*statuses.UNFINISHED_INBOUND, *statuses.DUE_OUTBOUND, *statuses.DEAD_LETTER}
    assert groups <= set().union(*spelled.values())


def test_the_status_constraint_takes_every_status_botloom_ever_wrote(empty_database_url: str, tmp_path: Path) -> None:
    """Migration 0008 applies over a database holding a message of each status botloom has written."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name < "0008":
            shutil.copy(path, earlier)
    apply_migrations(empty_database_url, directories=[earlier])
    written = [("inbound", s) for s in INBOUND_STATUSES] + [("outbound", s) for s in OUTBOUND_STATUSES]
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(
            "WITH t AS (INSERT INTO tenants (slug, name) VALUES ('old', 'Old') RETURNING id), "
            "b AS (INSERT INTO bots (tenant_id, slug, name) SELECT id, 'bot', 'Bot' FROM t RETURNING tenant_id, id) "
            "INSERT INTO conversations (tenant_id, bot_id, channel, external_key) "
            "SELECT tenant_id, id, 'sms', 'x' FROM b"
        )
        for direction, status in written:
            conn.execute(
                "INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status) "
                "SELECT tenant_id, bot_id, id, %s, 'sms', 'old', %s FROM conversations",
                (direction, status),
            )
    assert "0008.message-status" in apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (len(written),)
        row = conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'messages_status'").fetchone()
        assert row == (True,)


# --------------------------------------------------------------------------- secrets and keys


async def raw_row(db: Database, sql: str, params: tuple[Any, ...]) -> dict[str, Any]:
    async with db.connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return dict(row)


def column_contains(value: Any, needle: str) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return needle.encode() in bytes(value)
    return needle in json.dumps(value, default=str)


async def test_plugin_secrets_are_encrypted_at_rest(store: Store, db: Database, cipher: Cipher) -> None:
    tenant = await store.tenants.create("acme", "Acme")
    bot = await store.bots.create(tenant.id, "support", "Support")
    stored = await store.plugin_settings.put(
        tenant.id, bot.id, "twilio", enabled=True, config={"account_sid": "AC123"}, secrets={"auth_token": "s3cret"}
    )
    assert stored is not None
    assert stored.config == {"account_sid": "AC123", "auth_token": "s3cret"}
    row = await raw_row(db, "SELECT * FROM bot_plugins WHERE bot_id = %s", (bot.id,))
    assert [column for column, value in row.items() if column_contains(value, "s3cret")] == []
    assert row["config"] == {"account_sid": "AC123"}
    assert json.loads(cipher.decrypt(bytes(row["secrets"]))) == {"auth_token": "s3cret"}
    setting = await store.plugin_settings.get(tenant.id, bot.id, "twilio")
    assert setting is not None
    assert setting.config == {"account_sid": "AC123", "auth_token": "s3cret"}
    assert await store.plugin_settings.list_all(tenant.id, bot.id) == [setting]


async def test_plugin_secrets_need_the_right_key(store: Store, db: Database) -> None:
    tenant = await store.tenants.create("acme", "Acme")
    bot = await store.bots.create(tenant.id, "support", "Support")
    await store.plugin_settings.put(tenant.id, bot.id, "p", enabled=True, config={}, secrets={"token": "t"})
    other = Store(db, Cipher(b"1" * 43 + b"="))
    with pytest.raises(InvalidToken):
        await other.plugin_settings.get(tenant.id, bot.id, "p")


async def test_api_keys_authenticate_until_revoked_and_only_a_hash_is_stored(store: Store, db: Database) -> None:
    tenant = await store.tenants.create("acme", "Acme")
    record, key = await store.api_keys.create(tenant.id, "ci")
    assert key.startswith("blk_")
    assert len(key) > 40
    assert (record.tenant_id, record.name, record.prefix) == (tenant.id, "ci", key[:10])

    row = await raw_row(db, "SELECT * FROM api_keys WHERE id = %s", (record.id,))
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest() == hash_api_key(key)
    assert [column for column, value in row.items() if column_contains(value, key[10:])] == []

    authenticated = await store.api_keys.authenticate(key)
    assert authenticated is not None
    assert (authenticated.id, authenticated.tenant_id) == (record.id, tenant.id)
    assert authenticated.last_used_at is not None
    assert await store.api_keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await store.api_keys.authenticate("") is None

    assert await store.api_keys.revoke(tenant.id, record.id)
    assert await store.api_keys.authenticate(key) is None
    assert await store.api_keys.revoke(tenant.id, record.id) is False
    [listed] = await store.api_keys.list_all(tenant.id)
    assert listed.revoked_at is not None


async def test_api_keys_of_one_tenant_leave_the_other_alone(
    store: Store, tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    a, b = tenants
    assert await store.api_keys.revoke(a.tenant.id, a.api_key.id)
    assert await store.api_keys.authenticate(a.key) is None
    authenticated = await store.api_keys.authenticate(b.key)
    assert authenticated is not None
    assert authenticated.tenant_id == b.tenant.id


# --------------------------------------------------------------------------- concurrency of conversations


async def test_get_or_create_from_many_tasks_makes_one_conversation(
    store: Store, tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    a, _ = tenants
    results = await asyncio.gather(
        *(store.conversations.get_or_create(a.tenant.id, a.bot.id, "whatsapp", "+15550199") for _ in range(8))
    )
    assert len({c.id for c in results}) == 1
