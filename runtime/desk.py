"""The agent desk: handovers routed to teams and agents, answered through the conversation's channel, handed back.

When a turn's graph pauses in ``escalate`` (:mod:`botloom.runtime.handover`), :meth:`Desk.opened`

1. opens the conversation's handover (``waiting``; a re-run of the turn finds the same one) with
   the graph's summary for the agent (reason, intent, slots, last messages, knowledge found);
2. picks its team: the bot's ``handoff`` plugin config maps intents to teams (``teams_by_intent``),
   else its ``default_team``, else none (any agent);
3. assigns it when the team is within its business hours: to the available agent of the team
   (a heartbeat within :attr:`Desk.away_after` seconds, ``BOTLOOM_DESK_AWAY_SECONDS``) with the
   fewest open handovers, within each agent's capacity, oldest waiting handover first
   (:meth:`HandoverRepository.assign_next`);
4. words the notice the user gets: the intent's own ("I'm connecting you with a person"), or,
   when the team is closed or the tenant has agents but none is available with room, a notice
   that says so, asks for the details an agent will need and offers a follow-up by e-mail.

Agents then claim (:meth:`Desk.claim`: one conditional update under the row's lock, so of two
agents claiming at once in two processes one wins and the other is told who holds it), answer
(:meth:`Desk.send`: the reply goes through the graph, is stored as the conversation's outbound
message and leaves through the conversation's own channel: a push channel's delivery job with its
retries and dead letters, web chat's socket, REST's transcript), and hand back with a note
(:meth:`Desk.release`: the graph resumes with ``Command(resume={"action": "handback", "note": ...})``
and the bot answers the next message with the history and the note in context) or resolve
(:meth:`Desk.resolve`: the matter is closed, the resolution kept on the handover, and the bot
starts the next message afresh). A close is recorded first and the graph resumed after; a resume
that fails is reported (``handover.resume_failed``, with the error's type, kept as the handover's
``resume_error``) and retried by the sweep (or at once: :meth:`Desk.retry_resume`), then given back
to the bot without it. The close's event says whether the bot took over with it (``resumed``); a
later resume is a ``handover.resumed`` event with the bot's answers to what the user wrote meanwhile,
so the user hears "the bot is back" only when it is. Messages may carry an idempotency key: sent
twice, one is stored, delivered and announced.

The ``desk_sweep`` cron job (:meth:`Desk.sweep`, every minute) hands back the handovers no agent
took within the bot's ``wait_minutes`` (``timed_out_to_bot``, with a message to the user), retries
the failed resumes of closed handovers, reports missed SLA deadlines (first response, resolution)
as ``handover.sla_missed`` events, and refreshes the waiting gauge. Every transition is an event
(:mod:`botloom.runtime.events`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from botloom.core.domain import Bot, Conversation, StoredMessage
from botloom.core.host import PluginHost
from botloom.core.messages import utcnow
from botloom.core.metrics import HANDOVER_FIRST_RESPONSE, HANDOVER_SLA_MISSED, HANDOVERS, HANDOVERS_WAITING
from botloom.core.statuses import OutboundStatus
from botloom.core.storage.repositories import Store
from botloom.core.storage.repositories.agents import Agent, Presence, Team
from botloom.core.storage.repositories.handovers import OPEN_STATUSES, HandoverRecord, HandoverStatus, Moved
from botloom.runtime.handover import Handover, KeyReused, NotWithPerson, with_person
from botloom.runtime.queue import JobFunction

if TYPE_CHECKING:
    from botloom.graphs.engines import Engine
    from botloom.runtime.delivery import Deliveries
    from botloom.runtime.events import Events
    from botloom.runtime.runner import TurnRunner

logger = logging.getLogger(__name__)

HANDOFF_PLUGIN = "handoff"
"""The built-in plugin whose per-bot config says how the bot's handovers are routed (:class:`DeskConfig`)."""
SWEEP_CRON = "* * * * *"
"""When ``desk_sweep`` runs (every minute)."""
AWAY_AFTER = 90.0
"""Seconds without a heartbeat after which an agent counts as away (the default of ``BOTLOOM_DESK_AWAY_SECONDS``)."""
RESUME_ATTEMPTS = 5
"""Failed resumes of a closed handover's graph after which the conversation is given back to the bot without one."""
WHATSAPP_WINDOW = timedelta(hours=24)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

