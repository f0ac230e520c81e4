"""The job queue: inbound turns and outbound deliveries run as SAQ jobs, on PostgreSQL or on Redis.

Jobs live in botloom's PostgreSQL (tables ``botloom_jobs``, ``botloom_job_stats``)
unless ``BOTLOOM_REDIS_URL`` is set, then in Redis. Two queues keep slow turns
from holding up deliveries: ``botloom-turns`` and ``botloom-deliveries``.

A job names what to do, never the data: its arguments are ids, and the job reads
the stored messages, so running a job twice does nothing twice (the runner skips
answered messages; delivery skips sent parts). A job's worker sends a heartbeat
while it runs; when a worker dies, another worker's sweep finds its jobs without
a heartbeat and runs them again: all of them at once (SAQ's own sweep waits for
each stale job in turn, ``abort`` seconds for a worker that never answers), and
without the back-off of a job that failed (its worker died, not the job).

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
QUEUE_SETUP_LOCK = 0x626F746C6F6F6D02
"""The advisory lock that serialises SAQ's table set-up across processes (beside its own, which does not wait)."""
LOCK_KEYSPACE = 0x626C  # SAQ's advisory locks (sweeping, its schema) use two-int keys in this space

JobFunction = Callable[..., Awaitable[Any]]
"""``async def job(**kwargs)``: the job's keyword arguments (ids), no SAQ context."""


