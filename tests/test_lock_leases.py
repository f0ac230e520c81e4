"""Conversation locks after a crash (#12 item 5): a dead holder's lock frees within seconds, a live one keeps it.

On PostgreSQL the lock is an advisory lock, which the server releases when the
holder's connection closes: a SIGKILLed process's sockets close with it. On
Redis the lock is a lease of a few seconds that its holder renews (before, it
lived 2 x ``BOTLOOM_TURN_TIMEOUT``: 240 s for a 120 s turn timeout, whoever held
it). The deadlines are generous bounds on a wait, not measurements.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from botloom.core.storage.database import Database
from botloom.runtime.locks import PostgresLocks, RedisLocks
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
FREED_WITHIN = 30.0
"""Seconds from the holder's death until the lock must be free again (the Redis lease is 5 s)."""


@asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Any]:
    """A Redis client, closed after the block."""
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def locks_of(backend: str, database_url: str, redis_url: str) -> AsyncIterator[Any]:
    """The backend's locks, as botloom's services set them up."""
    if backend == "postgres":
        db = await Database.open(database_url, max_size=2, migrate=False)
        try:
            yield PostgresLocks(db)
        finally:
            await db.close()
    else:
        async with redis_client(redis_url) as client:
            yield RedisLocks(client, expire=240.0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_the_lock_of_a_killed_holder_frees_within_seconds(
    backend: str, database_url: str, redis_url: str
) -> None:
    url = database_url if backend == "postgres" else redis_url
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.lock_holder", backend, url, "conversation-1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert holder.stdout is not None and holder.stderr is not None
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.strip() == "held", line + holder.stderr.read()[-3000:]
        async with locks_of(backend, database_url, redis_url) as locks:
            async with locks.try_hold("conversation-1") as free:
                assert not free
            holder.send_signal(signal.SIGKILL)
            await asyncio.to_thread(holder.communicate, timeout=30)

            async def free_again() -> bool:
                async with locks.try_hold("conversation-1") as taken:
                    return bool(taken)

            took = await eventually(free_again, FREED_WITHIN, "the dead holder's lock to free")
            print(f"{backend}: the lock of a SIGKILLed holder freed {took:.1f} s after its death")
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate(timeout=30)


async def test_a_live_holder_keeps_its_redis_lock_past_its_lease(redis_url: str) -> None:
    async with redis_client(redis_url) as client:
        # A lease of 2 s renewed every 0.67 s: a loaded CI machine that starves this
        # process for 1.3 s would let it lapse (0.6 s did once), which is not what this tests.
        locks = RedisLocks(client, lease=2.0)
        async with locks.hold("k"):
            began = time.monotonic()
            while time.monotonic() - began < 3 * locks.lease:  # three leases: it was renewed
                async with locks.try_hold("k") as free:
                    assert not free
                await asyncio.sleep(0.1)
        async with locks.try_hold("k") as free:
            assert free
        assert await client.exists("botloom:lock:k") == 0


async def test_a_lapsed_redis_lease_is_taken_back(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "botloom.runtime.locks")
    async with redis_client(redis_url) as client:
        locks = RedisLocks(client, lease=0.6)
        async with locks.hold("k"):
            token = await client.get("botloom:lock:k")
            await client.delete("botloom:lock:k")  # as if it expired while the holder stalled

            async def back() -> bool:
                return bool(await client.get("botloom:lock:k") == token)

            await eventually(back, 10, "the holder to take its lock back")
            async with locks.try_hold("k") as free:
                assert not free
        assert "lapsed (a stall or Redis away); taken back" in caplog.text
        assert await client.exists("botloom:lock:k") == 0


async def test_a_redis_lease_another_holder_took_is_left_to_it(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "botloom.runtime.locks")
    async with redis_client(redis_url) as client:
        locks = RedisLocks(client, lease=0.6)
        async with locks.hold("k"):
            await client.set("botloom:lock:k", "intruder", px=60_000)  # it lapsed, and another took it

            async def gave_up() -> bool:
                return "another holder took it" in caplog.text

            await eventually(gave_up, 10, "the holder to notice it lost its lease")
        assert await client.get("botloom:lock:k") == b"intruder"  # the holder did not release another's lock


async def test_a_redis_lock_is_renewed_for_at_most_expire_seconds(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "botloom.runtime.locks")
    async with redis_client(redis_url) as client:
        locks = RedisLocks(client, lease=0.6, expire=1.0)
        async with locks.hold("k"):

            async def lapsed() -> bool:
                async with locks.try_hold("k") as free:
                    return bool(free)

            await eventually(lapsed, 10, "the lease to lapse after expire")
        assert "its lease is no longer renewed" in caplog.text
