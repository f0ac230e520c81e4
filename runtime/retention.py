"""Checkpoint retention: prune idle conversations to their newest checkpoint, archive closed ones.

A bot with ``retention_days`` keeps, for every conversation idle longer than that,
only the newest checkpoint (so the conversation can continue; the debugger's
history of it is gone). A closed conversation is archived: its checkpoints go, its
transcript stays in the messages table. ``botloom prune`` runs this, and
``botloom serve`` runs it every hour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from botloom.core.messages import utcnow
from botloom.runtime.runner import thread_id
from botloom.runtime.services import Services

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600


@dataclass
class PruneReport:
    """What one pruning pass did."""

    pruned: int = 0
    """Conversations cut down to their newest checkpoint."""
    archived: int = 0
    """Closed conversations whose checkpoints were removed."""


async def prune(
    services: Services, *, now: datetime | None = None, progress: Callable[[str], None] | None = None
) -> PruneReport:
    """One pass over every bot of the deployment (see the module docstring)."""
    report = PruneReport()
    saver = services.graphs.checkpointer
    if saver is None:
        return report
    moment = now or utcnow()
    for bot in await services.store.bots.all_tenants_bots():
        closed = await services.store.conversations.closed_unarchived(bot.tenant_id, bot.id)
        if closed:
            await saver.aprune([thread_id(bot.tenant_id, bot.id, c) for c in closed], strategy="delete")
            await services.store.conversations.mark(bot.tenant_id, closed, "archived")
            report.archived += len(closed)
        days = bot.settings.retention_days
        if days is None:
            continue
        idle = await services.store.conversations.idle_unpruned(bot.tenant_id, bot.id, moment - timedelta(days=days))
        if idle:
            await saver.aprune([thread_id(bot.tenant_id, bot.id, c) for c in idle], strategy="keep_latest")
            await services.store.conversations.mark(bot.tenant_id, idle, "pruned")
            report.pruned += len(idle)
        if progress is not None and (idle or closed):
            progress(f"{bot.id}: pruned {len(idle)}, archived {len(closed)}")
    return report
