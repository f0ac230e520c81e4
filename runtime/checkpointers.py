"""Opening the configured LangGraph checkpointer: Postgres, Redis or memory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from botloom.core.crypto import Cipher
from botloom.core.settings import Settings
from botloom.core.storage.database import one_process_at_a_time
from botloom.runtime.saver import RedactingSaver, encrypting_serializer

logger = logging.getLogger(__name__)

CHECKPOINT_POOL_WAIT = 10.0
"""Seconds a turn waits for a connection of the checkpointer's pool (then ``PoolTimeout``, a transient error)."""

# LangGraph's stock read joins ``jsonb_each_text(channel_versions)`` to ``checkpoint_blobs``: the planner
# estimates 100 rows for the function and, on a long conversation, hash-joins an index scan of ALL the
# thread's blobs. This one looks each blob up by its primary key (``LATERAL ... LIMIT 1``): the same rows.
POSTGRES_SELECT_SQL = """
select
    thread_id,
    checkpoint,
    checkpoint_ns,
    checkpoint_id,
    parent_checkpoint_id,
    metadata,
    (
        select array_agg(array[bl.channel::bytea, bl.type::bytea, bl.blob])
        from jsonb_each_text(checkpoint -> 'channel_versions') as cv(key, value)
        cross join lateral (
            select b.channel, b.type, b.blob
            from checkpoint_blobs b
            where b.thread_id = checkpoints.thread_id
                and b.checkpoint_ns = checkpoints.checkpoint_ns
                and b.channel = cv.key
                and b.version = cv.value
            limit 1
        ) as bl
    ) as channel_values,
    (
        select
        array_agg(array[cw.task_id::text::bytea, cw.channel::bytea, cw.type::bytea, cw.blob, convert_to(cw.task_path, 'UTF8'), cw.idx::text::bytea])
        from checkpoint_writes cw
        where cw.thread_id = checkpoints.thread_id
            and cw.checkpoint_ns = checkpoints.checkpoint_ns
            and cw.checkpoint_id = checkpoints.checkpoint_id
    ) as pending_writes
from checkpoints """  # noqa: E501
"""``AsyncPostgresSaver.SELECT_SQL`` (langgraph-checkpoint-postgres 3.2) with primary-key blob lookups."""


CHECKPOINT_BATCH = "__botloom_checkpoint_batch"
"""The ``configurable`` key of a turn's :class:`CheckpointBatch` (LangGraph keeps ``__`` keys out of the metadata)."""
INLINE_DUMP_LIMIT = 20_000
"""Values smaller than this (strings' characters plus containers' items, :func:`small`) are serialised on the
event loop; larger ones in a worker thread, as LangGraph's saver does with every value."""

BLOBS_SQL = """
insert into checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
select %s, %s, b.channel, b.version, b.type, b.blob
from unnest(%s::text[], %s::text[], %s::text[], %s::bytea[]) as b(channel, version, type, blob)
on conflict (thread_id, checkpoint_ns, channel, version) do nothing"""
"""``AsyncPostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL`` for all of a checkpoint's blobs in one statement.

LangGraph's saver sends one ``INSERT`` per blob (``executemany``: in pipeline mode, each row is
its own execution and its own flush to the socket); a turn writes about ten."""

Statement = tuple[str, Any, bool]
"""One statement of a checkpoint write: its SQL, its parameters, and whether they are a sequence (``executemany``)."""


@dataclass
class CheckpointBatch:
    """A turn's checkpoint writes, held back by the saver so the runner sends them with its own statements.

    The runner passes one in the config of the turn's ``ainvoke`` (:data:`CHECKPOINT_BATCH`);
    the PostgreSQL saver of :func:`postgres_saver_class` then queues its ``aput`` and
    ``aput_writes`` statements here instead of running them, and the runner runs them in
    the transaction that stores the turn's replies (:meth:`send`): the checkpoint and the
    replies commit together or not at all. Other savers ignore it (nothing is queued).
    """

    statements: list[Statement] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.statements)

    def take(self) -> list[tuple[str, Any]]:
        """The statements as ``(sql, params)`` one by one (an ``executemany`` unrolled), emptying the batch."""
        taken = [(sql, one) for sql, params, many in self.statements for one in (params if many else [params])]
        self.statements = []
        return taken

    async def send(self, conn: Any) -> None:
        """Queue the statements on ``conn`` (in pipeline mode they go out with whatever follows)."""
        if not self.statements:
            return
        async with conn.cursor(binary=True) as cur:
            for sql, params, many in self.statements:
                if many:
                    await cur.executemany(sql, params)
                else:
                    await cur.execute(sql, params)
        self.statements = []


