"""End users' data rights: export everything stored about one contact, erase it, and erase orphaned checkpoints.

A *contact* is one end user of a tenant on one channel, named by an address
(:class:`~botloom.core.storage.repositories.contacts.ContactRepository` says which
conversations that finds). ``docs/data-rights.md`` is the operators' and tenants' page.

**Export** (:func:`export_contact`) is a stream of one JSON document, written as it is
read: a contact of years on WhatsApp can have tens of thousands of messages and
checkpoints, so nothing holds them all in memory, and the client gets one complete
document rather than pages to stitch (with no snapshot across pages to promise). The
document's last key is ``"complete": true``: a stream cut short (the client or the
server went away) is invalid JSON, never a shorter document that looks whole.

**Erasure** (:func:`erase_contact`) goes conversation by conversation, each while
holding the conversation's lock (the one its turns hold): a turn running for the
contact finishes first, and a turn queued behind the lock then finds no conversation
and does nothing. Under the lock, its rows (its debug forks' included) go in one
transaction, which records its checkpoint thread and its forks' threads in
``checkpoint_erasures``; the threads are then deleted as below. (Retention's archive and
prune record their forks' threads the same way: ``CheckpointErasureRepository.retire``.)
A fork run still at work when its conversation is erased, which holds no conversation
lock, is caught by the second deletion.

**Orphaned threads** (:func:`erase_threads`): a contact's erasure and a bot's or a
tenant's deletion record the checkpoint threads of the conversations they delete in
``checkpoint_erasures``, in the transaction that deletes the rows. Each thread is
deleted at once, then once more after :func:`settle_seconds` (a turn or a debug fork
run still at work on it when its rows went is bounded by ``BOTLOOM_TURN_TIMEOUT``),
by the hourly retention pass (``runtime/retention.py``), which also finishes any
first deletion a crash cut short. Deleting works the same on PostgreSQL and Redis
checkpointers (``aprune(..., strategy="delete")``).

**Audit.** Each export and erasure is recorded in the audit log (``runtime/audit.py``,
``GET /api/v1/audit``, docs/audit.md) when given an ``actor``: a conversation's erasure in
the transaction that deletes its rows; a contact's, which is one transaction per
conversation, in the transaction of its first conversation (nothing is erased without
its row; a contact with nothing left is recorded on its own). Each is also reported as
an event of its tenant after the fact (:data:`AUDIT_KINDS`, in the tenant's stream:
``GET /api/v1/events``, webhooks). Neither holds the address or anything erased.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from botloom.core.domain import Conversation, Tenant
from botloom.core.messages import utcnow
from botloom.core.storage.repositories.contacts import ERASED_COUNTS
from botloom.runtime.audit import Actor, record
from botloom.runtime.inspection import plain, state_of, thread_of, turn_page
from botloom.runtime.services import Services
from botloom.runtime.turn_context import thread_id

logger = logging.getLogger(__name__)

AUDIT_KINDS = ("contact.exported", "contact.erased", "conversation.erased")
"""Event kinds that report a data-rights action (the audit log records them too: ``runtime/audit.py``)."""
EXPORT_FORMAT = 1
"""The version of the export document's shape."""
PAGE = 500
"""Rows read at once while exporting (messages, events, usage)."""
TURN_PAGE = 100
"""Checkpoints read at once while exporting."""
THREAD_BATCH = 200
"""Threads deleted from the checkpointer at once."""
SETTLE_MARGIN = 60.0
"""Seconds past ``BOTLOOM_TURN_TIMEOUT`` before a thread is deleted the second time."""
REQUEST_THREADS = 10_000
"""Threads a request deletes itself (a bot's or a tenant's deletion); the hourly pass deletes the rest."""
MAX_ROUNDS = 100
"""Deletions of one thread at most, one after another, until it has no checkpoint left (Redis deletes 10,000 a time)."""

_encode = msgspec.json.Encoder(enc_hook=repr).encode


@dataclass(frozen=True)
class Contact:
    """One end user of a tenant: a channel and an address on it."""

    channel: str
    address: str
    anonymous: str | None = None
    """The channel's sender of unnamed end users (``ChannelAdapter.anonymous_sender``), which names no contact."""


@dataclass
class ErasureReport:
    """What one erasure removed."""

    conversations: int = 0
    checkpoint_threads: int = 0
    """Conversation threads that held checkpoints (fork threads are counted in ``forks``)."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERASED_COUNTS, 0))

    def as_dict(self) -> dict[str, int]:
        """The report as the API answers it."""
        return {"conversations": self.conversations, "checkpoint_threads": self.checkpoint_threads, **self.counts}


def settle_seconds(services: Services) -> float:
    """Seconds after a thread's first deletion before its second: every run that could write to it has ended."""
    return float(services.settings.turn_timeout) + SETTLE_MARGIN


