"""The job queue: inbound turns and outbound deliveries run as SAQ jobs, on PostgreSQL or on Redis.

Jobs live in botloom's PostgreSQL (tables ``botloom_jobs``, ``botloom_job_stats``)
unless ``BOTLOOM_REDIS_URL`` is set, then in Redis. Two queues keep slow turns
from holding up deliveries: ``botloom-turns`` and ``botloom-deliveries``.

A job names what to do, never the data: its arguments are ids, and the job reads
the stored messages, so running a job twice does nothing twice (the runner skips
answered messages; delivery skips sent parts). A job's worker sends a heartbeat
while it runs; when a worker dies, another worker's sweep finds the job without
a heartbeat and runs it again.

This module knows SAQ, not botloom's domain: :class:`~botloom.runtime.delivery.Deliveries`
provides the job functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from botloom.core.settings import Settings

logger = logging.getLogger(__name__)


class _QuietStops(logging.Filter):
    """Drops SAQ's warning that idle workers "did not finish" when stopped: they were waiting for jobs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not finish within the shutdown grace period" not in record.getMessage()


_saq_log = logging.getLogger("saq")
_saq_log.setLevel(logging.WARNING)  # SAQ logs every enqueue and job at INFO
_saq_log.addFilter(_QuietStops())

Kind = Literal["turns", "deliveries"]
KINDS: tuple[Kind, ...] = ("turns", "deliveries")
JOBS_TABLE = "botloom_jobs"
LOCK_KEYSPACE = 0x626C  # SAQ's advisory locks (sweeping, its schema) use two-int keys in this space

JobFunction = Callable[..., Awaitable[Any]]
"""``async def job(**kwargs)``: the job's keyword arguments (ids), no SAQ context."""


@dataclass(frozen=True)
class QueueOptions:
    """How jobs run: concurrency per queue, heartbeat and sweeping, retries of a failing job."""

    turn_concurrency: int = 4
    """Turns one worker process runs at once (each holds a database connection for its lock)."""
    delivery_concurrency: int = 4
    heartbeat: int = 15
    """Seconds a running job may go without a heartbeat before a sweep runs it again elsewhere."""
    sweep_every: int = 5
    """Seconds between a worker's sweeps for jobs whose worker died."""
    job_timeout: int = 900
    retries: int = 5
    """Runs of a job that raises (a database outage), with exponential back-off; delivery failures
    of a channel are retried by the delivery itself, not by this."""
    pool_size: int = 6
    """PostgreSQL connections of the queue itself (separate from botloom's pool)."""
    pool_wait: float = 5.0
    """Seconds an enqueue (a webhook's) or a worker waits for one of those connections; their
    connections are checked when borrowed, so none that died with a restarted server is used."""
    grace: float = 5.0
    """Seconds a stopping worker lets running jobs finish before cancelling them (they run again)."""


