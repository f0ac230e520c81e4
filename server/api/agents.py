"""``/api/v1/tenants/{tenant}/agents`` and ``/teams``: a tenant's agents and teams (tenant key or operator).

Agents are people of a tenant who answer handovers on the desk (:mod:`botloom.server.api.desk`).
Creating one answers its personal API token, shown once; ``POST /api/v1/agents/sign-in`` (e-mail
and password) answers a sign-in token for the desk page. An agent's own token never reaches these
routes (:mod:`botloom.server.auth`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import delete, get, patch, post, put
from litestar.exceptions import NotAuthorizedException, NotFoundException, ValidationException
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler
from msgspec import UNSET, UnsetType

from botloom.core.storage.repositories import Conflict, as_uuid
from botloom.core.storage.repositories.agents import Agent, Team, hashed_password
from botloom.runtime.audit import record
from botloom.runtime.desk import DAYS, effective_presence
from botloom.server.api.audit import actor_of
from botloom.server.api.common import (
    READ_ERRORS,
    SERVICE_ERRORS,
    WRITE_ERRORS,
    ApiController,
    ConflictException,
    IdRef,
    NameRef,
    TenantRef,
    visible_tenant,
)
from botloom.server.api.schemas import Name, Request
from botloom.server.deps import PrincipalDep, ServicesDep

Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")
]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=200, pattern=r"^[^\x00]*$")]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]
Skill = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]
Teams = Annotated[list[TeamName], msgspec.Meta(max_length=20)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=100)]
Clock = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
Spans = Annotated[list[Annotated[list[Clock], msgspec.Meta(min_length=2, max_length=2)]], msgspec.Meta(max_length=8)]
"""A day's business hours: ``[["09:00", "12:30"], ["13:30", "17:00"]]``."""
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$")]


