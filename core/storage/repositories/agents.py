"""The agent desk's people and settings: agents (passwords hashed with Argon2), their sign-ins, teams, canned responses.

Every method takes the tenant and puts it in its query, except :meth:`AgentRepository.authenticate`,
where the token names its own tenant.
"""

# ruff: noqa: S608 - the only text put into these queries is the constant column list _AGENT_COLUMNS
from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import errors as pg_errors

from botloom.core.storage.repositories.base import Conflict, Repository, as_uuid, hash_api_key, to_struct

AGENT_TOKEN_PREFIX = "bla_"  # noqa: S105 - a prefix, not a secret
"""An agent's personal API token starts with this (a tenant's API key with ``blk_``)."""
SESSION_TOKEN_PREFIX = "bls_"  # noqa: S105 - a prefix, not a secret
"""A desk sign-in's token starts with this."""
Presence = Literal["available", "away"]

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """The stored form of an agent's password: Argon2id with a random salt (argon2-cffi's defaults)."""
    return _hasher.hash(password)


class HashedPassword(str):
    """A password already hashed (:func:`hashed_password`): the repository stores it as it is."""

    __slots__ = ()


async def hashed_password(password: str) -> HashedPassword:
    """``password`` hashed in a thread (Argon2 takes tens of milliseconds), before a transaction holds a connection."""
    return HashedPassword(await asyncio.to_thread(hash_password, password))


async def _stored_form(password: str) -> str:
    """What the ``password_hash`` column keeps for ``password``: a :class:`HashedPassword` as it is, else its hash."""
    return password if isinstance(password, HashedPassword) else await hashed_password(password)