CHECKPOINT_READ = "__botloom_checkpoint_read"
"""The ``configurable`` key of a turn's :class:`CheckpointRead`: its checkpoint, read with the conversation's lock."""
LATEST_SQL = POSTGRES_SELECT_SQL + ("WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1")
"""The latest checkpoint of a thread, as ``AsyncPostgresSaver.aget_tuple`` reads it (``POSTGRES_SELECT_SQL``)."""


class CheckpointRead:
    """A thread's latest checkpoint row, read by the runner with the conversation's lock (one round trip).

    Queued on the lock's connection by :meth:`queue` after the lock statement, so it
    sees what the previous holder committed. The runner passes it in the config of the
    turn's ``ainvoke`` (:data:`CHECKPOINT_READ`) when nothing wrote the thread since
    (no state migration); the saver of :func:`postgres_saver_class` then answers the run's
    first ``aget_tuple`` of that thread from it instead of asking PostgreSQL again.
    """

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.row: dict[str, Any] | None = None
        self.used = False

    async def queue(self, conn: Any) -> Callable[[], Awaitable[None]]:
        """Send the read on ``conn`` (pipeline mode); returns how to take its row once synced."""
        from psycopg.rows import dict_row

        cur = conn.cursor(binary=True, row_factory=dict_row)
        await cur.execute(LATEST_SQL, (self.thread_id, ""), binary=True)

        async def read() -> None:
            self.row = await cur.fetchone()

        return read

    def take(self, config: RunnableConfig) -> tuple[bool, dict[str, Any] | None]:
        """``(True, row)`` once, for a read of the latest checkpoint of this thread; ``(False, None)`` otherwise."""
        configurable = config.get("configurable") or {}
        if (
            self.used
            or configurable.get("thread_id") != self.thread_id
            or configurable.get("checkpoint_ns", "")
            or configurable.get("checkpoint_id")
        ):
            return False, None
        self.used = True
        return True, self.row


def batch_of(config: RunnableConfig) -> CheckpointBatch | None:
    """The turn's :class:`CheckpointBatch` in ``config``, if the runner passed one."""
    batch = (config.get("configurable") or {}).get(CHECKPOINT_BATCH)
    return batch if isinstance(batch, CheckpointBatch) else None


def batches_writes(saver: Any) -> bool:
    """Whether ``saver`` (or the saver it wraps) queues its writes in a turn's :class:`CheckpointBatch`.

    Such a saver also answers from a :class:`CheckpointRead`; its tables are in botloom's
    database (``open_checkpointer`` is given botloom's URL), so the runner may send its
    statements on its own connections.
    """
    return bool(getattr(getattr(saver, "inner", saver), "BATCHES_WRITES", False))


