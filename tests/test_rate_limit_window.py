"""The per-key rate limit (#16): a counted window, the same answers as Litestar's timestamp list."""

from __future__ import annotations

import asyncio
import json
import time

from litestar import Litestar, get
from litestar.stores.memory import MemoryStore
from litestar.testing import TestClient

from botloom.server.middleware import rate_limit_config


@get("/limited", sync_to_thread=False)
def limited() -> dict[str, bool]:
    """A route under the limit."""
    return {"ok": True}


def app_with(store: MemoryStore, per_minute: int) -> Litestar:
    """An app with botloom's rate limit of ``per_minute`` on one route, counting in ``store``."""
    return Litestar([limited], middleware=[rate_limit_config(per_minute).middleware], stores={"rate_limit": store})


def stored(store: MemoryStore) -> dict[str, bytes]:
    """Every window the store holds, by key."""
    return {key: value.data for key, value in store._store.items()}


def test_the_limit_counts_requests_and_answers_429_with_retry_after_past_it() -> None:
    store = MemoryStore()
    with TestClient(app_with(store, 3)) as client:
        answers = [client.get("/limited") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert int(answers[3].headers["retry-after"]) >= 1


def test_a_window_is_stored_as_a_count_whatever_its_traffic() -> None:
    store = MemoryStore()
    with TestClient(app_with(store, 1000)) as client:
        for _ in range(60):
            assert client.get("/limited").status_code == 200
    (value,) = stored(store).values()
    count, _, reset = value.partition(b":")
    assert int(count) == 60 and int(reset) > time.time()  # not sixty timestamps


def test_a_window_litestar_stored_before_an_upgrade_still_counts() -> None:
    store = MemoryStore()
    with TestClient(app_with(store, 3)) as client:
        assert client.get("/limited").status_code == 200
        (key,) = stored(store)
        now = int(time.time())
        asyncio.run(store.set(key, json.dumps({"history": [now, now, now], "reset": now + 60})))
        refused = client.get("/limited")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
