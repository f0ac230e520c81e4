"""Two agents claiming one handover at once, through two ``botloom serve`` processes: one wins, the other gets 409."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.desk import bearer
from tests.serve_process import Server, started_together

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def servers(database_url: str, data_dir: Path, demo: DemoInfo) -> Iterator[list[Server]]:
    env = {"PYTHONPATH": str(ROOT), "BOTLOOM_SECRET_KEY": "test-secret-key"}
    with started_together([Server(database_url, data_dir, demo=False, **env) for _ in range(2)]) as running:
        yield list(running)


async def test_two_claims_at_once_in_two_processes_one_wins(
    servers: list[Server], services: Services, demo: DemoInfo
) -> None:
    tokens = []
    for name in ("ann", "bob"):
        _, token = await services.store.agents.create(
            demo.tenant.id, email=f"{name}@acme.test", name=name, password="pw-123456"
        )
        tokens.append(token)
    first, second = servers
    async with httpx.AsyncClient(timeout=60) as client:
        for user in range(4):
            r = await client.post(
                f"{first.url}/api/v1/bots/acme/support/messages",
                json={"text": "I want to talk to a person", "user": f"user-{user}"},
                headers=bearer(demo.api_key),
            )
            assert r.status_code == 200 and r.json()["escalated"], r.text
        r = await client.get(f"{second.url}/api/v1/handovers", headers=bearer(tokens[0]))
        handovers = [h["id"] for h in r.json()]
        assert len(handovers) == 4 and all(h["status"] == "waiting" for h in r.json())

        for handover in handovers:
            ann, bob = await asyncio.gather(
                client.post(f"{first.url}/api/v1/handovers/{handover}/claim", headers=bearer(tokens[0])),
                client.post(f"{second.url}/api/v1/handovers/{handover}/claim", headers=bearer(tokens[1])),
            )
            assert sorted([ann.status_code, bob.status_code]) == [200, 409], (ann.text, bob.text)
            winner = ann if ann.status_code == 200 else bob
            loser = bob if winner is ann else ann
            assert "held by agent" in loser.json()["detail"]
            stored = await services.store.handovers.get(demo.tenant.id, handover)
            assert stored is not None and stored.status == "with_agent"
            assert stored.agent_id == winner.json()["agent_id"]
            claims = [
                t
                for t in await services.store.handovers.transitions(demo.tenant.id, handover)
                if t.to_status == "with_agent"
            ]
            assert len(claims) == 1, "one claim recorded"
