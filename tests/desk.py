"""Helpers of the agent desk's tests: agents made through the API, and the desk's calls with their tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN

OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class DeskAgent:
    """An agent made through the API, with its personal token."""

    id: str
    name: str
    token: str
    client: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        """Its ``Authorization`` header."""
        return bearer(self.token)

    async def call(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """One desk call with the agent's token."""
        return await self.client.request(method, path, json=json, headers=self.headers)

    async def available(self) -> None:
        """Send the desk's heartbeat: available."""
        r = await self.call("POST", "/api/v1/agents/me/presence", {"status": "available"})
        assert r.status_code == 200, r.text

    async def queue(self, status: str = "waiting,assigned,with_agent") -> list[dict[str, Any]]:
        """The tenant's handovers the desk lists."""
        r = await self.call("GET", f"/api/v1/handovers?status={status}")
        assert r.status_code == 200, r.text
        result: list[dict[str, Any]] = r.json()
        return result


async def make_agent(
    client: httpx.AsyncClient,
    tenant: str,
    key: str,
    email: str,
    *,
    name: str | None = None,
    teams: list[str] | None = None,
    capacity: int = 5,
) -> DeskAgent:
    """An agent of ``tenant`` made with the tenant's ``key``."""
    body = {"email": email, "name": name or email.split("@", maxsplit=1)[0].title()}
    body |= {"password": "correct horse battery", "teams": teams or [], "capacity": capacity}
    r = await client.post(f"/api/v1/tenants/{tenant}/agents", json=body, headers=bearer(key))
    assert r.status_code == 201, r.text
    made = r.json()
    return DeskAgent(id=made["agent"]["id"], name=made["agent"]["name"], token=made["token"], client=client)


def frames_until(socket: Any, kind: str) -> list[dict[str, Any]]:
    """Frames of a web chat socket up to the first of type ``kind`` (others, live updates included, in order)."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] != kind:
        frames.append(json.loads(socket.receive_text(timeout=30)))
    return frames
