"""A worker process for the multi-process queue tests: ``python -m tests.queue_worker DATABASE_URL DATA_DIR``.

It runs what ``botloom worker`` runs, plus the ``slowpoke`` plugin of
``tests.turn_process`` (``parcel P<n>`` sleeps ``SLOWPOKE_SECONDS``), with the
fast heartbeats and sweeps of :data:`tests.channel_contract.FAST_QUEUE`. It
prints ``ready`` once its workers run and stops on SIGTERM.

Environment: ``QUEUE_WORKER_REDIS_URL`` puts the queue and the locks on that
Redis; ``QUEUE_WORKER_TIMING=default`` keeps botloom's own heartbeat and sweep
timing (what a deployment runs) instead of the fast one; ``QUEUE_WORKER_TURNS``
and ``QUEUE_WORKER_DELIVERIES`` set how many turns and deliveries it runs at once.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace

from botloom.core.settings import load_settings
from botloom.runtime.queue import QueueOptions
from botloom.server.worker import run_worker
from botloom.testing.channel_contract import FAST_QUEUE, FAST_RETRIES
from tests.helpers import LOCAL_ENDPOINTS, host_with
from tests.turn_process import SLOWPOKE


def options_from_environment() -> QueueOptions:
    """The queue options the environment asks for (see the module docstring)."""
    options = QueueOptions() if os.environ.get("QUEUE_WORKER_TIMING") == "default" else FAST_QUEUE
    turns = int(os.environ.get("QUEUE_WORKER_TURNS") or options.turn_concurrency)
    deliveries = int(os.environ.get("QUEUE_WORKER_DELIVERIES") or options.delivery_concurrency)
    return replace(options, turn_concurrency=turns, delivery_concurrency=deliveries)


def main(database_url: str, data_dir: str) -> None:
    settings = load_settings(
        environ={},
        data_dir=data_dir,
        secret_key="test-secret-key",
        turn_timeout=120,
        tool_timeout=120,
        allowed_endpoints=LOCAL_ENDPOINTS,
        redis_url=os.environ.get("QUEUE_WORKER_REDIS_URL") or None,
    )

    def ready(services: object) -> None:
        services.deliveries.policy = FAST_RETRIES  # type: ignore[attr-defined]
        print("ready", flush=True)

    asyncio.run(
        run_worker(
            settings,
            options=options_from_environment(),
            on_ready=ready,
            url=database_url,
            host=host_with(("slowpoke", SLOWPOKE)),
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
