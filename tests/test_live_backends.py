"""The desk's live-event backends deliver to every channel subscribed at once.

A restarted server meets its desks reconnecting together: their first subscriptions
arrive concurrently, and every one of them must receive its tenant's events (redis-py's
``PubSub`` opened one connection per concurrent first subscribe, and events of all but
one were read from nowhere).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from botloom.server.desk import live
from tests.helpers import eventually

CHANNELS = [f"botloom:events:t{n}" for n in range(6)]


@pytest.fixture(params=["redis", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    """A started live backend, and a function publishing ``data`` on a channel from elsewhere."""
    if request.param == "redis":
        import redis.asyncio as aredis

        url = request.getfixturevalue("redis_url")
        started = live._redis_backend(url)
        publisher = aredis.Redis.from_url(url)

        async def publish(channel: str, data: bytes) -> None:
            async def subscribed() -> bool:  # Redis has taken the SUBSCRIBE (sent, not awaited)
                return bool(dict(await publisher.pubsub_numsub(channel)).get(channel.encode()))

            await eventually(subscribed, 10, f"{channel} to be subscribed")
            await publisher.publish(channel, data)

        await started.on_startup()
        try:
            yield started, publish
        finally:
            await started.on_shutdown()
            await started._redis.aclose()
            await publisher.aclose()
        return
    import psycopg

    url = request.getfixturevalue("database_url")
    started = live._postgres_backend()
    started._pg_dsn = url
    await started.on_startup()

    async def notify(channel: str, data: bytes) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
            await connection.execute("SELECT pg_notify(%s, %s)", (channel, data.decode()))

    try:
        yield started, notify
    finally:
        await started.on_shutdown()


async def test_channels_subscribed_concurrently_all_receive(backend: tuple[Any, Any]) -> None:
    started, publish = backend
    await asyncio.gather(*(started.subscribe([channel]) for channel in CHANNELS))
    received: dict[str, bytes] = {}

    async def collect() -> None:
        async for channel, data in started.stream_events():
            received[channel] = bytes(data) if not isinstance(data, str) else data.encode()
            if len(received) == len(CHANNELS):
                return

    collecting = asyncio.create_task(collect())
    for channel in CHANNELS:
        await publish(channel, channel.encode())
    async with asyncio.timeout(15):
        await collecting
    assert received == {channel: channel.encode() for channel in CHANNELS}