UNAVAILABLE_NOTICE = (
    "Everyone on our team is busy right now. Tell me what you need, with any order number or details, and an "
    "e-mail address if you would like us to follow up by e-mail: a person will reply here as soon as one is free."
)
CLOSED_NOTICE = (
    "Our team is away right now and will be back during business hours. Tell me what you need, with any details, "
    "and leave an e-mail address if you would like a person to follow up by e-mail."
)
TIMEOUT_MESSAGE = (
    "Sorry, nobody from our team could answer in time. I'm back to help you in the meantime; if you left an "
    "e-mail address, a person will follow up there."
)
TIMEOUT_NOTE = "No agent answered within the wait; the bot took the conversation back."

Minutes = Annotated[float, msgspec.Meta(gt=0, le=43_200)]
Notice = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class DeskConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one bot's handovers are routed and timed: the ``handoff`` plugin's config (defaults without it)."""

    default_team: TeamName | None = None
    teams_by_intent: dict[str, TeamName] = {}
    wait_minutes: Minutes | None = 15.0
    """How long a handover waits for an agent before the bot takes the conversation back (``None``: for ever)."""
    first_response_minutes: Minutes | None = 5.0
    """SLA: an agent's first reply is due within this; a miss is a ``handover.sla_missed`` event."""
    resolution_minutes: Minutes | None = 240.0
    """SLA: the handover is due to be closed within this."""
    unavailable_notice: Notice = UNAVAILABLE_NOTICE
    closed_notice: Notice = CLOSED_NOTICE
    timeout_message: Notice = TIMEOUT_MESSAGE


class DeskRefused(Exception):
    """The desk cannot do what was asked: ``status`` is the HTTP status that says why (404, 403, 409, 422)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Actor:
    """Who acts on the desk: an agent, or the tenant's key / the operator (``agent`` ``None``: a supervisor)."""

    tenant_id: str
    agent: Agent | None = None

    @property
    def agent_id(self) -> str | None:
        """The agent's id, if an agent acts."""
        return self.agent.id if self.agent is not None else None

    @property
    def name(self) -> str:
        """How the conversation names who acted."""
        return self.agent.name if self.agent is not None else "supervisor"


@dataclass
class Resumed:
    """What :meth:`Desk._resume` did with a closed handover's conversation."""

    back: bool = False
    """The bot has the conversation (the graph resumed, or the conversation was given back without it)."""
    first: bool = False
    """This call recorded it (the handover's ``resumed_at``): whoever gets ``first`` tells the user."""
    failure: dict[str, Any] | None = None
    """The ``handover.resume_failed`` event's data, when the resume failed."""
    answers: list[StoredMessage] = field(default_factory=list)
    """The bot's answers to what the user wrote while the resume was pending."""