def password_matches(stored: str, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from."""
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


_UNKNOWN: list[str] = []


async def _unknown_hash() -> str:
    """A hash to check a password against when no agent has the e-mail (so timing does not tell)."""
    if not _UNKNOWN:
        _UNKNOWN.append(await asyncio.to_thread(hash_password, secrets.token_urlsafe(16)))
    return _UNKNOWN[0]


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    """A person of a tenant who answers handovers on the desk (never with its password or token)."""

    id: str
    tenant_id: str
    email: str
    name: str
    teams: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    capacity: int = 5
    """Open handovers (assigned or with the agent) the agent takes at most."""
    presence: Presence = "away"
    last_seen_at: datetime | None = None
    token_prefix: str = ""
    created_at: datetime


class Team(msgspec.Struct, frozen=True, kw_only=True):
    """A team of a tenant and its business hours."""

    tenant_id: str
    name: str
    timezone: str = "UTC"
    hours: dict[str, list[list[str]]] = {}
    """``{"mon": [["09:00", "17:00"]], ...}``: a day not named is closed; empty: always open."""
    updated_at: datetime


class CannedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A reply an agent inserts by its shortcut; ``team`` empty: for every team."""

    id: str
    tenant_id: str
    team: str = ""
    shortcut: str
    text: str
    created_at: datetime
    updated_at: datetime


_AGENT_COLUMNS = "id, tenant_id, email, name, teams, skills, capacity, presence, last_seen_at, token_prefix, created_at"


class AgentRepository(Repository):
    """A tenant's agents, their tokens and their presence."""

    async def create(
        self,
        tenant_id: str,
        *,
        email: str,
        name: str,
        password: str,
        teams: Sequence[str] = (),
        skills: Sequence[str] = (),
        capacity: int = 5,
    ) -> tuple[Agent, str]:
        """A new agent and its personal token (shown once; botloom keeps its hash). :class:`Conflict`: e-mail taken."""
        token = f"{AGENT_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        hashed = await _stored_form(password)
        try:
            row = await self._one(
                "INSERT INTO agents (tenant_id, email, name, password_hash, token_prefix, token_hash, teams, skills, "
                "capacity) SELECT id, %s, %s, %s, %s, %s, %s, %s, %s FROM tenants WHERE id = %s "
                f"RETURNING {_AGENT_COLUMNS}",
                (email, name, hashed, token[:10], hash_api_key(token), list(teams), list(skills), capacity,
                 as_uuid(tenant_id)),
            )  # fmt: skip
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"an agent with e-mail {email!r} exists") from exc
        if row is None:
            raise LookupError(f"tenant {tenant_id} not found")
        return to_struct(Agent, row), token

    async def authenticate(self, token: str) -> Agent | None:
        """The agent a personal or sign-in token belongs to (the token names its tenant), noting it was seen."""
        if token.startswith(AGENT_TOKEN_PREFIX):
            sql = f"SELECT {_AGENT_COLUMNS} FROM agents WHERE token_hash = %s"
        elif token.startswith(SESSION_TOKEN_PREFIX):
            sql = (
                f"SELECT {', '.join('a.' + c.strip() for c in _AGENT_COLUMNS.split(','))} FROM agent_sessions s "
                "JOIN agents a ON a.tenant_id = s.tenant_id AND a.id = s.agent_id "
                "WHERE s.token_hash = %s AND s.expires_at > now()"
            )
        else:
            return None
        row = await self._one(sql, (hash_api_key(token),))
        return to_struct(Agent, row) if row else None

    async def sign_in(
        self, tenant_id: str, email: str, password: str, *, hours: float = 12.0
    ) -> tuple[Agent, str] | None:
        """A sign-in token valid for ``hours`` when the e-mail and password match one of the tenant's agents."""
        row = await self._one(
            f"SELECT password_hash, {_AGENT_COLUMNS} FROM agents WHERE tenant_id = %s AND lower(email) = lower(%s)",
            (as_uuid(tenant_id), email),
        )
        stored = str(row.pop("password_hash")) if row else await _unknown_hash()  # the same work either way
        if not await asyncio.to_thread(password_matches, stored, password) or row is None:
            return None
        token = f"{SESSION_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        await self._one(
            "INSERT INTO agent_sessions (token_hash, tenant_id, agent_id, expires_at) "
            "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) RETURNING agent_id",
            (hash_api_key(token), as_uuid(tenant_id), row["id"], hours * 3600),
        )
        return to_struct(Agent, row), token

    async def sign_out(self, tenant_id: str, token: str) -> bool:
        """End a sign-in."""
        row = await self._one(
            "DELETE FROM agent_sessions WHERE tenant_id = %s AND token_hash = %s RETURNING agent_id",
            (as_uuid(tenant_id), hash_api_key(token)),
        )
        return row is not None

    async def get(self, tenant_id: str, agent_id: str) -> Agent | None:
        """One of the tenant's agents."""
        row = await self._one(
            f"SELECT {_AGENT_COLUMNS} FROM agents WHERE tenant_id = %s AND id = %s",
            (as_uuid(tenant_id), as_uuid(agent_id)),
        )
        return to_struct(Agent, row) if row else None

    async def list_all(self, tenant_id: str) -> list[Agent]:
        """The tenant's agents by name."""
        rows = await self._all(
            f"SELECT {_AGENT_COLUMNS} FROM agents WHERE tenant_id = %s ORDER BY name, id", (as_uuid(tenant_id),)
        )
        return [to_struct(Agent, r) for r in rows]

    async def update(self, tenant_id: str, agent_id: str, changes: Mapping[str, Any]) -> Agent | None:
        """Change an agent's ``name``, ``teams``, ``skills``, ``capacity`` or ``password``."""
        allowed = {"name", "teams", "skills", "capacity"}
        sets: list[str] = []
        params: list[Any] = []
        for field, value in changes.items():
            if field == "password":
                sets.append("password_hash = %s")
                params.append(await _stored_form(value if isinstance(value, str) else str(value)))
            elif field in allowed:
                sets.append(f"{field} = %s")
                params.append(list(value) if field in ("teams", "skills") else value)
        if not sets:
            return await self.get(tenant_id, agent_id)
        row = await self._one(
            f"UPDATE agents SET {', '.join(sets)} WHERE tenant_id = %s AND id = %s RETURNING {_AGENT_COLUMNS}",
            (*params, as_uuid(tenant_id), as_uuid(agent_id)),
        )
        return to_struct(Agent, row) if row else None

    async def delete(self, tenant_id: str, agent_id: str) -> bool:
        """Remove an agent (its open handovers lose their agent; the caller puts them back in the queue)."""
        row = await self._one(
            "DELETE FROM agents WHERE tenant_id = %s AND id = %s RETURNING id", (as_uuid(tenant_id), as_uuid(agent_id))
        )
        return row is not None

    async def heartbeat(self, tenant_id: str, agent_id: str, presence: Presence) -> Agent | None:
        """The desk's heartbeat: the agent's presence, seen now."""
        row = await self._one(
            "UPDATE agents SET presence = %s, last_seen_at = now() WHERE tenant_id = %s AND id = %s "
            f"RETURNING {_AGENT_COLUMNS}",
            (presence, as_uuid(tenant_id), as_uuid(agent_id)),
        )
        return to_struct(Agent, row) if row else None

    async def count_available(self, tenant_id: str, team: str | None, away_after: float) -> dict[str, int]:
        """How many agents the tenant has (of ``team``, when given), are available, and have room.

        Available: a heartbeat within ``away_after`` seconds; room: fewer open handovers than its capacity.
        """
        row = await self._one(
            "SELECT count(*) AS agents, count(*) FILTER (WHERE online) AS available, "
            "count(*) FILTER (WHERE online AND load < capacity) AS free FROM ("
            "  SELECT a.capacity, a.presence = 'available' AND a.last_seen_at > now() - make_interval(secs => %s) "
            "  AS online, (SELECT count(*) FROM handovers h WHERE h.tenant_id = a.tenant_id AND h.agent_id = a.id "
            "  AND h.status IN ('assigned', 'with_agent')) AS load "
            "  FROM agents a WHERE a.tenant_id = %s AND (%s::text IS NULL OR %s = ANY(a.teams))) counted",
            (away_after, as_uuid(tenant_id), team, team),
        )
        if row is None:
            return {"agents": 0, "available": 0, "free": 0}
        return {"agents": int(row["agents"]), "available": int(row["available"]), "free": int(row["free"])}


