"""The queue's sweep (#12 item 5), in process: every stale job at once, a live one left alone, cron jobs too."""

from __future__ import annotations

from typing import Any

from saq.job import Status
from saq.utils import now, now_seconds

from botloom.core.settings import Settings
from botloom.runtime.queue import JobQueue, QueueOptions


async def nothing(**_: Any) -> None:
    """A job function that does nothing."""


async def test_a_sweep_queues_again_every_job_of_a_dead_worker_at_once(settings: Settings, database_url: str) -> None:
    queue = JobQueue.for_settings(settings, database_url, QueueOptions(heartbeat=2, abort_wait=0.5))
    try:
        await queue.connect()
        turns = queue.queues["turns"]
        turns.abort_wait = 0.5
        for n in range(9):
            assert await queue.enqueue("turns", "nothing", key=f"k{n}", message_id=str(n))
        taken = [await turns.dequeue() for _ in range(9)]
        for job in taken:  # a worker took them all; it died 10 s ago but for the last, which still beats
            job.status, job.attempts = Status.ACTIVE, 1
            job.touched = now() - (0 if job.key == "turns:k8" else 10_000)
            await turns._update(job, status=Status.ACTIVE)
        swept = await turns.sweep(lock=1)
        assert sorted(swept) == [f"turns:k{n}" for n in range(8)]
        jobs = {job.key: job for job in await turns.jobs([f"turns:k{n}" for n in range(9)])}
        assert {key: job.status for key, job in jobs.items()} == {
            **{f"turns:k{n}": Status.QUEUED for n in range(8)},
            "turns:k8": Status.ACTIVE,
        }
        assert all(jobs[f"turns:k{n}"].scheduled <= now_seconds() for n in range(8)), "no back-off"
        assert await turns.sweep(lock=1) == []
    finally:
        await queue.close()


def test_cron_jobs_have_the_heartbeat_so_that_a_dead_workers_cron_job_is_swept(
    settings: Settings, database_url: str
) -> None:
    queue = JobQueue.for_settings(settings, database_url)
    worker = queue.worker("deliveries", {"recover": nothing}, concurrency=1, cron={"recover": "* * * * *"})
    assert [cron.heartbeat for cron in worker.cron_jobs] == [queue.options.heartbeat]
