"""Conversation retention: close idle conversations, archive closed ones, prune idle ones' checkpoints.

One pass, per bot, by two bot settings:

- ``close_after_days``: an *open* conversation with no message for longer than this
  is closed (escalated ones wait for their person and stay as they are). The end
  user's next message on the same channel starts a new conversation.
- every closed conversation is archived: its checkpoints go, its transcript stays
  in the messages table.
- ``retention_days``: every conversation idle longer than this keeps only its newest
  checkpoint (so it can continue; the debugger's history of it is gone).

An archived or pruned conversation's debug forks go too, rows and threads: a fork's
thread is a copy of the conversation's state, and outliving it would keep what
retention removed. The transaction that marks conversations archived or pruned
(:meth:`~botloom.core.storage.repositories.contacts.CheckpointErasureRepository.retire`)
deletes their forks' rows and records the forks' threads (archiving: the
conversations' own threads too) in ``checkpoint_erasures``, as an erasure does; the
threads are deleted at once and once more by a later pass, so a fork run still
writing when its conversation was archived or pruned (it holds no conversation lock)
is caught by the second deletion.

Each pass also deletes the checkpoint threads that deleted conversations left
(a contact's erasure, a bot's or a tenant's deletion:
:func:`~botloom.runtime.erasure.erase_threads`), a second time once every run that
could still have written to them has ended.

``botloom prune`` runs a pass at once. The job workers run one every hour as the
``retention`` cron job of the deliveries queue (:data:`RETENTION_CRON`): every
worker process schedules it under the same job key, so each hour's pass runs once
per deployment, in whichever process takes it.

Each pass also deletes audit log rows older than ``BOTLOOM_AUDIT_RETENTION_DAYS``
(:func:`botloom.runtime.audit.prune`, docs/audit.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from botloom.core.messages import utcnow
from botloom.runtime import audit
from botloom.runtime.erasure import erase_threads
from botloom.runtime.queue import JobFunction
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services

logger = logging.getLogger(__name__)

RETENTION_CRON = "17 * * * *"
"""When the hourly pass runs (minute 17, off the hour other jobs crowd)."""


@dataclass
class PruneReport:
    """What one pass did."""

    pruned: int = 0
    """Conversations cut down to their newest checkpoint."""
    archived: int = 0
    """Closed conversations whose checkpoints were removed."""
    closed: int = 0
    """Open conversations closed for being idle longer than their bot's ``close_after_days``."""
    forks: int = 0
    """Debug forks of archived or pruned conversations deleted with their threads."""
    threads: int = 0
    """Deletions of threads ``checkpoint_erasures`` listed at the pass's start (deleted conversations', and the
    second deletion of earlier passes' archived conversations' and forks' threads)."""
    audit: int = 0
    """Audit log rows deleted for being older than ``BOTLOOM_AUDIT_RETENTION_DAYS``."""


async def prune(
    services: Services, *, now: datetime | None = None, progress: Callable[[str], None] | None = None
) -> PruneReport:
    """One pass over every bot of the deployment (see the module docstring)."""
    report = PruneReport()
    saver = services.graphs.checkpointer
    moment = now or utcnow()
    report.threads = await erase_threads(services, now=moment)
    report.audit = await audit.prune(services)
    conversations = services.store.conversations
    for bot in await services.store.bots.all_tenants_bots():
        close_after = bot.settings.close_after_days
        closing = (
            await conversations.close_idle(bot.tenant_id, bot.id, moment - timedelta(days=close_after))
            if close_after is not None
            else []
        )
        report.closed += len(closing)
        if saver is None:
            continue
        erasures = services.store.checkpoint_erasures
        closed = await conversations.closed_unarchived(bot.tenant_id, bot.id)
        if closed:
            # Their threads and their forks' are recorded as the conversations are marked, then deleted at once.
            retired = await erasures.retire(bot.tenant_id, closed, "archived")
            report.forks += retired["forks"]
            report.archived += retired["conversations"]
            await erase_threads(services, tenant_id=bot.tenant_id)
        idle: list[str] = []
        days = bot.settings.retention_days
        if days is not None:
            idle = await conversations.idle_unpruned(bot.tenant_id, bot.id, moment - timedelta(days=days))
        if idle:
            # Cut down first: a pass cut short before the mark finds the conversations again.
            await saver.aprune([thread_id(bot.tenant_id, bot.id, c) for c in idle], strategy="keep_latest")
            retired = await erasures.retire(bot.tenant_id, idle, "pruned")
            report.forks += retired["forks"]
            report.pruned += retired["conversations"]
            await erase_threads(services, tenant_id=bot.tenant_id)
        if progress is not None and (idle or closed or closing):
            progress(f"{bot.id}: closed {len(closing)}, archived {len(closed)}, pruned {len(idle)}")
    return report


def retention_jobs(services: Services) -> dict[str, JobFunction]:
    """The job function of the hourly pass (``retention``, a cron job of the deliveries queue)."""

    async def retention() -> dict[str, int]:
        report = await prune(services)
        if report.closed or report.archived or report.pruned or report.threads:
            logger.info(
                "retention: closed %d, archived %d, pruned %d, erased threads %d",
                report.closed,
                report.archived,
                report.pruned,
                report.threads,
            )
        return {
            "closed": report.closed,
            "archived": report.archived,
            "pruned": report.pruned,
            "threads": report.threads,
        }

    return {"retention": retention}