def is_open(team: Team | None, moment: datetime) -> bool:
    """Whether ``team`` is within its business hours at ``moment`` (no team or no hours: always)."""
    if team is None or not team.hours:
        return True
    try:
        zone = ZoneInfo(team.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = moment.astimezone(zone)
    now = local.strftime("%H:%M")
    return any(start <= now < end for start, end in team.hours.get(DAYS[local.weekday()], []))


def effective_presence(agent: Agent, away_after: float, moment: datetime | None = None) -> Presence:
    """``available`` only while the agent's heartbeats keep coming (within ``away_after`` seconds)."""
    if agent.presence != "available" or agent.last_seen_at is None:
        return "away"
    fresh = (moment or utcnow()) - agent.last_seen_at <= timedelta(seconds=away_after)
    return "available" if fresh else "away"


class Desk:
    """The agent desk's routing, assignment, answers, hand-backs and timeouts (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        host: PluginHost,
        runner: TurnRunner,
        deliveries: Deliveries,
        events: Events,
        engine: Engine,
        away_after: float | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.runner = runner
        self.deliveries = deliveries
        self.events = events
        self.engine = engine
        settings = getattr(runner, "settings", None)
        self.away_after: float = (
            away_after if away_after is not None else float(getattr(settings, "desk_away_seconds", AWAY_AFTER))
        )
        """Seconds without a heartbeat after which an agent counts as away (``BOTLOOM_DESK_AWAY_SECONDS``)."""

    # -- reading ------------------------------------------------------------------------------

    async def config(self, bot: Bot) -> DeskConfig:
        """The bot's desk config: its ``handoff`` plugin config, or the defaults."""
        setting = await self.store.plugin_settings.get(bot.tenant_id, bot.id, HANDOFF_PLUGIN)
        if setting is None or not setting.config:
            return DeskConfig()
        try:
            return msgspec.convert(dict(setting.config), DeskConfig, strict=False)
        except msgspec.ValidationError as exc:
            logger.warning("bot %s: its %s config is unusable (%s); desk defaults apply", bot.id, HANDOFF_PLUGIN, exc)
            return DeskConfig()

    async def handover(self, tenant_id: str, handover_id: str) -> HandoverRecord:
        """One of the tenant's handovers; 404 when it has none with this id."""
        found = await self.store.handovers.get(tenant_id, handover_id)
        if found is None:
            raise DeskRefused(404, f"no handover {handover_id!r}")
        return found

    def reply_status(self, channel: str) -> OutboundStatus:
        """``pending`` for a push channel's reply (a delivery job sends it), ``sent`` for REST and web chat."""
        adapter = self.host.registry.channels.get(channel)
        return "sent" if adapter is not None and adapter.kind != "push" else "pending"

    # -- a conversation goes to a person ---------------------------------------------------------

    async def opened(self, bot: Bot, conversation: Conversation, handover: Handover) -> Handover:
        """Open, route and assign the conversation's handover; the handover with the notice its user gets."""
        config = await self.config(bot)
        summary = dict(handover.summary)
        intent = summary.get("intent")
        team = config.teams_by_intent.get(str(intent)) if intent else None
        team = team or config.default_team
        team_row = await self.store.teams.get(bot.tenant_id, team) if team else None
        now = utcnow()
        open_now = is_open(team_row, now)
        counted = await self.store.agents.count_available(bot.tenant_id, team, self.away_after)
        agents, free = counted["agents"], counted["free"]  # free: available, with room below their capacity
        notice: str | None
        if not open_now:
            availability, notice = "closed", config.closed_notice
        elif agents and not free:
            availability, notice = "nobody_available", config.unavailable_notice
        else:
            availability, notice = ("available" if free else "no_agents"), handover.notice
        summary |= {"channel": conversation.channel, "user": conversation.user, "availability": availability}
        record, new = await self.store.handovers.open(
            bot.tenant_id,
            bot_id=bot.id,
            conversation_id=conversation.id,
            reason=handover.reason,
            team=team,
            summary=summary,
            wait_until=_after(now, config.wait_minutes),
            first_response_due=_after(now, config.first_response_minutes),
            resolution_due=_after(now, config.resolution_minutes),
        )
        if new:
            HANDOVERS.labels(bot.id, team or "", "opened").inc()
            await self.emit(record, "handover.waiting", handover_data(record))
            if open_now:
                await self.assign_waiting(bot.tenant_id)
            await self.refresh_gauge()
        return handover.with_notice(notice)

    async def held(self, bot: Bot, conversation: Conversation, messages: Sequence[StoredMessage]) -> None:
        """The user wrote while with a person: the desk hears of it (and of an e-mail address for a follow-up)."""
        record = await self.store.handovers.open_of(bot.tenant_id, conversation.id)
        for message in messages:
            data: dict[str, Any] = {"message_id": message.id, "text": message.text}
            if record is not None:
                data["handover_id"] = record.id
                email = EMAIL.search(message.text)
                if email:
                    data["follow_up_email"] = email.group(0)
            await self._emit(bot.tenant_id, "conversation.user_message", conversation.id, data)

    async def assign_waiting(self, tenant_id: str, *, limit: int = 50) -> list[HandoverRecord]:
        """Assign the tenant's waiting handovers, oldest first, while an available agent can take one."""
        assigned: list[HandoverRecord] = []
        for _ in range(limit):
            found = await self.store.handovers.assign_next(tenant_id, away_after=self.away_after)
            if found is None:
                break
            record, _agent = found
            assigned.append(record)
            HANDOVERS.labels(record.bot_id, record.team or "", "assigned").inc()
            await self.emit(record, "handover.assigned", {**handover_data(record), "by": "routing"})
        return assigned

    # -- agents act --------------------------------------------------------------------------------

    async def claim(self, actor: Actor, handover_id: str) -> HandoverRecord:
        """The agent takes the handover (``with_agent``); 409 when another agent holds it or it is closed."""
        await self.handover(actor.tenant_id, handover_id)  # 404 first: a key learns nothing of others' handovers
        if actor.agent is None:
            raise DeskRefused(403, "only an agent may claim a handover (use an agent's token)")
        moved = await self.store.handovers.move(
            actor.tenant_id,
            handover_id,
            "with_agent",
            allowed=("waiting", "assigned", "with_agent"),  # with_agent: one whose agent was deleted
            actor=actor.agent_id,
            own=True,
            take=True,
            detail={"by": "claim"},
        )
        record = self._settled(moved, handover_id, actor, "with_agent")
        if moved.moved:
            await self.emit(record, "handover.claimed", {**handover_data(record), "agent_name": actor.name})
            await self.refresh_gauge()
        return record

    async def send(self, actor: Actor, handover_id: str, text: str, key: str | None = None) -> list[StoredMessage]:
        """The agent's message to the end user, through the conversation's own channel; the stored replies.

        With an idempotency ``key`` (per handover), a message sent again with the same key is
        neither stored, resumed nor delivered again: the first one is answered (409 for another text).
        """
        record = await self.handover(actor.tenant_id, handover_id)
        if actor.agent is None:
            raise DeskRefused(403, "only an agent may answer a handover (use an agent's token)")
        keyed = f"{record.id}:{key}" if key else None
        if keyed is not None:
            bot, conversation = await self._parties(record)
            sent = await self.runner.handovers.sent_with_key(bot, conversation, keyed)
            if sent is not None:
                if sent.text != text:
                    raise DeskRefused(409, f"the idempotency key {key!r} was used for another message")
                return [sent]
        if record.status == "assigned" and record.agent_id == actor.agent_id:
            record = await self.claim(actor, handover_id)
        if record.status != "with_agent" or record.agent_id != actor.agent_id:
            raise DeskRefused(409, _not_yours(record, "claim it before answering"))
        bot, conversation = await self._parties(record)
        await self._check_window(conversation)
        try:
            result = await self.runner.handovers.agent_action(
                bot,
                conversation.id,
                text=text,
                agent=actor.name,
                key=keyed,
                reply_status=self.reply_status(conversation.channel),
                metadata={"agent_id": actor.agent_id, "handover_id": record.id},
            )
        except KeyReused:
            raise DeskRefused(409, f"the idempotency key {key!r} was used for another message") from None
        except (LookupError, ValueError) as exc:
            raise DeskRefused(409, f"the conversation cannot take an agent's message: {exc}") from None
        if result.duplicate:  # sent at once twice: the other call stored, delivered and announced it
            return result.replies
        await self._deliver(conversation, result.turn_id or record.id)
        if await self.store.handovers.responded(actor.tenant_id, record.id):
            seconds = (utcnow() - record.created_at).total_seconds()
            HANDOVER_FIRST_RESPONSE.labels(record.bot_id, record.team or "").observe(max(0.0, seconds))
        for reply in result.replies:
            data = {**handover_data(record), "message_id": reply.id, "text": reply.text}
            await self.emit(record, "handover.message", data | {"agent_name": actor.name})
        return result.replies

    async def release(self, actor: Actor, handover_id: str, note: str | None) -> HandoverRecord:
        """Back to the bot with the agent's note (``returned_to_bot``): the graph resumes.

        The bot answers the next message with the conversation's history and the note in context.
        """
        return await self._close(actor, handover_id, "returned_to_bot", note)

    async def resolve(self, actor: Actor, handover_id: str, note: str | None = None) -> HandoverRecord:
        """The matter is closed (``resolved``): the next message starts afresh with the bot.

        The handover keeps its summary and the resolution (``note``); the graph resumes and is left
        with no history, slots or note.
        """
        return await self._close(actor, handover_id, "resolved", note)

    async def add_note(self, actor: Actor, handover_id: str, text: str) -> Any:
        """A private note on the handover for the other agents (never sent to the end user)."""
        record = await self.handover(actor.tenant_id, handover_id)
        note = await self.store.handovers.add_note(actor.tenant_id, record.id, actor.agent_id, text)
        if note is None:
            raise DeskRefused(404, f"no handover {handover_id!r}")
        data = {**handover_data(record), "note_id": note.id, "text": text, "agent_name": actor.name}
        await self.emit(record, "handover.note", data)
        return note

    async def presence(self, actor: Actor, status: Presence) -> Agent:
        """The desk's heartbeat: available agents get waiting handovers; going away returns unclaimed ones."""
        if actor.agent is None:
            raise DeskRefused(403, "presence is an agent's (use an agent's token)")
        agent = await self.store.agents.heartbeat(actor.tenant_id, actor.agent.id, status)
        if agent is None:
            raise DeskRefused(404, "no such agent")
        requeued = await self.store.handovers.unassign(actor.tenant_id, agent.id) if status == "away" else []
        await self.requeued(actor.tenant_id, requeued, by="presence")
        return agent

    async def requeued(self, tenant_id: str, handover_ids: list[str], *, by: str) -> None:
        """Announce handovers put back in the queue (``handover.waiting``, with ``by``), then assign waiting ones."""
        for handover_id in handover_ids:
            record = await self.store.handovers.get(tenant_id, handover_id)
            if record is not None:
                await self.emit(record, "handover.waiting", {**handover_data(record), "by": by})
        await self.assign_waiting(tenant_id)

    async def suggest(self, actor: Actor, handover_id: str) -> str:
        """A reply the agent can edit, written by the bot's language model; 409 without one."""
        from botloom.graphs.llm import LLMEngine

        record = await self.handover(actor.tenant_id, handover_id)  # 404 before 409
        if not isinstance(self.engine, LLMEngine):
            raise DeskRefused(409, "no language model is configured (set OPENAI_API_KEY) to suggest a reply")
        bot, conversation = await self._parties(record)
        messages = await self.store.messages.list_all(actor.tenant_id, conversation.id, limit=500)
        return await suggest_reply(self.engine, bot, record, messages[-30:])

    # -- the cron job -------------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Cron job: hand back handovers whose wait ended, retry failed resumes, report missed SLAs, set the gauge."""
        timed_out = resumed = 0
        for tenant_id, handover_id in await self.store.handovers.timed_out():
            try:
                timed_out += await self._time_out(tenant_id, handover_id)
            except Exception:
                logger.exception("handover %s could not be handed back after its wait", handover_id)
        for record in await self.store.handovers.resume_pending():
            try:
                done = await self._retry(record)
            except Exception:
                logger.exception("handover %s: its resume could not be retried", record.id)
                continue
            resumed += done.failure is None
        alerts = await self.store.handovers.missed_deadlines()
        for alert in alerts:
            HANDOVER_SLA_MISSED.labels(alert.bot_id, alert.team or "", alert.kind).inc()
            data = {"handover_id": alert.handover_id, "bot_id": alert.bot_id, "team": alert.team}
            data |= {"sla": alert.kind, "due": alert.due.isoformat()}
            await self._emit(alert.tenant_id, "handover.sla_missed", alert.conversation_id, data)
        await self.refresh_gauge()
        return {"timed_out": timed_out, "resumed": resumed, "sla_missed": len(alerts)}

    async def retry_resume(self, actor: Actor, handover_id: str) -> HandoverRecord:
        """Retry now the resume of a closed handover the bot has not taken back (as the sweep would).

        A handover the bot has taken back already is answered as it is (the sweep may have been
        first); an open one is a 409.
        """
        record = await self.handover(actor.tenant_id, handover_id)
        if record.status in OPEN_STATUSES:
            raise DeskRefused(409, f"handover {record.id} is {record.status}: it has no resume to retry")
        if record.resumed_at is None:
            await self._retry(record, counted=False)  # an agent's click during an outage never hastens the give-back
        return await self.handover(actor.tenant_id, record.id)

    async def take_back(self, actor: Actor, handover_id: str) -> HandoverRecord:
        """The agent takes back a closed handover whose resume is pending: a person keeps answering.

        The handover is ``assigned`` to the agent again and its pending resume cancelled; the
        conversation never left the person (its graph is still paused), so what the user wrote
        meanwhile is the agent's to answer. Under the conversation's lock, so no resume runs
        meanwhile: 409 when the bot has it back already, or another handover holds it.
        """
        record = await self.handover(actor.tenant_id, handover_id)  # 404 first
        if actor.agent is None:
            raise DeskRefused(403, "only an agent may take a conversation back (use an agent's token)")
        if record.status in OPEN_STATUSES or record.resumed_at is not None:
            raise DeskRefused(
                409, f"handover {record.id} is {record.status}: only one whose resume is pending can be taken back"
            )
        bot, conversation = await self._parties(record)
        async with self.runner.locks.hold(conversation.id):
            current = await self.store.conversations.get(bot.tenant_id, conversation.id)
            if current is None or not with_person(current):
                raise DeskRefused(409, f"handover {record.id}: the bot has the conversation back already")
            if await self.store.handovers.open_of(bot.tenant_id, conversation.id) is not None:
                raise DeskRefused(409, f"handover {record.id}: another handover holds the conversation")
            taken = await self.store.handovers.take_back(
                actor.tenant_id, record.id, actor.agent.id, detail={"by": "take_back"}
            )
        if taken is None:
            raise DeskRefused(409, f"handover {record.id}: the bot has the conversation back already")
        HANDOVERS.labels(taken.bot_id, taken.team or "", "taken_back").inc()
        await self.emit(taken, "handover.taken_back", {**handover_data(taken), "agent_name": actor.name})
        await self.refresh_gauge()
        return taken

    async def _retry(self, record: HandoverRecord, *, counted: bool = True) -> Resumed:
        """Resume a closed handover's conversation again; its events (a failure, and the bot back late).

        ``counted=False`` (an agent's "Retry now"): a failure does not count toward the give-back.
        """
        done = await self._resume(record, await self._closer(record), counted=counted)
        if done.failure is not None:
            await self.emit(record, "handover.resume_failed", done.failure)
        if done.first:
            await self.emit(record, "handover.resumed", await self._back_data(record, done))
        return done

    async def _back_data(self, record: HandoverRecord, done: Resumed) -> dict[str, Any]:
        """The ``handover.resumed`` event's data: the bot has the conversation back after a failed resume."""
        data = {**handover_data(record), "given_back": done.failure is not None, **_answers(done)}
        if record.status == "timed_out_to_bot":
            bot, _ = await self._parties(record)
            data["text"] = (await self.config(bot)).timeout_message
        return data

    def jobs(self) -> dict[str, JobFunction]:
        """The desk's job functions (``desk_sweep``, a cron job of the deliveries queue)."""
        return {"desk_sweep": self.sweep}

    async def refresh_gauge(self) -> None:
        """Set ``botloom_handovers_waiting`` from the database (every process sees the same figures)."""
        rows = await self.store.handovers.waiting_counts()
        HANDOVERS_WAITING.clear()
        for row in rows:
            HANDOVERS_WAITING.labels(row["bot_id"], row["team"]).set(int(row["waiting"]))

    # -- helpers ---------------------------------------------------------------------------------

    async def _time_out(self, tenant_id: str, handover_id: str) -> int:
        moved = await self.store.handovers.move(
            tenant_id,
            handover_id,
            "timed_out_to_bot",
            allowed=("waiting", "assigned"),
            note=TIMEOUT_NOTE,
            detail={"by": "timeout"},
        )
        if not moved.moved or moved.handover is None:
            return 0
        record = moved.handover
        bot, _ = await self._parties(record)
        config = await self.config(bot)
        done = await self._resume(record, "botloom")
        HANDOVERS.labels(record.bot_id, record.team or "", "timed_out_to_bot").inc()
        data = {**handover_data(record), "text": config.timeout_message, "resumed": done.back, **_answers(done)}
        await self.emit(record, "handover.timed_out_to_bot", data)
        if done.failure is not None:
            await self.emit(record, "handover.resume_failed", done.failure)
        return 1

    async def _close(self, actor: Actor, handover_id: str, to: HandoverStatus, note: str | None) -> HandoverRecord:
        moved = await self.store.handovers.move(
            actor.tenant_id,
            handover_id,
            to,
            allowed=OPEN_STATUSES,
            actor=actor.agent_id,
            own=actor.agent is not None,
            note=note,
            detail={"by": actor.name},
        )
        if moved.handover is None:
            raise DeskRefused(404, f"no handover {handover_id!r}")
        if not moved.moved:
            raise DeskRefused(409, _not_yours(moved.handover, "claim it first"))
        record = moved.handover
        done = await self._resume(record, actor.name)
        HANDOVERS.labels(record.bot_id, record.team or "", to).inc()
        data = {**handover_data(record), "agent_name": actor.name, "note": note, "resumed": done.back, **_answers(done)}
        await self.emit(record, f"handover.{to}", data)
        if done.failure is not None:
            await self.emit(record, "handover.resume_failed", done.failure)
        await self.assign_waiting(actor.tenant_id)  # the agent has room for the next one
        await self.refresh_gauge()
        return await self.store.handovers.get(actor.tenant_id, record.id) or record

    async def _resume(self, record: HandoverRecord, agent: str, *, counted: bool = True) -> Resumed:
        """Give a closed handover's conversation back to the bot; what happened (:class:`Resumed`).

        The graph resumes (see :meth:`release`, :meth:`resolve`; a timed-out one's user gets the
        timeout message). When it fails, ``failure`` is the ``handover.resume_failed`` event's data
        (with the error's type name, never its text): the desk's sweep retries it, and after
        :data:`RESUME_ATTEMPTS` failures the conversation is given back to the bot without the resume,
        so the user is never left with nobody answering. Once the bot has it, what the user wrote
        meanwhile is answered (``answers``). ``counted=False``: a failure is recorded but not counted
        toward the give-back. A handover an agent took back (:meth:`take_back`) is not resumed.
        """
        try:
            bot, conversation = await self._parties(record)
        except DeskRefused:  # the conversation is gone: nothing to give back
            first = await self.store.handovers.resumed(record.tenant_id, record.id)
            return Resumed(back=True, first=first)
        timed_out = record.status == "timed_out_to_bot"
        try:
            result = await self.runner.handovers.agent_action(
                bot,
                conversation.id,
                text=(await self.config(bot)).timeout_message if timed_out else "",
                handback=True,
                fresh=record.status == "resolved",
                closing=True,
                agent=agent,
                note=None if record.status == "resolved" else record.note,
                reply_status=self.reply_status(conversation.channel),
                metadata={"handover_id": record.id},
            )
        except (LookupError, NotWithPerson):
            current = await self.store.handovers.get(record.tenant_id, record.id)
            if current is not None and current.status in OPEN_STATUSES:
                return Resumed()  # an agent took it back: its resume is cancelled, the person keeps answering
            # else the bot has it already (another process resumed it), or a new handover holds its pause
        except Exception as exc:
            error = type(exc).__name__
            attempts = await self.store.handovers.resume_failed(record.tenant_id, record.id, error, count=counted)
            logger.exception("handover %s: the bot could not take its conversation back (%d)", record.id, attempts)
            failure = {**handover_data(record), "attempt": attempts, "error": error, "given_back": False}
            if not counted or attempts < RESUME_ATTEMPTS:
                return Resumed(failure=failure)
            failure["given_back"] = await self.runner.handovers.give_back(bot, conversation.id)
            first = await self.store.handovers.resumed(record.tenant_id, record.id)
            answers = await self._answer_held(bot, conversation, record)
            return Resumed(back=True, first=first, failure=failure, answers=answers)
        else:
            if result.replies:
                await self._deliver(conversation, result.turn_id or record.id)
        first = await self.store.handovers.resumed(record.tenant_id, record.id)
        return Resumed(back=True, first=first, answers=await self._answer_held(bot, conversation, record))

    async def _answer_held(self, bot: Bot, conversation: Conversation, record: HandoverRecord) -> list[StoredMessage]:
        """Let the bot answer what the user wrote between the handover's close and the bot taking it back.

        Those messages were held for a person who had gone; the bot's answers.
        """
        if record.closed_at is None:
            return []
        if not await self.store.messages.release_held(bot.tenant_id, conversation.id, record.closed_at):
            return []
        answers: list[StoredMessage] = []
        for result in await self.runner.process(bot, conversation.id, wait=True):
            if result.replies:
                answers += result.replies
                await self._deliver(conversation, result.turn_id or record.id)
        return answers

    async def _closer(self, record: HandoverRecord) -> str:
        """Who closed the handover, as the conversation names them (its agent, or botloom for a timeout)."""
        if record.status == "timed_out_to_bot":
            return "botloom"
        agent = await self.store.agents.get(record.tenant_id, record.agent_id) if record.agent_id else None
        return agent.name if agent is not None else "supervisor"

    def _settled(self, moved: Moved, handover_id: str, actor: Actor, to: HandoverStatus) -> HandoverRecord:
        record = moved.handover
        if record is None:
            raise DeskRefused(404, f"no handover {handover_id!r}")
        if moved.moved or (record.status == to and record.agent_id == actor.agent_id):
            return record
        raise DeskRefused(409, _not_yours(record, "it cannot be claimed"))

    async def _parties(self, record: HandoverRecord) -> tuple[Bot, Conversation]:
        bot = await self.store.bots.get(record.tenant_id, record.bot_id)
        conversation = await self.store.conversations.get(record.tenant_id, record.conversation_id)
        if bot is None or conversation is None:
            raise DeskRefused(404, f"handover {record.id}'s conversation no longer exists")
        return bot, conversation

    async def _check_window(self, conversation: Conversation) -> None:
        """WhatsApp's customer-service window: a free-form message only within 24 h of the user's last one."""
        who = conversation.user or conversation.external_key
        if not who.startswith("whatsapp:"):
            return
        last = await self.store.handovers.last_inbound_at(conversation.tenant_id, conversation.id)
        if last is None or utcnow() - last > WHATSAPP_WINDOW:
            raise DeskRefused(
                409,
                "the user's last WhatsApp message is more than 24 hours old: WhatsApp allows only an approved "
                "template message outside its customer-service window (send one through Twilio's Content API)",
            )

    async def _deliver(self, conversation: Conversation, trigger: str) -> None:
        if self.reply_status(conversation.channel) == "pending":
            await self.deliveries.schedule(conversation.tenant_id, conversation.id, trigger=f"desk-{trigger}")

    async def emit(self, record: HandoverRecord, kind: str, data: Mapping[str, Any]) -> None:
        """An event about a handover, in its conversation's stream."""
        await self._emit(record.tenant_id, kind, record.conversation_id, data)

    async def _emit(self, tenant_id: str, kind: str, conversation_id: str | None, data: Mapping[str, Any]) -> None:
        try:
            await self.events.emit(tenant_id, kind, conversation_id=conversation_id, data=dict(data))
        except Exception:
            logger.exception("event %s of conversation %s could not be emitted", kind, conversation_id)


def handover_data(record: HandoverRecord) -> dict[str, Any]:
    """What every handover event carries about its handover."""
    return {
        "handover_id": record.id,
        "bot_id": record.bot_id,
        "team": record.team,
        "status": record.status,
        "agent_id": record.agent_id,
        "reason": record.reason,
    }


def _answers(done: Resumed) -> dict[str, Any]:
    """The bot's answers to the messages held while the resume was pending, for the event that says it is back."""
    if not done.answers:
        return {}
    return {"answers": [{"message_id": m.id, "text": m.text} for m in done.answers]}


def _after(moment: datetime, minutes: float | None) -> datetime | None:
    return moment + timedelta(minutes=minutes) if minutes is not None else None


def _not_yours(record: HandoverRecord, hint: str) -> str:
    if record.status not in OPEN_STATUSES:
        return f"handover {record.id} is {record.status}"
    if record.agent_id is not None:
        return f"handover {record.id} is held by agent {record.agent_id} ({record.status})"
    return f"handover {record.id} is {record.status}: {hint}"


async def suggest_reply(engine: Any, bot: Bot, record: HandoverRecord, messages: Sequence[StoredMessage]) -> str:
    """Ask the bot's model for a reply the agent can edit, from the summary and the transcript."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    summary = record.summary
    system = "\n\n".join(
        [
            bot.settings.persona,
            "You are drafting the next reply of a human support agent who took over this conversation from the "
            "bot. Write only the reply text, in the agent's voice, short and concrete.",
            f"Why the conversation came to a person: {record.reason}.",
            f"What the bot found: intent {summary.get('intent')}, details {summary.get('slots') or {}}.",
        ]
    )
    history = [
        (HumanMessage if m.direction == "inbound" else AIMessage)(content=m.text) for m in messages if m.text.strip()
    ]
    client = engine.client(bot)
    answer = await client.ainvoke([SystemMessage(content=system), *history])
    text = answer.content if isinstance(answer.content, str) else str(answer.content)
    if not text.strip():
        raise DeskRefused(422, "the model suggested nothing")
    return text.strip()


__all__ = [
    "AWAY_AFTER",
    "HANDOFF_PLUGIN",
    "RESUME_ATTEMPTS",
    "SWEEP_CRON",
    "Actor",
    "Desk",
    "DeskConfig",
    "DeskRefused",
    "Resumed",
    "effective_presence",
    "handover_data",
    "is_open",
]