class TeamRepository(Repository):
    """A tenant's teams and their business hours."""

    async def put(self, tenant_id: str, name: str, *, timezone: str, hours: Mapping[str, Any]) -> Team | None:
        """Create or replace a team's business hours."""
        row = await self._one(
            "INSERT INTO desk_teams (tenant_id, name, timezone, hours) SELECT id, %s, %s, %s FROM tenants "
            "WHERE id = %s ON CONFLICT (tenant_id, name) DO UPDATE SET timezone = EXCLUDED.timezone, "
            "hours = EXCLUDED.hours, updated_at = now() RETURNING *",
            (name, timezone, json.dumps(dict(hours)), as_uuid(tenant_id)),
        )
        return to_struct(Team, row) if row else None

    async def get(self, tenant_id: str, name: str) -> Team | None:
        """One of the tenant's teams."""
        row = await self._one("SELECT * FROM desk_teams WHERE tenant_id = %s AND name = %s", (as_uuid(tenant_id), name))
        return to_struct(Team, row) if row else None

    async def list_all(self, tenant_id: str) -> list[Team]:
        """The tenant's teams by name."""
        rows = await self._all("SELECT * FROM desk_teams WHERE tenant_id = %s ORDER BY name", (as_uuid(tenant_id),))
        return [to_struct(Team, r) for r in rows]

    async def delete(self, tenant_id: str, name: str) -> bool:
        """Remove a team's business hours (its handovers are then answered at any hour)."""
        row = await self._one(
            "DELETE FROM desk_teams WHERE tenant_id = %s AND name = %s RETURNING name", (as_uuid(tenant_id), name)
        )
        return row is not None


class CannedResponseRepository(Repository):
    """A tenant's canned responses, per team."""

    async def create(self, tenant_id: str, *, team: str, shortcut: str, text: str) -> CannedResponse:
        """A new canned response; :class:`Conflict` when the team has the shortcut already."""
        try:
            row = await self._one(
                "INSERT INTO canned_responses (tenant_id, team, shortcut, text) SELECT id, %s, %s, %s FROM tenants "
                "WHERE id = %s RETURNING *",
                (team, shortcut, text, as_uuid(tenant_id)),
            )
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"team {team!r} has a canned response {shortcut!r}") from exc
        if row is None:
            raise LookupError(f"tenant {tenant_id} not found")
        return to_struct(CannedResponse, row)

    async def list_all(self, tenant_id: str, team: str | None = None) -> list[CannedResponse]:
        """The tenant's canned responses (of ``team`` and those for every team, when given)."""
        rows = await self._all(
            "SELECT * FROM canned_responses WHERE tenant_id = %s AND (%s::text IS NULL OR team IN (%s, '')) "
            "ORDER BY team, shortcut",
            (as_uuid(tenant_id), team, team),
        )
        return [to_struct(CannedResponse, r) for r in rows]

    async def update(
        self, tenant_id: str, response_id: str, *, shortcut: str | None, text: str | None
    ) -> tuple[CannedResponse, list[str]] | None:
        """Change a canned response's shortcut or text; the response and the names of the fields that changed."""
        try:
            row = await self._one(
                "WITH old AS (SELECT id, shortcut, text FROM canned_responses WHERE tenant_id = %s AND id = %s "
                "FOR UPDATE) "
                "UPDATE canned_responses c SET shortcut = coalesce(%s, c.shortcut), text = coalesce(%s, c.text), "
                "updated_at = now() FROM old WHERE c.id = old.id RETURNING c.*, array_remove(ARRAY["
                "CASE WHEN c.shortcut IS DISTINCT FROM old.shortcut THEN %s END, "
                "CASE WHEN c.text IS DISTINCT FROM old.text THEN %s END], NULL) AS changed_fields",
                (as_uuid(tenant_id), as_uuid(response_id), shortcut, text, "shortcut", "text"),
            )
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"the team has a canned response {shortcut!r}") from exc
        return (to_struct(CannedResponse, row), list(row["changed_fields"])) if row else None

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        """Remove a canned response."""
        row = await self._one(
            "DELETE FROM canned_responses WHERE tenant_id = %s AND id = %s RETURNING id",
            (as_uuid(tenant_id), as_uuid(response_id)),
        )
        return row is not None


__all__ = [
    "AGENT_TOKEN_PREFIX",
    "SESSION_TOKEN_PREFIX",
    "Agent",
    "AgentRepository",
    "CannedResponse",
    "CannedResponseRepository",
    "HashedPassword",
    "Presence",
    "Team",
    "TeamRepository",
    "hash_password",
    "hashed_password",
    "password_matches",
]
