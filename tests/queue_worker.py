"""A worker process for the multi-process queue tests: ``python -m tests.queue_worker DATABASE_URL DATA_DIR``.

It runs what ``botloom worker`` runs, plus the ``slowpoke`` plugin of
``tests.turn_process`` (``parcel P<n>`` sleeps ``SLOWPOKE_SECONDS``), with the
fast heartbeats and sweeps of :data:`tests.channel_contract.FAST_QUEUE`. It
prints ``ready`` once its workers run and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from botloom.core.settings import load_settings
from botloom.server.worker import run_worker
from tests.channel_contract import FAST_QUEUE, FAST_RETRIES
from tests.helpers import LOCAL_ENDPOINTS, host_with
from tests.turn_process import SLOWPOKE


def main(database_url: str, data_dir: str) -> None:
    settings = load_settings(
        environ={},
        data_dir=data_dir,
        secret_key="test-secret-key",
        turn_timeout=120,
        tool_timeout=120,
        allowed_endpoints=LOCAL_ENDPOINTS,
    )

    def ready(services: object) -> None:
        services.deliveries.policy = FAST_RETRIES  # type: ignore[attr-defined]
        print("ready", flush=True)

    asyncio.run(
        run_worker(
            settings, options=FAST_QUEUE, on_ready=ready, url=database_url, host=host_with(("slowpoke", SLOWPOKE))
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