@dataclass(frozen=True)
class QueueOptions:
    """How jobs run: concurrency per queue, heartbeat and sweeping, retries of a failing job."""

    turn_concurrency: int = 4
    """Turns one worker process runs at once (each holds a database connection for its lock)."""
    delivery_concurrency: int = 4
    heartbeat: int = 6
    """Seconds a running job may go without a heartbeat before a sweep runs it again elsewhere.

    Its worker touches it every third of this (one ``UPDATE`` per running job on
    PostgreSQL), so a worker that died is noticed within this many seconds."""
    sweep_every: int = 1
    """Seconds between sweeps for jobs whose worker died (one worker per queue sweeps: a
    ``SELECT`` of the running jobs on PostgreSQL; expired jobs are deleted every 30 s)."""
    abort_wait: float = 2.0
    """Seconds a sweep waits, for all the stale jobs it found at once, for their workers to stop
    them (a stalled worker that is still alive does, within a second; a dead one never answers)
    before it queues them again, at once, without back-off."""
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
            redis_queue: Any = _redis_queue_class()
            return cls(
                {kind: redis_queue.from_url(settings.redis_url, name=f"botloom-{kind}") for kind in KINDS}, options
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
            if self._pool is None:
                for queue in self.queues.values():
                    await queue.connect()
            else:
                from botloom.core.storage.database import one_process_at_a_time

                await self._pool.open(wait=True, timeout=30)
                # SAQ creates its tables on the first connect, unless another process holds its schema lock,
                # when it goes on at once: on a new database that process may not have committed them yet.
                async with one_process_at_a_time(self._pool.conninfo, QUEUE_SETUP_LOCK, "the job queue's tables"):
                    for queue in self.queues.values():  # one at a time within the process too
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

    async def job_row(
        self, kind: Kind, function: str, *, key: str, delay: float = 0.0, **kwargs: str
    ) -> dict[str, Any] | None:
        """The row :meth:`enqueue` would insert, for a statement that stores something else too; ``None`` on Redis.

        Keys: ``table`` (quoted, as SQL), ``key``, ``job`` (SAQ's serialized job, bytes), ``queue``,
        ``status``, ``priority``, ``scheduled``, and ``channel``/``event`` of the
        ``pg_notify`` that wakes the workers. The caller inserts it in the same
        transaction as what the job is about (a webhook's message), so both commit
        or neither does.
        """
        if self.backend != "postgres":
            return None
        from saq.job import Job, Status
        from saq.queue.postgres import CHANNEL, ENQUEUE
        from saq.utils import now

        if not self._connected:
            await self.connect()
        options, queue = self.options, self.queues[kind]
        job = Job(
            function=function,
            kwargs=dict(kwargs),
            queue=queue,
            key=f"{kind}:{key}",
            scheduled=math.ceil(time.time() + delay) if delay > 0 else 0,
            heartbeat=options.heartbeat,
            timeout=options.job_timeout,
            retries=options.retries,
            retry_delay=1.0,
            retry_backoff=60,
        )
        job.queued, job.status = now(), Status.QUEUED
        return {
            "table": queue.jobs_table.as_string(),  # quoted
            "key": job.key,
            "job": queue.serialize(job),
            "queue": queue.name,
            "status": Status.QUEUED.value,
            "priority": job.priority,
            "scheduled": job.scheduled or int(time.time()),
            "channel": CHANNEL.format(queue.name),
            "event": ENQUEUE,
        }

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
        self.queues[kind].abort_wait = self.options.abort_wait  # how long its sweeps wait for stale jobs
        wrapped = {name: _with_heartbeat(name, function, beat) for name, function in functions.items()}
        crons = [  # with a heartbeat: a cron job of a dead worker is swept too (its key blocks the next ticks)
            CronJob(wrapped[name], cron=schedule, timeout=self.options.job_timeout, heartbeat=beat)
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
            await asyncio.gather(*(stop_worker(w) for w in workers), return_exceptions=True)
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _let_jobs_finish(self, workers: list[Any]) -> None:
        """Wait up to ``grace`` seconds for running jobs to finish (what still runs then is cancelled, to run again)."""
        running = [context["task"] for worker in workers for context in worker.job_task_contexts.values()]
        if running and self.options.grace > 0:
            await asyncio.wait(running, timeout=self.options.grace)


def _with_heartbeat(name: str, function: JobFunction, every: int) -> Callable[..., Awaitable[Any]]:
    """A SAQ job function running ``function`` while it touches the job every third of its heartbeat.

    The heartbeat is the job's own (what its enqueuer set, which the sweep checks),
    else ``every`` seconds.
    """

    async def run(ctx: dict[str, Any], **kwargs: Any) -> Any:
        job = ctx.get("job")
        interval = max((getattr(job, "heartbeat", 0) or every) / 3, 0.2)

        async def beat() -> None:
            while job is not None:
                await asyncio.sleep(interval)
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


CLEANUP_EVERY = 30.0
"""Seconds between deletions of expired jobs and worker stats by a PostgreSQL queue's sweeps."""
SETTLE_PAUSE = 0.5
"""Seconds a Redis sweep looks again at a job listed as running but not marked so (a worker between
taking it and marking it takes a few milliseconds; a worker that died there never marks it)."""


async def _rerun_stale(queue: Any, stale: list[Any], wait: float) -> None:
    """Queue again the ``stale`` jobs (marked aborting already), after waiting for all at once.

    For at most ``wait`` seconds, a worker that is alive after all may stop its
    copy (SAQ's worker looks for aborted jobs every second); a job one of them
    completed or failed meanwhile is left alone. The rest run again at once, or
    are aborted for good when they used up their retries.
    """
    from saq.job import TERMINAL_STATUSES, Status

    if not stale:
        return
    keys = [job.key for job in stale]
    if wait > 0:
        finished: set[str] = set()

        def all_finished(job_id: str, status: Any) -> bool:
            if status in TERMINAL_STATUSES:
                finished.add(job_id)
            return len(finished) >= len(keys)

        with contextlib.suppress(asyncio.TimeoutError):
            await queue.listen(keys, all_finished, timeout=wait)
    for job in await queue.jobs(keys):
        if job is None or job.status not in (Status.ABORTING, Status.ABORTED):
            continue  # finished by a live worker, or queued again by another sweep
        if job.retryable:
            logger.warning("job %s: no heartbeat for %d s (its worker died?); it runs again", job.key, job.heartbeat)
            await queue.retry(job, error=queue.swept_error_message)
        else:
            logger.error("job %s: no heartbeat for %d s, and no retries left; aborted", job.key, job.heartbeat)
            await queue.finish(job, Status.ABORTED, error=queue.swept_error_message)


@functools.cache
def _postgres_queue_class() -> type:
    """SAQ's PostgreSQL queue, enqueueing in one statement: the insert and its ``NOTIFY`` together.

    SAQ composes two statements on each enqueue; webhooks enqueue on their hot
    path, so this sends SAQ's own insert (same table, same conflict rule) with
    ``pg_notify`` on the channel SAQ's workers listen on, composed once.
    """
    from psycopg.sql import SQL
    from saq.job import Status
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

        # -- sweeping: every stale job at once (see _sweep_postgres) ----------------

        abort_wait = 2.0
        _cleaned_at = -math.inf

        async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
            return await _sweep_postgres(self)

        async def _retry(self, job: Any, error: str | None) -> None:
            if error != self.swept_error_message:
                await super()._retry(job, error)
                return
            # Its worker died, the job did not fail: no back-off.
            await self.update(job, status=Status.QUEUED, scheduled=int(job.scheduled or now_seconds()), expire_at=None)

    return OneStatementQueue


async def _sweep_postgres(queue: Any) -> list[str]:
    """A PostgreSQL queue's sweep: abort every job whose worker stopped beating, in one statement; rerun them.

    Only the worker holding the queue's sweep lock sweeps (SAQ's advisory lock,
    freed when its connection dies). Expired jobs and stats are deleted every
    :data:`CLEANUP_EVERY` seconds, not on every sweep.
    """
    from psycopg.sql import SQL
    from saq.queue.postgres import ENQUEUE

    if not await _take_sweep_lock(queue):
        return []
    async with queue.pool.connection() as conn:
        if time.monotonic() - queue._cleaned_at >= CLEANUP_EVERY:
            await _delete_expired(queue, conn)
            queue._cleaned_at = time.monotonic()
        cursor = await conn.execute(
            SQL(
                "SELECT key, job, status FROM {jobs} WHERE queue = %(queue)s AND status IN ('active', 'aborting')"
            ).format(jobs=queue.jobs_table),
            {"queue": queue.name},
        )
        rows = await cursor.fetchall()
    stale = [(job, blob) for _, blob, status in rows if (job := queue.deserialize(blob, status)) and job.stuck]
    if not stale:
        return []
    aborted = await _abort_unchanged(queue, stale)
    await _rerun_stale(queue, aborted, queue.abort_wait)
    if aborted:
        await queue._notify(ENQUEUE)  # idle workers wait for this: they take the jobs now
    return [job.key for job in aborted]


async def _take_sweep_lock(queue: Any) -> bool:
    """Whether this queue sweeps: it holds (or now took) SAQ's advisory sweep lock of the queue."""
    from psycopg.sql import SQL

    if not queue._has_sweep_lock:
        async with queue.pool.connection() as conn:
            cursor = await conn.execute(
                SQL("SELECT pg_try_advisory_lock(%(key1)s, hashtext(%(queue)s))"),
                {"key1": queue.saq_lock_keyspace, "queue": queue.name},
            )
            row = await cursor.fetchone()
        queue._has_sweep_lock = bool(row and row[0])
    return bool(queue._has_sweep_lock)


async def _delete_expired(queue: Any, conn: Any) -> None:
    """Delete the queue's finished jobs and the workers' stats past their expiry (as SAQ's sweep does)."""
    from psycopg.sql import SQL
    from saq.utils import now_seconds

    moment = now_seconds()
    await conn.execute(
        SQL(
            "DELETE FROM {jobs} WHERE queue = %(queue)s AND status IN ('aborted', 'complete', 'failed') "
            "AND %(now)s >= expire_at"
        ).format(jobs=queue.jobs_table),
        {"queue": queue.name, "now": moment},
    )
    await conn.execute(
        SQL("DELETE FROM {stats} WHERE %(now)s >= expire_at").format(stats=queue.stats_table), {"now": moment}
    )


async def _abort_unchanged(queue: Any, stale: list[tuple[Any, bytes]]) -> list[Any]:
    """Mark the stale jobs aborting, each only if its row is still what the sweep read; the jobs marked.

    A heartbeat that landed since (the worker is alive) or another sweep that
    took the job first changed the row: that job is left alone.
    """
    from psycopg.sql import SQL
    from saq.job import Status
    from saq.utils import now

    keys, old, new = [], [], []
    for job, blob in stale:
        job.status, job.error, job.touched = Status.ABORTING, queue.swept_error_message, now()
        keys.append(job.key)
        old.append(bytes(blob))
        new.append(queue.serialize(job))
    async with queue.pool.connection() as conn:
        cursor = await conn.execute(
            SQL(
                "UPDATE {jobs} AS j SET job = s.job, status = 'aborting' "
                "FROM unnest(%(keys)s::text[], %(old)s::bytea[], %(new)s::bytea[]) AS s(key, old, job) "
                "WHERE j.key = s.key AND j.job = s.old AND j.status IN ('active', 'aborting') RETURNING j.key"
            ).format(jobs=queue.jobs_table),
            {"keys": keys, "old": old, "new": new},
        )
        taken = {row[0] for row in await cursor.fetchall()}
    return [job for job, _ in stale if job.key in taken]


@functools.cache
def _redis_queue_class() -> type:
    """SAQ's Redis queue, sweeping every stale job at once (see :func:`_sweep_redis`)."""
    from saq.queue.redis import RedisQueue

    class SweepingRedisQueue(RedisQueue):
        abort_wait = 2.0
        take_script: Any = None

        async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
            return await _sweep_redis(self, lock)

        async def _retry(self, job: Any, error: str | None) -> None:
            if error != self.swept_error_message:
                await super()._retry(job, error)
                return
            # Its worker died, the job did not fail: no back-off, to the queue's end now.
            async with self.redis.pipeline(transaction=True) as pipe:
                steps: Any = pipe.lrem(self._active, 1, job.id)
                steps = steps.lrem(self._queued, 1, job.id).zadd(self._incomplete, {job.id: job.scheduled})
                steps = steps.rpush(self._queued, job.id).set(job.id, self.serialize(job))
                await steps.delete(job.abort_id).execute()  # not aborting any more: enqueueing its key works again
            await self.notify(job)

    return SweepingRedisQueue


_TAKE_SWEEP = (
    "if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then "
    "local found = {} "
    "for i, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do found[i] = {id, redis.call('GET', id)} end "
    "return found end "
    "return {}"
)
"""Take the sweep (SAQ's marker key, for ``lock`` seconds) and list the running jobs with their records."""


async def _sweep_redis(queue: Any, lock: int) -> list[str]:
    """A Redis queue's sweep: abort every job listed as running whose worker stopped beating; rerun them.

    One worker sweeps per ``lock`` seconds (SAQ's marker key). A job listed as
    running but not marked so is looked at again after :data:`SETTLE_PAUSE`: a live
    worker marks it within milliseconds, a dead one never.
    """
    from saq.job import Status

    if queue.take_script is None:
        queue.take_script = queue.redis.register_script(_TAKE_SWEEP)
    listed = await queue.take_script(keys=[queue._sweep, queue._active], args=[lock], client=queue.redis)
    swept: list[str] = []
    stale, unsettled = [], {}
    for job_id, blob in listed or []:
        job = queue.deserialize(blob) if blob else None
        if job is None:  # listed, but its record is gone
            swept.append(job_id.decode())
            async with queue.redis.pipeline(transaction=True) as pipe:
                await pipe.lrem(queue._active, 0, job_id).zrem(queue._incomplete, job_id).execute()
        elif job.status != Status.ACTIVE:
            unsettled[job_id] = blob
        elif job.stuck:
            stale.append(job)
    if not stale and not unsettled:
        return swept
    await queue.redis.expire(queue._sweep, max(lock, math.ceil(SETTLE_PAUSE + queue.abort_wait) + 5))
    stale += await _still_unsettled(queue, unsettled)
    for job in stale:
        await queue.abort(job, error=queue.swept_error_message)
    await _rerun_stale(queue, stale, queue.abort_wait)
    await queue.redis.set(queue._sweep, 1, ex=lock)  # the next sweep one interval from now
    return swept + [job.id for job in stale]


async def _still_unsettled(queue: Any, unsettled: dict[bytes, bytes]) -> list[Any]:
    """Of the jobs listed as running but not marked so, those still listed and unchanged after a pause."""
    if not unsettled:
        return []
    await asyncio.sleep(SETTLE_PAUSE)
    listed = set(await queue.redis.lrange(queue._active, 0, -1))
    found = []
    for job_id, blob in zip(unsettled, await queue.redis.mget(list(unsettled)), strict=True):
        if job_id in listed and blob == unsettled[job_id] and (job := queue.deserialize(blob)):
            found.append(job)
    return found


STOP_NUDGE = 1.0
"""Seconds between cancellations of a stopping worker's tasks (see :func:`stop_worker`)."""


async def stop_worker(worker: Any) -> None:
    """Stop a SAQ worker, cancelling its tasks again while the stop waits for them.

    SAQ's ``Worker.stop`` cancels its tasks once and waits for them without a limit.
    On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives just
    as the awaited value does (fixed in 3.12), and SAQ's PostgreSQL listener loop
    then never ends: a server's shutdown hung for ever (seen under load in the
    channel contract's tests). Cancelling again every :data:`STOP_NUDGE` seconds
    ends it.
    """
    worker.event.set()  # no new tasks from here on
    tasks = set(worker.tasks)
    stopping = asyncio.ensure_future(worker.stop())
    while not (await asyncio.wait({stopping}, timeout=STOP_NUDGE))[0]:
        lingering = [task for task in tasks if not task.done()]
        logger.warning(
            "a %s worker's %d task(s) still run after its stop: cancelling again", worker.queue.name, len(lingering)
        )
        for task in lingering:
            task.cancel()
    stopping.result()


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
