"""Job workers: in the server process (``botloom serve``, the embedded default) or alone (``botloom worker``).

Either way a process runs one worker per queue (turns, deliveries) with the
job functions of :class:`~botloom.runtime.delivery.Deliveries`; any number of
processes may run side by side. The cron jobs (recovery sweep, channel polls,
the hourly retention pass) are scheduled by every worker under one job key each,
so each tick runs once per deployment. A stopping worker lets running jobs finish for
a few seconds, then cancels them: they run again, elsewhere or after a restart.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from botloom.core.settings import Settings
from botloom.runtime.delivery import RECOVER_CRON
from botloom.runtime.desk import SWEEP_CRON as DESK_CRON
from botloom.runtime.events import RECOVER_CRON as WEBHOOKS_RECOVER_CRON
from botloom.runtime.polling import POLL_CRON
from botloom.runtime.queue import JobFunction, Kind, QueueOptions
from botloom.runtime.retention import RETENTION_CRON, retention_jobs
from botloom.runtime.services import Services, open_services


@asynccontextmanager
async def workers(services: Services, *, embedded: bool = True) -> AsyncIterator[list[Any]]:
    """Run this process's workers while the block runs (``embedded``: the caller owns the signal handlers)."""
    jobs: dict[Kind, dict[str, JobFunction]] = {"turns": services.inbound.jobs()}
    jobs["deliveries"] = services.deliveries.jobs()
    jobs["deliveries"] = {**jobs["deliveries"], **services.polling.jobs(), **retention_jobs(services)}
    jobs["deliveries"] |= services.events.jobs()  # webhooks (runtime/events.py)
    cron = {"recover": RECOVER_CRON, "poll_channels": POLL_CRON, "retention": RETENTION_CRON}
    cron["webhooks_recover"] = WEBHOOKS_RECOVER_CRON
    jobs["deliveries"] |= services.desk.jobs()  # handovers' timeouts and SLA alerts (runtime/desk.py)
    cron["desk_sweep"] = DESK_CRON
    async with services.queue.running(jobs, cron=cron, embedded=embedded) as running, services.inbound.ingesting():
        yield running  # the webhook inbox ingested too (runtime/inbound.py, #16 goal 3)


async def run_worker(
    settings: Settings,
    *,
    options: QueueOptions | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Services], None] | None = None,
    **open_kwargs: Any,
) -> None:
    """Run workers until SIGINT or SIGTERM (or ``stop`` is set), then stop them gracefully.

    ``options`` set concurrency, heartbeats and sweeps; ``open_kwargs`` go to
    :func:`~botloom.runtime.services.open_services`.
    """
    stop = stop or asyncio.Event()
    async with open_services(settings, **open_kwargs) as services:
        if options is not None:
            services.queue.options = options
        loop = asyncio.get_running_loop()
        handled = [s for s in (signal.SIGINT, signal.SIGTERM) if sys.platform != "win32"]
        for signum in handled:
            loop.add_signal_handler(signum, stop.set)
        try:
            async with workers(services):
                if on_ready is not None:
                    on_ready(services)
                await stop.wait()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