async def contact_conversations(services: Services, tenant_id: str, contact: Contact) -> list[Conversation]:
    """Every conversation of the contact, oldest first (ids and metadata only: the messages stay in the database)."""
    found: list[Conversation] = []
    after: tuple[datetime, str] | None = None
    while True:
        page = await services.store.contacts.conversations(
            tenant_id, contact.channel, contact.address, after=after, limit=PAGE, anonymous=contact.anonymous
        )
        found += page
        if len(page) < PAGE:
            return found
        after = (page[-1].created_at, page[-1].id)


# -- audit -------------------------------------------------------------------------


async def record_action(
    services: Services, tenant_id: str, kind: str, *, by: str, channel: str, data: Mapping[str, Any]
) -> None:
    """Record a data-rights action as an event of the tenant: who, the channel and ``data``, never the address."""
    assert kind in AUDIT_KINDS
    await services.events.emit(tenant_id, kind, data={"by": by, "channel": channel, **data})


# -- export ------------------------------------------------------------------------


async def export_contact(
    services: Services, tenant: Tenant, contact: Contact, conversations: Sequence[Conversation]
) -> AsyncIterator[bytes]:
    """The export document of the contact's ``conversations``, in pieces (see the module docstring)."""
    head = {
        "format": EXPORT_FORMAT,
        "tenant": {"id": tenant.id, "slug": tenant.slug},
        "contact": {"channel": contact.channel, "address": contact.address},
        "exported_at": utcnow(),
    }
    yield _encode(head)[:-1] + b',"conversations":['
    for index, conversation in enumerate(conversations):
        if index:
            yield b","
        async for piece in _conversation(services, conversation):
            yield piece
    yield b'],"complete":true}'


async def _conversation(services: Services, conversation: Conversation) -> AsyncIterator[bytes]:
    tenant_id, conversation_id = conversation.tenant_id, conversation.id
    yield b'{"conversation":' + _encode(conversation) + b',"messages":'
    async for piece in _array(_message_pages(services, tenant_id, conversation_id)):
        yield piece
    yield b',"handovers":' + _encode(await services.store.contacts.handovers(tenant_id, conversation_id))
    yield b',"events":'
    async for piece in _array(_event_pages(services, tenant_id, conversation_id)):
        yield piece
    yield b',"usage":'
    async for piece in _array(_usage_pages(services, tenant_id, conversation_id)):
        yield piece
    yield b',"checkpoints":'
    async for piece in _thread(services, thread_id(tenant_id, conversation.bot_id, conversation_id)):
        yield piece
    yield b',"forks":['
    forks = await services.store.forks.of_conversation(tenant_id, conversation_id, limit=10_000)
    for index, fork in enumerate(forks):
        yield (b"," if index else b"") + _encode(fork)[:-1] + b',"checkpoints":'
        async for piece in _thread(services, fork.thread_id):
            yield piece
        yield b"}"
    yield b"]}"


async def _array(pages: AsyncIterator[Sequence[Any]]) -> AsyncIterator[bytes]:
    """A JSON array of every item of ``pages``, a page at a time."""
    yield b"["
    first = True
    async for page in pages:
        if page:
            yield (b"" if first else b",") + b",".join(_encode(item) for item in page)
            first = False
    yield b"]"


async def _message_pages(services: Services, tenant_id: str, conversation_id: str) -> AsyncIterator[list[Any]]:
    after: tuple[str, str] | None = None
    while True:
        page = await services.store.contacts.messages(tenant_id, conversation_id, after=after, limit=PAGE)
        yield page
        if len(page) < PAGE:
            return
        after = (str(page[-1]["created_at"]), str(page[-1]["id"]))


async def _event_pages(services: Services, tenant_id: str, conversation_id: str) -> AsyncIterator[list[Any]]:
    sequence = 0
    while True:
        events = await services.store.events.in_conversation(tenant_id, conversation_id, sequence, PAGE)
        yield [e.envelope() for e in events]
        if len(events) < PAGE:
            return
        sequence = events[-1].sequence


async def _usage_pages(services: Services, tenant_id: str, conversation_id: str) -> AsyncIterator[list[Any]]:
    last = 0
    while True:
        rows = await services.store.contacts.usage(tenant_id, conversation_id, after=last, limit=PAGE)
        yield rows
        if len(rows) < PAGE:
            return
        last = int(rows[-1]["id"])


async def _thread(services: Services, thread: str) -> AsyncIterator[bytes]:
    """A checkpoint thread's summary: its newest state, and each run (newest first) as the debugger lists them."""
    saver = services.graphs.checkpointer
    if saver is None:
        yield b"null"
        return
    newest = await saver.aget_tuple(thread_of(thread))
    yield b'{"thread_id":' + _encode(thread) + b',"state":' + _encode(plain(state_of(newest))) + b',"runs":['
    before: str | None = None
    first = True
    while True:
        rows, before = await turn_page(saver, thread, before=before, limit=TURN_PAGE)
        if rows:
            yield (b"" if first else b",") + b",".join(_encode(r.as_dict()) for r in rows)
            first = False
        if before is None:
            break
    yield b"]}"


# -- erasure -----------------------------------------------------------------------