class JobQueue:
    """Enqueues jobs on the ``turns`` and ``deliveries`` queues and builds the workers that run them."""

    def __init__(self, queues: Mapping[Kind, Any], options: QueueOptions, pool: Any | None = None) -> None:
        self.queues = dict(queues)
        self.options = options
        self.backend = "postgres" if pool is not None else "redis"
        self._pool = pool
        self._connected = False
        self._connecting = asyncio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, database_url: str, options: QueueOptions | None = None) -> JobQueue:
        """The queues on Redis when ``BOTLOOM_REDIS_URL`` is set, else on PostgreSQL; connected on first use."""
        options = options or QueueOptions()
        if settings.redis_url:
            from saq.queue.redis import RedisQueue

            return cls(
                {kind: RedisQueue.from_url(settings.redis_url, name=f"botloom-{kind}") for kind in KINDS}, options
            )
        from botloom.core.storage.database import checked_pool

        pool: Any = checked_pool(
            database_url,
            name="botloom-jobs",
            max_size=options.pool_size,
            timeout=options.pool_wait,
            kwargs={"autocommit": True},
        )
        queues = {
            kind: _postgres_queue_class()(
                pool=pool,
                name=f"botloom-{kind}",
                jobs_table=JOBS_TABLE,
                stats_table="botloom_job_stats",
                versions_table="botloom_job_versions",
                saq_lock_keyspace=LOCK_KEYSPACE,
                manage_pool_lifecycle=False,
                dump=msgspec.json.encode,
                load=msgspec.json.decode,
            )
            for kind in KINDS
        }
        return cls(queues, options, pool)

    async def connect(self) -> None:
        """Open the connections (and create SAQ's tables); idempotent, done on first use."""
        async with self._connecting:
            if self._connected:
                return
            if self._pool is not None:
                await self._pool.open(wait=True, timeout=30)
            for queue in self.queues.values():  # one at a time: SAQ creates its tables on the first
                await queue.connect()
            self._connected = True

    async def close(self) -> None:
        """Close the connections."""
        if not self._connected:
            if self._pool is not None:
                await self._pool.close()
            return
        self._connected = False
        for queue in self.queues.values():
            with contextlib.suppress(Exception):
                await queue.disconnect()
        if self._pool is not None:
            await self._pool.close()

    async def enqueue(self, kind: Kind, function: str, *, key: str, delay: float = 0.0, **kwargs: str) -> bool:
        """Queue ``function(**kwargs)`` on ``kind``, ``delay`` seconds from now.

        ``key`` makes the job unique: while a job with this key waits or runs,
        enqueueing it again does nothing (returns ``False``).
        """
        await self.connect()
        options = self.options
        scheduled = math.ceil(time.time() + delay) if delay > 0 else 0
        job = await self.queues[kind].enqueue(
            function,
            key=f"{kind}:{key}",
            scheduled=scheduled,
            heartbeat=options.heartbeat,
            timeout=options.job_timeout,
            retries=options.retries,
            retry_delay=1.0,
            retry_backoff=60,
            **kwargs,
        )
        return job is not None

    async def pending(self, kind: Kind) -> int:
        """How many jobs of ``kind`` wait or run (for tests and ``/metrics``)."""
        await self.connect()
        return int(await self.queues[kind].count("incomplete"))

    def worker(
        self,
        kind: Kind,
        functions: Mapping[str, JobFunction],
        *,
        concurrency: int,
        cron: Mapping[str, str] | None = None,
        embedded: bool = False,
    ) -> Any:
        """A SAQ worker running ``functions`` of the ``kind`` queue, each with a heartbeat.

        ``cron`` maps function names to cron schedules (every worker enqueues the
        same job key, so each runs once per tick). An ``embedded`` worker leaves
        the process's signal handlers alone (the web server owns them).
        """
        from saq import CronJob

        beat = self.options.heartbeat
        wrapped = {name: _with_heartbeat(name, function, beat) for name, function in functions.items()}
        crons = [
            CronJob(wrapped[name], cron=schedule, timeout=self.options.job_timeout)
            for name, schedule in (cron or {}).items()
        ]
        return _worker_class(embedded)(
            self.queues[kind],
            functions=[(name, f) for name, f in wrapped.items() if name not in (cron or {})],
            concurrency=concurrency,
            cron_jobs=crons,
            timers={"sweep": self.options.sweep_every, "schedule": 1, "abort": 1, "worker_info": 10},
        )

    @asynccontextmanager
    async def running(
        self,
        functions: Mapping[Kind, Mapping[str, JobFunction]],
        *,
        cron: Mapping[str, str] | None = None,
        embedded: bool = False,
    ) -> AsyncIterator[list[Any]]:
        """Run a worker for each queue while the block runs; stop them (letting jobs finish) after it."""
        await self.connect()
        concurrency = {"turns": self.options.turn_concurrency, "deliveries": self.options.delivery_concurrency}
        workers = [
            self.worker(
                kind,
                functions[kind],
                concurrency=concurrency[kind],
                cron=cron if kind == "deliveries" else None,
                embedded=embedded,
            )
            for kind in KINDS
        ]
        tasks = [
            asyncio.create_task(w.start(), name=f"botloom-worker-{kind}")
            for w, kind in zip(workers, KINDS, strict=True)
        ]
        try:
            yield workers
        finally:
            await self._let_jobs_finish(workers)
            await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _let_jobs_finish(self, workers: list[Any]) -> None:
        """Wait up to ``grace`` seconds for running jobs to finish (what still runs then is cancelled, to run again)."""
        running = [context["task"] for worker in workers for context in worker.job_task_contexts.values()]
        if running and self.options.grace > 0:
            await asyncio.wait(running, timeout=self.options.grace)