class AgentCreate(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new agent of the tenant."""

    email: Email
    """Unique within the tenant (case-insensitive); the desk's sign-in name."""
    name: Name
    password: Password
    """At least 8 characters; stored as an Argon2id hash only."""
    teams: Teams = []  # noqa: RUF012 - msgspec copies defaults
    skills: Annotated[list[Skill], msgspec.Meta(max_length=50)] = []  # noqa: RUF012 - msgspec copies defaults
    capacity: Capacity = 5
    """How many open handovers the agent takes at most."""


class AgentPatch(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Changes to an agent; fields left out keep their value."""

    name: Name | UnsetType = UNSET
    password: Password | UnsetType = UNSET
    teams: Teams | UnsetType = UNSET
    skills: Annotated[list[Skill], msgspec.Meta(max_length=50)] | UnsetType = UNSET
    capacity: Capacity | UnsetType = UNSET


class AgentOut(msgspec.Struct, frozen=True, kw_only=True):
    """An agent (never its password or token; its token's first characters to recognise it)."""

    id: str
    tenant_id: str
    email: str
    name: str
    teams: list[str]
    skills: list[str]
    capacity: int
    presence: str
    """``available`` while the desk's heartbeats keep coming, else ``away``."""
    last_seen_at: datetime | None
    token_prefix: str
    created_at: datetime

    @classmethod
    def of(cls, agent: Agent, away_after: float) -> AgentOut:
        """The answer for a stored agent."""
        return cls(
            id=agent.id,
            tenant_id=agent.tenant_id,
            email=agent.email,
            name=agent.name,
            teams=list(agent.teams),
            skills=list(agent.skills),
            capacity=agent.capacity,
            presence=effective_presence(agent, away_after),
            last_seen_at=agent.last_seen_at,
            token_prefix=agent.token_prefix,
            created_at=agent.created_at,
        )


class AgentCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new agent and its personal API token: shown this once, store it now."""

    agent: AgentOut
    token: str
    """Send as ``Authorization: Bearer <token>``: it reaches the desk routes of the agent's tenant only."""


class SignIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent signs in to the desk."""

    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
    """The tenant's slug or id."""
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class SignedIn(msgspec.Struct, frozen=True, kw_only=True):
    """A desk sign-in: a token valid for 12 hours, and who signed in."""

    token: str
    agent: AgentOut


class Week(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Each day's opening spans; a day left out is closed."""

    mon: Spans | UnsetType = UNSET
    tue: Spans | UnsetType = UNSET
    wed: Spans | UnsetType = UNSET
    thu: Spans | UnsetType = UNSET
    fri: Spans | UnsetType = UNSET
    sat: Spans | UnsetType = UNSET
    sun: Spans | UnsetType = UNSET


class TeamPut(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A team's business hours: ``{"mon": [["09:00", "17:00"]], ...}`` in ``timezone``; ``{}`` is always open."""

    timezone: TimeZone = "UTC"
    """An IANA time zone (``Europe/Berlin``)."""
    hours: Week = Week()


class TeamOut(msgspec.Struct, frozen=True, kw_only=True):
    """A team and its business hours."""

    name: str
    timezone: str
    hours: dict[str, list[list[str]]]
    updated_at: datetime

    @classmethod
    def of(cls, team: Team) -> TeamOut:
        """The answer for a stored team."""
        return cls(name=team.name, timezone=team.timezone, hours=team.hours, updated_at=team.updated_at)


def _check_hours(data: TeamPut) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(data.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationException(
            f"invalid timezone: {data.timezone!r} is not an IANA time zone (Europe/Berlin, UTC)",
            extra=[{"key": "timezone", "message": "not an IANA time zone", "source": "body"}],
        ) from None
    for day, spans in week(data.hours).items():
        for start, end in spans:
            if start >= end:
                raise ValidationException(
                    f"invalid hours.{day}: {start}-{end} ends before it starts",
                    extra=[{"key": f"hours.{day}", "message": "a span ends before it starts", "source": "body"}],
                )


def week(hours: Week) -> dict[str, list[list[str]]]:
    """The days given, as the team's stored hours."""
    return {day: list(spans) for day in DAYS if isinstance(spans := getattr(hours, day), list)}


def changed_fields(before: Agent, after: Agent, changes: dict[str, Any]) -> list[str]:
    """The names of the agent's fields a change set, for the audit log: never a value.

    ``password`` is named whenever one is given (only its hash is stored, so a new one
    cannot be told from the old); the others when their value differs.
    """
    names = [n for n in ("name", "teams", "skills", "capacity") if getattr(before, n) != getattr(after, n)]
    return names + (["password"] if "password" in changes else [])


def changed_hours(before: Team | None, after: Team) -> dict[str, Any]:
    """What a team's change set, for the audit log: ``timezone`` and the days (``hours.mon``) that differ."""
    if before is None:
        return {"fields": ["timezone", *(f"hours.{d}" for d in DAYS if d in after.hours)], "created": True}
    names = ["timezone"] if before.timezone != after.timezone else []
    return {"fields": names + [f"hours.{d}" for d in DAYS if before.hours.get(d) != after.hours.get(d)]}


class AgentController(ApiController):
    """A tenant's agents (the tenant's key or the operator; never an agent's token)."""

    path = "/tenants/{tenant:str}/agents"
    tags = ("agents",)

    @post(summary="Create an agent", raises=[*WRITE_ERRORS, ConflictException])
    async def create_agent(
        self, tenant: TenantRef, data: JSONBody[AgentCreate], principal: PrincipalDep, services: ServicesDep
    ) -> AgentCreated:
        """The agent and its personal API token, shown this once; 409 when the e-mail is taken in the tenant."""
        found = await visible_tenant(services, principal, tenant)
        password = await hashed_password(data.password)  # outside the transaction: Argon2 takes a while
        try:
            async with services.store.db.transaction():
                agent, token = await services.store.agents.create(
                    found.id,
                    email=data.email,
                    name=data.name,
                    password=password,
                    teams=data.teams,
                    skills=data.skills,
                    capacity=data.capacity,
                )
                # The agent's id only: its e-mail and name are a person's data, its password and token secrets.
                await record(
                    services,
                    actor_of(principal),
                    "agent.created",
                    tenant_id=found.id,
                    target=("agent", agent.id),
                    details={"teams": list(agent.teams)},
                )
        except Conflict as exc:
            raise ConflictException(str(exc)) from None
        return AgentCreated(agent=AgentOut.of(agent, services.desk.away_after), token=token)

    @get(summary="List a tenant's agents", raises=READ_ERRORS)
    async def list_agents(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> list[AgentOut]:
        """Every agent of the tenant, by name, with presence."""
        found = await visible_tenant(services, principal, tenant)
        away = services.desk.away_after
        return [AgentOut.of(a, away) for a in await services.store.agents.list_all(found.id)]

    @patch("/{agent_id:str}", summary="Change an agent", raises=WRITE_ERRORS)
    async def update_agent(
        self,
        tenant: TenantRef,
        agent_id: IdRef,
        data: JSONBody[AgentPatch],
        principal: PrincipalDep,
        services: ServicesDep,
    ) -> AgentOut:
        """Change an agent's name, password, teams, skills or capacity."""
        found = await visible_tenant(services, principal, tenant)
        changes: dict[str, Any] = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
        if "password" in changes:  # hashed outside the transaction: Argon2 takes a while
            changes["password"] = await hashed_password(changes["password"])
        async with services.store.db.transaction():
            before = await services.store.agents.get(found.id, agent_id)
            agent = await services.store.agents.update(found.id, agent_id, changes) if before else None
            if before is None or agent is None:
                raise NotFoundException(f"no agent {agent_id!r}")
            await record(
                services,
                actor_of(principal),
                "agent.updated",
                tenant_id=found.id,
                target=("agent", agent.id),
                details={"fields": changed_fields(before, agent, changes)},
            )
        return AgentOut.of(agent, services.desk.away_after)

    @delete("/{agent_id:str}", summary="Delete an agent", raises=READ_ERRORS)
    async def delete_agent(
        self, tenant: TenantRef, agent_id: IdRef, principal: PrincipalDep, services: ServicesDep
    ) -> None:
        """Remove an agent: its token stops working; the handovers assigned to it wait for another agent."""
        found = await visible_tenant(services, principal, tenant)
        async with services.store.db.transaction():
            requeued = await services.store.handovers.unassign(found.id, agent_id, by="agent_deleted")
            if not await services.store.agents.delete(found.id, agent_id):
                raise NotFoundException(f"no agent {agent_id!r}")
            await record(
                services,
                actor_of(principal),
                "agent.deleted",
                tenant_id=found.id,
                target=("agent", str(as_uuid(agent_id))),
                details={"handovers_requeued": len(requeued)},
            )
        await services.desk.requeued(found.id, requeued, by="agent_deleted")


class TeamController(ApiController):
    """A tenant's teams and their business hours."""

    path = "/tenants/{tenant:str}/teams"
    tags = ("agents",)

    @get(summary="List a tenant's teams", raises=READ_ERRORS)
    async def list_teams(self, tenant: TenantRef, principal: PrincipalDep, services: ServicesDep) -> list[TeamOut]:
        """The tenant's teams with business hours, by name (a team without a row is always open)."""
        found = await visible_tenant(services, principal, tenant)
        return [TeamOut.of(t) for t in await services.store.teams.list_all(found.id)]

    @put("/{team:str}", summary="Set a team's business hours", raises=WRITE_ERRORS)
    async def put_team(
        self, tenant: TenantRef, team: NameRef, data: JSONBody[TeamPut], principal: PrincipalDep, services: ServicesDep
    ) -> TeamOut:
        """Create or replace the team's business hours (outside them the bot says the team is away)."""
        found = await visible_tenant(services, principal, tenant)
        _check_hours(data)
        if not team or len(team) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in team):
            raise ValidationException("invalid team name: 1 to 64 characters, no control characters")
        async with services.store.db.transaction():
            before = await services.store.teams.get(found.id, team)
            stored = await services.store.teams.put(found.id, team, timezone=data.timezone, hours=week(data.hours))
            if stored is None:
                raise NotFoundException(f"no tenant {tenant!r}")
            await record(
                services,
                actor_of(principal),
                "team.updated",
                tenant_id=found.id,
                target=("team", team),
                details=changed_hours(before, stored),
            )
        return TeamOut.of(stored)

    @delete("/{team:str}", summary="Remove a team's business hours", raises=READ_ERRORS)
    async def delete_team(
        self, tenant: TenantRef, team: NameRef, principal: PrincipalDep, services: ServicesDep
    ) -> None:
        """Remove the team's business hours: its handovers are then answered at any hour."""
        found = await visible_tenant(services, principal, tenant)
        async with services.store.db.transaction():
            if not await services.store.teams.delete(found.id, team):
                raise NotFoundException(f"no team {team!r}")
            await record(services, actor_of(principal), "team.deleted", tenant_id=found.id, target=("team", team))


@post(
    "/agents/sign-in",
    summary="Sign an agent in to the desk",
    tags=["desk"],
    opt={"desk": True, "public": True},
    raises=[NotAuthorizedException, ValidationException, *SERVICE_ERRORS],
    security=[],
)
async def sign_in(data: JSONBody[SignIn], services: ServicesDep) -> SignedIn:
    """E-mail and password of one of the tenant's agents: a desk token valid for 12 hours; 401 otherwise."""
    from botloom.core.domain import is_slug
    from botloom.core.storage.repositories import as_uuid

    tenant = None
    if as_uuid(data.tenant) is not None:
        tenant = await services.store.tenants.get(data.tenant)
    elif is_slug(data.tenant):
        tenant = await services.store.tenants.get_by_slug(data.tenant)
    signed = await services.store.agents.sign_in(tenant.id if tenant else "", data.email, data.password)
    if signed is None:
        raise NotAuthorizedException(
            "wrong tenant, e-mail or password", headers={"WWW-Authenticate": 'Bearer realm="botloom"'}
        )
    agent, token = signed
    return SignedIn(token=token, agent=AgentOut.of(agent, services.desk.away_after))


AGENT_HANDLERS: list[ControllerRouterHandler] = [AgentController, TeamController, sign_in]

__all__ = ["AGENT_HANDLERS", "AgentController", "AgentOut", "TeamController", "sign_in"]