async def erase_contact(
    services: Services, tenant_id: str, contact: Contact, *, actor: Actor | None = None
) -> ErasureReport:
    """Erase everything stored about the contact (see the module docstring); idempotent.

    Returns what went; a second call finds nothing and answers zeros. With ``actor``, the
    ``contact.erased`` audit row goes in the transaction of the first conversation erased.
    """
    report = ErasureReport()
    conversations = await contact_conversations(services, tenant_id, contact)
    details = {"channel": contact.channel, "conversations": len(conversations)}

    async def audited(_counts: dict[str, int]) -> None:
        if actor is not None and not report.conversations:  # the first one erased
            await record(
                services, actor, "contact.erased", tenant_id=tenant_id, target=("contact", None), details=details
            )

    for conversation in conversations:
        await _erase_one(services, conversation, report, audited)
    if actor is not None and not report.conversations:  # nothing to erase: the request is recorded all the same
        await record(services, actor, "contact.erased", tenant_id=tenant_id, target=("contact", None), details=details)
    if report.conversations:
        await erase_threads(services, tenant_id=tenant_id)
    return report


async def erase_conversation(
    services: Services, conversation: Conversation, *, actor: Actor | None = None
) -> ErasureReport:
    """Erase one conversation as :func:`erase_contact` erases each of the contact's; what went.

    For the end users a contact's address cannot name (every anonymous REST user is
    ``rest-user``). Zeros when it was gone already (erased by a concurrent call). With
    ``actor``, the ``conversation.erased`` audit row goes in the transaction that erases it.
    """
    report = ErasureReport()

    async def audited(counts: dict[str, int]) -> None:
        if actor is not None:
            details = {"channel": conversation.channel, "bot_id": conversation.bot_id, **counts}
            target = ("conversation", conversation.id)
            await record(
                services, actor, "conversation.erased", tenant_id=conversation.tenant_id, target=target, details=details
            )

    if await _erase_one(services, conversation, report, audited):
        await erase_threads(services, tenant_id=conversation.tenant_id)
    return report


async def _erase_one(
    services: Services,
    conversation: Conversation,
    report: ErasureReport,
    audited: Callable[[dict[str, int]], Awaitable[None]] | None = None,
) -> bool:
    """Erase the conversation's rows under its lock and add what went to ``report``; ``False``: it was gone.

    ``audited(counts)`` runs in the transaction that erases the rows (it writes the audit row).
    """
    saver = services.graphs.checkpointer
    tenant_id = conversation.tenant_id
    thread = thread_id(tenant_id, conversation.bot_id, conversation.id)
    async with services.runner.locks.hold(conversation.id):
        had_checkpoints = saver is not None and await saver.aget_tuple(thread_of(thread)) is not None
        # The rows go, the conversation's thread and its forks' threads are recorded in the same transaction,
        # with the audit row.
        async with services.store.db.transaction():
            counts = await services.store.contacts.erase(tenant_id, conversation.id)
            if counts is not None and audited is not None:
                await audited(counts)
    if counts is None:
        return False  # erased by a concurrent call
    report.conversations += 1
    report.checkpoint_threads += int(had_checkpoints)
    for key, value in counts.items():
        report.counts[key] += value
    return True


async def erase_threads(
    services: Services, *, tenant_id: str | None = None, now: datetime | None = None, limit: int | None = None
) -> int:
    """Delete the checkpoint threads ``checkpoint_erasures`` lists; how many deletions were made.

    With ``tenant_id`` (a request's own pass): that tenant's threads not yet deleted.
    Without (the hourly pass): every tenant's, and those deleted once longer than
    :func:`settle_seconds` ago a second time, after which they are forgotten. At most
    ``limit`` threads (``None``: all).
    """
    repo = services.store.checkpoint_erasures
    saver = services.graphs.checkpointer
    settled = None if tenant_id is not None else (now or utcnow()) - timedelta(seconds=settle_seconds(services))
    done = 0
    while limit is None or done < limit:
        batch = THREAD_BATCH if limit is None else min(THREAD_BATCH, limit - done)
        rows = await repo.due(batch, tenant_id=tenant_id, settled_before=settled)
        if not rows:
            break
        threads = list(dict.fromkeys(r.thread_id or thread_id(r.tenant_id, r.bot_id, r.conversation_id) for r in rows))
        if saver is not None:
            await saver.aprune(threads, strategy="delete")
            # Redis's saver deletes at most 10,000 checkpoints of a thread per call: go on until none is left.
            for thread in threads:
                for _ in range(MAX_ROUNDS):
                    if await saver.aget_tuple(thread_of(thread)) is None:
                        break
                    await saver.aprune([thread], strategy="delete")
        await repo.erased([r.id for r in rows if r.erased_at is None])
        await repo.forget([r.id for r in rows if r.erased_at is not None])
        done += len(rows)
    return done


__all__ = [
    "AUDIT_KINDS",
    "Contact",
    "ErasureReport",
    "contact_conversations",
    "erase_contact",
    "erase_conversation",
    "erase_threads",
    "export_contact",
    "record_action",
    "settle_seconds",
]
