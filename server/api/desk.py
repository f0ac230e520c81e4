"""The agent desk's routes: ``/api/v1/handovers``, ``/api/v1/canned``, ``/api/v1/agents`` (see docs/desk.md).

These are the routes an agent's token reaches (``opt={"desk": True}``, :mod:`botloom.server.auth`),
always within the agent's tenant. A tenant's key reaches them too (a supervisor: it may read,
release and resolve, not claim or answer); the operator names the tenant with ``?tenant=``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import delete, get, patch, post
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import HeaderParameter, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler
from msgspec import UNSET, UnsetType

from botloom.core.storage.repositories import Conflict, as_uuid
from botloom.core.storage.repositories.agents import CannedResponse, Presence
from botloom.core.storage.repositories.handovers import (
    CLOSED_STATUSES,
    HandoverRecord,
    Note,
    Transition,
    statuses_of,
)
from botloom.runtime.audit import record
from botloom.runtime.desk import Actor, DeskRefused, effective_presence
from botloom.runtime.services import Services
from botloom.server.api.agents import AgentOut
from botloom.server.api.audit import actor_of as audit_actor
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, ConflictException, IdRef, visible_tenant
from botloom.server.api.schemas import MULTI_LINE, MessageOut, Request
from botloom.server.auth import Principal
from botloom.server.deps import PrincipalDep, ServicesDep

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000, pattern=MULTI_LINE)]
NoteText = Annotated[str, msgspec.Meta(max_length=4000, pattern=MULTI_LINE)]
TeamName = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]
Shortcut = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f\s]+$")]
CannedText = Annotated[str, msgspec.Meta(min_length=1, max_length=5000, pattern=MULTI_LINE)]
KEY_PATTERN = r"^[\x21-\x7e]+$"
"""An idempotency key: 1 to 200 printable ASCII characters, no spaces."""
ClientKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=KEY_PATTERN)]
IdempotencyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        description="The message sent once per key and handover: a retried send answers the first one",
        min_length=1,
        max_length=200,
        pattern=KEY_PATTERN,
    ),
]
TenantQuery = Annotated[
    str | None, QueryParameter(description="The operator names the tenant (slug or id)", max_length=200)
]
DESK = {"desk": True}
DESK_READ_ERRORS: list[type[HTTPException]] = [*READ_ERRORS, PermissionDeniedException, ValidationException]
"""A desk route also answers 403 (an agent's route called with a key; the operator without ``?tenant=``)."""
DESK_WRITE_ERRORS: list[type[HTTPException]] = [*WRITE_ERRORS, PermissionDeniedException]
CONFLICT_ERRORS: list[type[HTTPException]] = [*DESK_WRITE_ERRORS, ConflictException]


class MessageIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent's message to the end user."""

    text: Text
    client_message_id: ClientKey | None = None
    """The client's id of the message: an idempotency key like the ``Idempotency-Key`` header."""


class ReleaseIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Handing the conversation back to the bot, with a note the bot answers with in context."""

    note: NoteText | None = None


class ResolveIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Closing the matter, with the resolution kept on the handover (the bot starts afresh)."""

    note: NoteText | None = None


class NoteIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A private note for the other agents."""

    text: Text


class PresenceIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The desk's heartbeat (send one at least every minute while the desk is open)."""

    status: Annotated[str, msgspec.Meta(pattern=r"^(available|away)$")]


class CannedIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A canned response of a team (``team`` empty: every team's)."""

    team: TeamName = ""
    shortcut: Shortcut
    text: CannedText


class CannedPatch(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Changes to a canned response."""

    shortcut: Shortcut | UnsetType = UNSET
    text: CannedText | UnsetType = UNSET


class HandoverOut(msgspec.Struct, frozen=True, kw_only=True):
    """A handover as the desk lists it."""

    id: str
    bot_id: str
    conversation_id: str
    team: str | None
    status: str
    reason: str
    summary: dict[str, Any]
    """For the agent: reason, intent, confidence, slots, last_messages, knowledge, tool_results, channel,
    user, availability (``available``, ``nobody_available``, ``closed``, ``no_agents``)."""
    agent_id: str | None
    note: str | None
    created_at: datetime
    assigned_at: datetime | None
    first_response_at: datetime | None
    closed_at: datetime | None
    wait_until: datetime | None
    first_response_due: datetime | None
    resolution_due: datetime | None
    resumed_at: datetime | None = None
    """When the bot took the closed handover's conversation back; ``null`` while a failed resume is retried."""
    resume_attempts: int = 0
    """How many resumes of the closed handover failed (the desk's sweep retries them; 5 give it back)."""
    resume_error: str | None = None
    """The last failed resume's error code (the error's type, e.g. ``OperationalError``; never its text)."""

    @classmethod
    def of(cls, record: HandoverRecord) -> HandoverOut:
        """The answer for a stored handover."""
        data = msgspec.structs.asdict(record)
        data.pop("tenant_id")
        return cls(**data)


class NoteOut(msgspec.Struct, frozen=True, kw_only=True):
    """A private note."""

    id: str
    agent_id: str | None
    text: str
    created_at: datetime

    @classmethod
    def of(cls, note: Note) -> NoteOut:
        """The answer for a stored note."""
        return cls(id=note.id, agent_id=note.agent_id, text=note.text, created_at=note.created_at)


class TransitionOut(msgspec.Struct, frozen=True, kw_only=True):
    """One audited move of a handover."""

    from_status: str | None
    to_status: str
    agent_id: str | None
    detail: dict[str, Any]
    at: datetime

    @classmethod
    def of(cls, t: Transition) -> TransitionOut:
        """The answer for a stored transition."""
        return cls(from_status=t.from_status, to_status=t.to_status, agent_id=t.agent_id, detail=t.detail, at=t.at)


class HandoverDetail(HandoverOut, frozen=True, kw_only=True):
    """A handover with its conversation's transcript, its notes and its transitions."""

    channel: str
    user: str | None
    messages: list[MessageOut]
    notes: list[NoteOut]
    transitions: list[TransitionOut]


class SentOut(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's message as stored for the end user (``pending`` until a push channel's delivery sends it)."""

    handover: HandoverOut
    messages: list[MessageOut]


class SuggestionOut(msgspec.Struct, frozen=True, kw_only=True):
    """A reply the agent can edit before sending."""

    text: str


class CannedOut(msgspec.Struct, frozen=True, kw_only=True):
    """A canned response."""

    id: str
    team: str
    shortcut: str
    text: str
    updated_at: datetime

    @classmethod
    def of(cls, c: CannedResponse) -> CannedOut:
        """The answer for a stored canned response."""
        return cls(id=c.id, team=c.team, shortcut=c.shortcut, text=c.text, updated_at=c.updated_at)


class StatsOut(msgspec.Struct, frozen=True, kw_only=True):
    """Handover figures of one bot and team."""

    bot_id: str
    team: str
    waiting: int
    with_agents: int
    resolved: int
    returned_to_bot: int
    timed_out_to_bot: int
    first_response_seconds_avg: float | None
    first_response_seconds_max: float | None


class DeskAgentOut(AgentOut, frozen=True, kw_only=True):
    """An agent as the desk lists it, with its open handovers."""

    open_handovers: int


async def actor_of(services: Services, principal: Principal, tenant: str | None) -> Actor:
    """Who acts: the agent, the tenant's key, or the operator for the tenant it names (``?tenant=``)."""
    if principal.agent is not None:
        return Actor(tenant_id=principal.agent.tenant_id, agent=principal.agent)
    if principal.tenant_id is not None:
        return Actor(tenant_id=principal.tenant_id)
    if not tenant:
        raise PermissionDeniedException("the operator acts on the desk of one tenant: add ?tenant=<slug or id>")
    return Actor(tenant_id=(await visible_tenant(services, principal, tenant)).id)


Result = TypeVar("Result")


async def on_desk(
    services: Services, principal: Principal, tenant: str | None, act: Callable[[Actor], Awaitable[Result]]
) -> Result:
    """Run ``act`` as the caller (:func:`actor_of`); the desk's refusals become the HTTP errors they name."""
    actor = await actor_of(services, principal, tenant)
    try:
        return await act(actor)
    except DeskRefused as exc:
        raise refused(exc) from None


def one_key(header: str | None, body: str | None) -> str | None:
    """The message's idempotency key, from the header or the body (400 when they differ)."""
    if header is not None and body is not None and header != body:
        raise ValidationException("the Idempotency-Key header and client_message_id differ: send one key")
    return header if header is not None else body


def refused(exc: DeskRefused) -> HTTPException:
    """The desk's refusal as the HTTP error it names."""
    if exc.status == 404:
        return NotFoundException(exc.detail)
    if exc.status == 403:
        return PermissionDeniedException(exc.detail)
    if exc.status == 409:
        return ConflictException(exc.detail)
    return HTTPException(status_code=exc.status, detail=exc.detail)


class HandoverController(ApiController):
    """Handovers of the caller's tenant: the desk's queue and what agents do with it."""

    path = "/handovers"
    tags = ("desk",)
    opt = DESK

    @get(summary="List handovers", raises=DESK_READ_ERRORS)
    async def list_handovers(  # noqa: PLR0913, PLR0917 - Litestar passes them by name
        self,
        principal: PrincipalDep,
        services: ServicesDep,
        status: Annotated[
            str | None,
            QueryParameter(description="Comma-separated: waiting, assigned, with_agent, resolved, ...", max_length=200),
        ] = None,
        team: Annotated[str | None, QueryParameter(max_length=64)] = None,
        mine: Annotated[bool, QueryParameter(description="Only the calling agent's")] = False,
        bot: Annotated[str | None, QueryParameter(description="Only this bot's (its id)", max_length=200)] = None,
        resume: Annotated[
            str | None,
            QueryParameter(
                description="pending: closed handovers whose conversation the bot has not taken back yet",
                pattern="^pending$",
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        tenant: TenantQuery = None,
    ) -> list[HandoverOut]:
        """The tenant's handovers, oldest first (the queue's order); open ones when no status is given.

        ``resume=pending``: the closed ones whose resume failed and is retried (any closed status unless given).
        """
        actor = await actor_of(services, principal, tenant)
        try:
            statuses = statuses_of([s.strip() for s in status.split(",") if s.strip()]) if status else []
        except ValueError as exc:
            raise ValidationException(str(exc)) from None
        rows = await services.store.handovers.list_all(
            actor.tenant_id,
            statuses=statuses or (list(CLOSED_STATUSES) if resume else ["waiting", "assigned", "with_agent"]),
            team=team,
            agent_id=actor.agent_id if mine else None,
            bot_id=bot,
            resume_pending=resume == "pending",
            limit=limit,
        )
        return [HandoverOut.of(r) for r in rows]

    @get("/stats", summary="Handover figures", raises=DESK_READ_ERRORS)
    async def stats(
        self,
        principal: PrincipalDep,
        services: ServicesDep,
        bot: Annotated[str | None, QueryParameter(description="Only this bot's (its id)", max_length=200)] = None,
        tenant: TenantQuery = None,
    ) -> list[StatsOut]:
        """Per bot and team: waiting, with agents, resolved, returned and timed out; time to first response."""
        actor = await actor_of(services, principal, tenant)
        rows = await services.store.handovers.stats(actor.tenant_id, bot_id=bot)
        return [
            msgspec.convert(
                {k: (float(v) if k.startswith("first_response") and v is not None else v) for k, v in row.items()},
                StatsOut,
            )
            for row in rows
        ]

    @get("/{handover_id:str}", summary="Get a handover", raises=DESK_READ_ERRORS)
    async def get_handover(
        self, handover_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> HandoverDetail:
        """The handover with its summary, the conversation's transcript, private notes and transitions."""
        return await on_desk(services, principal, tenant, lambda actor: detail(services, actor, handover_id))

    @post("/{handover_id:str}/claim", summary="Claim a handover", raises=CONFLICT_ERRORS, status_code=200)
    async def claim(
        self, handover_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> HandoverOut:
        """The calling agent takes the handover (``with_agent``); 409 when another agent holds it."""
        return HandoverOut.of(await on_desk(services, principal, tenant, lambda a: services.desk.claim(a, handover_id)))

    @post("/{handover_id:str}/messages", summary="Answer the end user", raises=CONFLICT_ERRORS, status_code=201)
    async def send(  # noqa: PLR0917 - Litestar passes them by name
        self,
        handover_id: IdRef,
        data: JSONBody[MessageIn],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: IdempotencyHeader = None,
        tenant: TenantQuery = None,
    ) -> SentOut:
        """The agent's message, sent through the conversation's own channel (409 outside WhatsApp's 24 hours).

        With an ``Idempotency-Key`` header (or ``client_message_id``), the message is stored and
        delivered once: sent again with the same key, the first one is answered (409 for another text).
        """
        key = one_key(idempotency_key, data.client_message_id)

        async def send(actor: Actor) -> SentOut:
            sent = await services.desk.send(actor, handover_id, data.text, key)
            record = await services.desk.handover(actor.tenant_id, handover_id)
            return SentOut(handover=HandoverOut.of(record), messages=[MessageOut.of(m) for m in sent])

        return await on_desk(services, principal, tenant, send)

    @post("/{handover_id:str}/release", summary="Hand back to the bot", raises=CONFLICT_ERRORS, status_code=200)
    async def release(
        self,
        handover_id: IdRef,
        data: JSONBody[ReleaseIn],
        principal: PrincipalDep,
        services: ServicesDep,
        tenant: TenantQuery = None,
    ) -> HandoverOut:
        """Back to the bot (``returned_to_bot``): the graph resumes with the note, which the bot keeps in context."""
        note = data.note or None
        return HandoverOut.of(
            await on_desk(services, principal, tenant, lambda a: services.desk.release(a, handover_id, note))
        )

    @post("/{handover_id:str}/resolve", summary="Resolve a handover", raises=CONFLICT_ERRORS, status_code=200)
    async def resolve(
        self,
        handover_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        data: JSONBody[ResolveIn | None] = None,
        tenant: TenantQuery = None,
    ) -> HandoverOut:
        """The matter is closed (``resolved``): the resolution (``note``) is kept, the bot starts afresh."""
        note = (data.note if data is not None else None) or None
        return HandoverOut.of(
            await on_desk(services, principal, tenant, lambda a: services.desk.resolve(a, handover_id, note))
        )

    @post("/{handover_id:str}/resume", summary="Retry a pending resume now", raises=CONFLICT_ERRORS, status_code=200)
    async def resume(
        self, handover_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> HandoverOut:
        """Retry now the bot's resume of a closed handover whose resume failed (409 for an open handover).

        The answer says how it went: ``resumed_at`` set (the bot has the conversation, now or already),
        or the new ``resume_error``. A failed retry is not counted in ``resume_attempts``: the sweep's
        failures alone give the conversation back to the bot, so retrying during an outage never hastens it.
        """
        return HandoverOut.of(
            await on_desk(services, principal, tenant, lambda a: services.desk.retry_resume(a, handover_id))
        )

    @post(
        "/{handover_id:str}/take-back",
        summary="Take back a handover whose resume is pending",
        raises=CONFLICT_ERRORS,
        status_code=200,
    )
    async def take_back(
        self, handover_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> HandoverOut:
        """The calling agent takes back a closed handover the bot has not taken over yet (its resume failed).

        The handover is ``assigned`` to the agent again and its pending resume is cancelled: a person
        keeps answering, and what the user wrote meanwhile is the agent's. An agent's token only (403
        otherwise); 409 when the handover is open, or the bot has the conversation back already.
        """
        return HandoverOut.of(
            await on_desk(services, principal, tenant, lambda a: services.desk.take_back(a, handover_id))
        )

    @get("/{handover_id:str}/notes", summary="List a handover's notes", raises=DESK_READ_ERRORS)
    async def list_notes(
        self, handover_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> list[NoteOut]:
        """The handover's private notes, oldest first."""

        async def notes(actor: Actor) -> list[Note]:
            record = await services.desk.handover(actor.tenant_id, handover_id)
            return await services.store.handovers.notes(actor.tenant_id, record.id)

        return [NoteOut.of(n) for n in await on_desk(services, principal, tenant, notes)]

    @post("/{handover_id:str}/notes", summary="Add a private note", raises=DESK_WRITE_ERRORS, status_code=201)
    async def add_note(
        self,
        handover_id: IdRef,
        data: JSONBody[NoteIn],
        principal: PrincipalDep,
        services: ServicesDep,
        tenant: TenantQuery = None,
    ) -> NoteOut:
        """A note for the other agents; the end user never sees it."""
        return NoteOut.of(
            await on_desk(services, principal, tenant, lambda a: services.desk.add_note(a, handover_id, data.text))
        )

    @post("/{handover_id:str}/suggestion", summary="Suggest a reply", raises=CONFLICT_ERRORS, status_code=200)
    async def suggestion(
        self, handover_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> SuggestionOut:
        """A reply written by the bot's language model for the agent to edit; 409 when no model is configured."""
        return SuggestionOut(
            text=await on_desk(services, principal, tenant, lambda a: services.desk.suggest(a, handover_id))
        )


async def detail(services: Services, actor: Actor, handover_id: str) -> HandoverDetail:
    """One of the actor's tenant's handovers with its transcript, notes and transitions."""
    store = services.store
    record = await services.desk.handover(actor.tenant_id, handover_id)
    conversation = await store.conversations.get(actor.tenant_id, record.conversation_id)
    messages = await store.messages.list_all(actor.tenant_id, record.conversation_id, limit=500)
    return HandoverDetail(
        **msgspec.structs.asdict(HandoverOut.of(record)),
        channel=conversation.channel if conversation else "",
        user=conversation.user if conversation else None,
        messages=[MessageOut.of(m) for m in messages],
        notes=[NoteOut.of(n) for n in await store.handovers.notes(actor.tenant_id, record.id)],
        transitions=[TransitionOut.of(t) for t in await store.handovers.transitions(actor.tenant_id, record.id)],
    )


class CannedController(ApiController):
    """Canned responses of the caller's tenant, per team."""

    path = "/canned"
    tags = ("desk",)
    opt = DESK

    @get(summary="List canned responses", raises=DESK_READ_ERRORS)
    async def list_canned(
        self,
        principal: PrincipalDep,
        services: ServicesDep,
        team: Annotated[str | None, QueryParameter(description="A team's and every team's", max_length=64)] = None,
        tenant: TenantQuery = None,
    ) -> list[CannedOut]:
        """The tenant's canned responses by team and shortcut."""
        actor = await actor_of(services, principal, tenant)
        return [CannedOut.of(c) for c in await services.store.canned.list_all(actor.tenant_id, team)]

    @post(summary="Create a canned response", raises=[*DESK_WRITE_ERRORS, ConflictException])
    async def create_canned(
        self, data: JSONBody[CannedIn], principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> CannedOut:
        """A new canned response; 409 when the team has the shortcut already."""
        actor = await actor_of(services, principal, tenant)
        try:
            async with services.store.db.transaction():
                made = await services.store.canned.create(
                    actor.tenant_id, team=data.team, shortcut=data.shortcut, text=data.text
                )
                # Its team and shortcut, never its text.
                await record(
                    services,
                    audit_actor(principal),
                    "canned_response.created",
                    tenant_id=actor.tenant_id,
                    target=("canned_response", made.id),
                    details={"team": made.team, "shortcut": made.shortcut},
                )
        except Conflict as exc:
            raise ConflictException(str(exc)) from None
        return CannedOut.of(made)

    @patch("/{response_id:str}", summary="Change a canned response", raises=[*DESK_WRITE_ERRORS, ConflictException])
    async def update_canned(
        self,
        response_id: IdRef,
        data: JSONBody[CannedPatch],
        principal: PrincipalDep,
        services: ServicesDep,
        tenant: TenantQuery = None,
    ) -> CannedOut:
        """Change a canned response's shortcut or text."""
        actor = await actor_of(services, principal, tenant)
        shortcut = data.shortcut if isinstance(data.shortcut, str) else None
        text = data.text if isinstance(data.text, str) else None
        try:
            async with services.store.db.transaction():
                updated = await services.store.canned.update(actor.tenant_id, response_id, shortcut=shortcut, text=text)
                if updated is None:
                    raise NotFoundException(f"no canned response {response_id!r}")
                changed, fields = updated
                await record(
                    services,
                    audit_actor(principal),
                    "canned_response.updated",
                    tenant_id=actor.tenant_id,
                    target=("canned_response", changed.id),
                    details={"fields": fields},
                )
        except Conflict as exc:
            raise ConflictException(str(exc)) from None
        return CannedOut.of(changed)

    @delete("/{response_id:str}", summary="Delete a canned response", raises=DESK_READ_ERRORS)
    async def delete_canned(
        self, response_id: IdRef, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> None:
        """Remove a canned response."""
        actor = await actor_of(services, principal, tenant)
        async with services.store.db.transaction():
            if not await services.store.canned.delete(actor.tenant_id, response_id):
                raise NotFoundException(f"no canned response {response_id!r}")
            await record(
                services,
                audit_actor(principal),
                "canned_response.deleted",
                tenant_id=actor.tenant_id,
                target=("canned_response", str(as_uuid(response_id))),
            )


class DeskAgentController(ApiController):
    """The desk's agents: who is there, and the calling agent's own presence."""

    path = "/agents"
    tags = ("desk",)
    opt = DESK

    @get(summary="List the desk's agents", raises=DESK_READ_ERRORS)
    async def list_agents(
        self, principal: PrincipalDep, services: ServicesDep, tenant: TenantQuery = None
    ) -> list[DeskAgentOut]:
        """The tenant's agents with presence (away after a while without a heartbeat) and open handovers."""
        actor = await actor_of(services, principal, tenant)
        away = services.desk.away_after
        open_rows = await services.store.handovers.list_all(
            actor.tenant_id, statuses=["assigned", "with_agent"], limit=10_000
        )
        load: dict[str, int] = {}
        for row in open_rows:
            if row.agent_id:
                load[row.agent_id] = load.get(row.agent_id, 0) + 1
        return [
            DeskAgentOut(**msgspec.structs.asdict(AgentOut.of(a, away)), open_handovers=load.get(a.id, 0))
            for a in await services.store.agents.list_all(actor.tenant_id)
        ]

    @get("/me", summary="The calling agent", raises=DESK_READ_ERRORS)
    async def me(self, principal: PrincipalDep, services: ServicesDep) -> AgentOut:
        """The agent whose token calls (403 for a tenant's key)."""
        if principal.agent is None:
            raise PermissionDeniedException("only an agent's token has a 'me'")
        agent = await services.store.agents.get(principal.agent.tenant_id, principal.agent.id)
        if agent is None:
            raise NotFoundException("no such agent")
        return AgentOut.of(agent, services.desk.away_after)

    @post("/me/presence", summary="Desk heartbeat", raises=DESK_WRITE_ERRORS, status_code=200)
    async def presence(self, data: JSONBody[PresenceIn], principal: PrincipalDep, services: ServicesDep) -> AgentOut:
        """``available`` (waiting handovers get assigned) or ``away``; away by itself after a while without one."""
        if principal.agent is None:
            raise PermissionDeniedException("presence is an agent's (use an agent's token)")
        status: Presence = "available" if data.status == "available" else "away"
        agent = await on_desk(services, principal, None, lambda actor: services.desk.presence(actor, status))
        return AgentOut.of(agent, services.desk.away_after)


DESK_HANDLERS: list[ControllerRouterHandler] = [HandoverController, CannedController, DeskAgentController]

__all__ = ["DESK_HANDLERS", "HandoverController", "HandoverOut", "effective_presence"]
