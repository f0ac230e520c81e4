"""A worker's stop ends even when one of its tasks lost the cancellation meant to end it.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives just as the
awaited value does; SAQ's PostgreSQL listener loop then goes on, and SAQ's own stop
waited for it for ever (a test run hung five minutes in the channel contract). The task
injected here behaves as that loop did: it swallows the first cancellation and waits on.
"""

from __future__ import annotations

import asyncio

from botloom.runtime import queue as job_queue
from botloom.runtime.services import Services
from botloom.testing.channel_contract import wait_until


async def test_a_worker_whose_task_swallowed_its_cancellation_still_stops(services: Services) -> None:
    await services.queue.connect()
    worker = services.queue.worker("deliveries", {}, concurrency=1)
    started = asyncio.create_task(worker.start())

    async def running() -> bool:
        return bool(worker.tasks)

    await wait_until(running, what="the worker's tasks")

    swallowed = asyncio.Event()

    async def loses_its_first_cancellation() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # as wait_for's race loses it
        await asyncio.Event().wait()  # and goes on, as SAQ's listener loop did, until cancelled again

    stubborn = asyncio.create_task(loses_its_first_cancellation())
    worker.tasks.add(stubborn)
    await asyncio.wait_for(job_queue.stop_worker(worker), timeout=30)
    assert swallowed.is_set() and stubborn.cancelled(), "cancelled again after it swallowed the first"
    await asyncio.wait_for(started, timeout=30)