def small(value: Any, limit: int = INLINE_DUMP_LIMIT) -> bool:
    """Whether ``value`` is under ``limit`` (characters of its strings plus items of its containers); cheap."""
    budget = limit
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            budget -= len(item)
        elif isinstance(item, dict):
            budget -= len(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            budget -= len(item)
            stack.extend(item)
        else:
            budget -= 1
        if budget < 0:
            return False
    return True


def _split_values(checkpoint: Checkpoint) -> tuple[Checkpoint, dict[str, Any]]:
    """A copy of ``checkpoint`` keeping its primitive values inline, and the values for the blobs table."""
    from langgraph.checkpoint.serde.types import _DeltaSnapshot

    copy = checkpoint.copy()
    copy["channel_values"] = copy["channel_values"].copy()
    blob_values = {}
    for k, v in checkpoint["channel_values"].items():
        if isinstance(v, _DeltaSnapshot):
            blob_values[k] = copy["channel_values"].pop(k)
            copy["channel_values"][k] = True
        elif v is None or isinstance(v, (str, int, float, bool)):
            pass
        else:
            blob_values[k] = copy["channel_values"].pop(k)
    return copy, blob_values


def postgres_saver_class() -> type[Any]:  # noqa: C901 - one class: its overrides
    """``AsyncPostgresSaver`` reading blobs by primary key, writing through a turn's batch, without a process lock.

    * Reads (``aget_tuple``, ``alist``) fetch a checkpoint's blobs by primary key (``POSTGRES_SELECT_SQL``).
    * ``aput`` and ``aput_writes`` serialise small values on the event loop (LangGraph's saver
      hops to a worker thread for every write), and queue their statements in the turn's
      :class:`CheckpointBatch` when the config carries one.
    * On a pool, statements do not wait for one another: LangGraph's saver holds one
      ``asyncio.Lock`` around every statement of the process (needed for its single
      shared connection, not for a pool's).
    """
    from langgraph.checkpoint.base import WRITES_IDX_MAP, get_serializable_checkpoint_metadata
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb
    from psycopg_pool import AsyncConnectionPool

    class KeyedBlobPostgresSaver(AsyncPostgresSaver):
        """See :func:`postgres_saver_class`."""

        SELECT_SQL = POSTGRES_SELECT_SQL
        BATCHES_WRITES = True

        @asynccontextmanager
        async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
            if self.pipe is not None or not isinstance(self.conn, AsyncConnectionPool) or not self.supports_pipeline:
                async with super()._cursor(pipeline=pipeline) as cur:
                    yield cur
                return
            async with self.conn.connection() as conn:
                if pipeline:
                    async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                        yield cur
                else:
                    async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                        yield cur

        async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
            """As ``AsyncPostgresSaver.aget_tuple``, answered from the turn's :class:`CheckpointRead` if it fits."""
            read = (config.get("configurable") or {}).get(CHECKPOINT_READ)
            if isinstance(read, CheckpointRead):
                fits, row = read.take(config)
                if fits:
                    if row is None:
                        return None
                    if row["checkpoint"]["v"] >= 4 or not row["parent_checkpoint_id"]:  # else: sends to migrate
                        tuple_: CheckpointTuple = await self._load_checkpoint_tuple(row)
                        return tuple_
            found: CheckpointTuple | None = await super().aget_tuple(config)
            return found

        async def _run(self, config: RunnableConfig, statements: list[Statement]) -> None:
            batch = batch_of(config)
            if batch is not None:
                batch.statements.extend(statements)
                return
            async with self._cursor(pipeline=True) as cur:
                for sql, params, many in statements:
                    if many:
                        await cur.executemany(sql, params)
                    else:
                        await cur.execute(sql, params)

        async def aput(
            self,
            config: RunnableConfig,
            checkpoint: Checkpoint,
            metadata: CheckpointMetadata,
            new_versions: ChannelVersions,
        ) -> RunnableConfig:
            """Save a checkpoint as ``AsyncPostgresSaver.aput`` does (3.2), through the turn's batch if any."""
            configurable = config["configurable"]
            thread_id = configurable["thread_id"]
            checkpoint_ns = configurable["checkpoint_ns"]
            parent_id = configurable.get("checkpoint_id")
            copy, blob_values = _split_values(checkpoint)
            next_config: RunnableConfig = {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": checkpoint["id"],
                }
            }
            statements: list[Statement] = []
            if blob_versions := {k: v for k, v in new_versions.items() if k in blob_values}:
                dump = (thread_id, checkpoint_ns, blob_values, blob_versions)
                rows = (
                    self._dump_blobs(*dump)
                    if small(list(blob_values.values()))
                    else await asyncio.to_thread(self._dump_blobs, *dump)
                )
                columns = [[row[i] for row in rows] for i in range(2, 6)]  # channel, version, type, blob
                statements.append((BLOBS_SQL, (thread_id, checkpoint_ns, *columns), False))
            metadata_row = Jsonb(get_serializable_checkpoint_metadata(config, metadata))
            row = (thread_id, checkpoint_ns, checkpoint["id"], parent_id, Jsonb(copy), metadata_row)
            statements.append((self.UPSERT_CHECKPOINTS_SQL, row, False))
            await self._run(config, statements)
            return next_config

        async def aput_writes(
            self,
            config: RunnableConfig,
            writes: Sequence[tuple[str, Any]],
            task_id: str,
            task_path: str = "",
        ) -> None:
            """Store a task's writes as ``AsyncPostgresSaver.aput_writes`` (3.2), through the turn's batch if any."""
            query = (
                self.UPSERT_CHECKPOINT_WRITES_SQL
                if all(w[0] in WRITES_IDX_MAP for w in writes)
                else self.INSERT_CHECKPOINT_WRITES_SQL
            )
            configurable = config["configurable"]
            dump = (
                configurable["thread_id"],
                configurable["checkpoint_ns"],
                configurable["checkpoint_id"],
                task_id,
                task_path,
                writes,
            )
            params = (
                self._dump_writes(*dump)
                if small([v for _, v in writes])
                else await asyncio.to_thread(self._dump_writes, *dump)
            )
            await self._run(config, [(query, params, True)])

    return KeyedBlobPostgresSaver