def _with_heartbeat(name: str, function: JobFunction, every: int) -> Callable[..., Awaitable[Any]]:
    """A SAQ job function running ``function`` while it touches the job every third of ``every`` seconds."""

    async def run(ctx: dict[str, Any], **kwargs: Any) -> Any:
        job = ctx.get("job")

        async def beat() -> None:
            while job is not None:
                await asyncio.sleep(max(every / 3, 0.2))
                try:
                    await job.update()
                except Exception:  # a missed beat is retried; the job goes on
                    logger.warning("heartbeat of job %s failed", getattr(job, "key", "?"), exc_info=True)

        beating = asyncio.create_task(beat())
        try:
            return await function(**kwargs)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    run.__qualname__ = run.__name__ = name
    return run


@functools.cache
def _postgres_queue_class() -> type:
    """SAQ's PostgreSQL queue, enqueueing in one statement: the insert and its ``NOTIFY`` together.

    SAQ composes two statements on each enqueue; webhooks enqueue on their hot
    path, so this sends SAQ's own insert (same table, same conflict rule) with
    ``pg_notify`` on the channel SAQ's workers listen on, composed once.
    """
    from psycopg.sql import SQL
    from saq.queue.postgres import CHANNEL, ENQUEUE, PostgresQueue
    from saq.utils import now_seconds

    class OneStatementQueue(PostgresQueue):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._enqueue_sql = SQL(
                "WITH enqueued AS (INSERT INTO {jobs} (key, job, queue, status, priority, group_key, scheduled) "
                "VALUES (%(key)s, %(job)s, %(queue)s, %(status)s, %(priority)s, %(group_key)s, %(scheduled)s) "
                "ON CONFLICT (key) DO UPDATE SET job = %(job)s, queue = %(queue)s, status = %(status)s, "
                "priority = %(priority)s, group_key = %(group_key)s, scheduled = %(scheduled)s, expire_at = null "
                "WHERE {jobs}.status IN ('aborted', 'complete', 'failed') AND %(scheduled)s > {jobs}.scheduled "
                "RETURNING 1) SELECT pg_notify(%(channel)s, %(event)s) FROM enqueued"
            ).format(jobs=self.jobs_table)

        async def _enqueue(self, job: Any) -> Any:
            params = {
                "key": job.key,
                "job": self.serialize(job),
                "queue": self.name,
                "status": job.status,
                "priority": job.priority,
                "group_key": job.group_key,
                "scheduled": job.scheduled or int(now_seconds()),
                "channel": CHANNEL.format(self.name),
                "event": ENQUEUE,
            }
            async with self.pool.connection() as conn:
                cursor = await conn.execute(self._enqueue_sql, params)
                return job if await cursor.fetchone() else None

    return OneStatementQueue


@functools.cache
def _worker_class(embedded: bool) -> type:
    """SAQ's worker; the ``embedded`` one leaves SIGINT and SIGTERM to the web server it runs in."""
    from saq import Worker

    if not embedded:
        return Worker

    class EmbeddedWorker(Worker[Any]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.SIGNALS = []

    return EmbeddedWorker