@asynccontextmanager
async def open_checkpointer(
    settings: Settings, database_url: str, *, pool_size: int | None = None, cipher: Cipher | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open the configured checkpointer, wrapped for per-bot redaction; close it after.

    ``BOTLOOM_CHECKPOINTER`` picks the saver; with ``BOTLOOM_ENCRYPT_CHECKPOINTS``
    its serializer encrypts every value with ``cipher``.
    """
    async with _open_saver(settings, database_url, pool_size=pool_size) as saver:
        if settings.encrypt_checkpoints:
            if cipher is None:
                raise ValueError("encrypted checkpoints need the deployment's cipher")
            saver.serde = encrypting_serializer(cipher)
        yield RedactingSaver(saver)


@asynccontextmanager
async def _open_saver(
    settings: Settings, database_url: str, *, pool_size: int | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    kind = settings.checkpointer
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
        return
    if kind == "redis":
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver
        from redis.asyncio import BlockingConnectionPool, Redis

        assert settings.redis_url is not None
        # A blocking pool waits for a free connection; the default pool raises when it runs out.
        pool = BlockingConnectionPool.from_url(settings.redis_url, max_connections=pool_size or 50, timeout=30)
        client = Redis(connection_pool=pool)
        ttl = (
            {"default_ttl": settings.checkpoint_ttl_minutes, "refresh_on_read": True}
            if settings.checkpoint_ttl_minutes
            else None
        )
        saver = AsyncRedisSaver(redis_client=client, ttl=ttl)
        try:
            # One process at a time: two set-ups at once both find no search index and
            # the second FT.CREATE fails ("Index already exists"). The lock's expiry frees
            # it if its holder dies mid set-up.
            async with client.lock(REDIS_SETUP_LOCK, timeout=60, blocking_timeout=120):
                await saver.asetup()
            yield saver
        finally:
            await client.aclose()
            await pool.disconnect()
        return
    from psycopg.rows import dict_row

    from botloom.core.storage.database import checked_pool

    cp_pool = checked_pool(
        database_url,
        name="botloom-checkpoints",
        max_size=pool_size or settings.db_pool_size,
        timeout=CHECKPOINT_POOL_WAIT,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await cp_pool.open(wait=True, timeout=30)
    try:
        pg_saver = postgres_saver_class()(conn=cp_pool)
        await _set_up_once_at_a_time(database_url, pg_saver, settings.redis_url)
        yield pg_saver
    finally:
        await cp_pool.close()


CHECKPOINT_SETUP_LOCK = 0x626F746C6F6F6D01
"""The advisory lock that serialises LangGraph's checkpoint table set-up across processes."""
REDIS_SETUP_LOCK = "botloom:lock:checkpointer-setup"
"""The Redis lock that serialises the Redis checkpointer's search-index set-up across processes."""
POSTGRES_SETUP_LOCK = "botloom:lock:postgres-checkpointer-setup"
"""With Redis: the Redis lock that serialises the PostgreSQL checkpointer's table set-up across processes."""


async def _set_up_once_at_a_time(database_url: str, saver: Any, redis_url: str | None) -> None:
    """Run ``saver.setup()`` in one process at a time: under a Redis lock with Redis, else an advisory lock.

    LangGraph's set-up reads which of its migrations ran, then runs the others; two
    processes starting at once on a new database both run them, and one fails on a
    duplicate key. The advisory lock (:func:`one_process_at_a_time`) is a session's,
    held on a connection outside the saver's pool; a deployment with Redis may reach
    PostgreSQL through a transaction-mode pooler (docs/deployment.md), where a session
    lock would stay on whichever server connection took it, so there Redis holds it.
    """
    if redis_url is None:
        async with one_process_at_a_time(database_url, CHECKPOINT_SETUP_LOCK, "the checkpoint tables"):
            await saver.setup()
        return
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        async with client.lock(POSTGRES_SETUP_LOCK, timeout=120, blocking_timeout=120):
            await saver.setup()
    finally:
        await client.aclose()
