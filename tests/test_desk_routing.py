"""The agent desk's routing: balanced assignment within capacity, oldest first, presence, nobody online,
business hours, the wait that hands the conversation back to the bot, and SLA alerts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from botloom.core.storage.repositories.agents import Agent
from botloom.runtime.desk import CLOSED_NOTICE, TIMEOUT_MESSAGE, TIMEOUT_NOTE, UNAVAILABLE_NOTICE, Actor, DeskRefused
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat


async def agent(
    services: Services, demo: DemoInfo, name: str, *, capacity: int = 5, teams: tuple[str, ...] = ()
) -> Agent:
    made, _ = await services.store.agents.create(
        demo.tenant.id, email=f"{name}@acme.test", name=name, password="pw-123456", capacity=capacity, teams=teams
    )
    return made


async def online(services: Services, someone: Agent) -> None:
    await services.desk.presence(Actor(someone.tenant_id, someone), "available")


async def escalate(services: Services, demo: DemoInfo, user: str) -> tuple[Chat, Any]:
    chat = Chat(services, demo.bot, user=user, channel="rest")
    result = await chat.say("I want to talk to a person")
    assert result.escalated
    record = await services.store.handovers.open_of(demo.tenant.id, chat.conversation_id or "")
    assert record is not None
    return chat, (record, result)


async def configure(services: Services, demo: DemoInfo, **config: Any) -> None:
    await services.store.plugin_settings.put(
        demo.tenant.id, demo.bot.id, "handoff", enabled=True, config=config, secrets={}
    )


async def test_balanced_assignment_within_capacity_oldest_first(services: Services, demo: DemoInfo) -> None:
    ann = await agent(services, demo, "ann", capacity=1)
    bob = await agent(services, demo, "bob", capacity=2)
    await online(services, ann)
    await online(services, bob)
    records = [(await escalate(services, demo, f"user-{i}"))[1][0] for i in range(5)]
    fresh = [await services.store.handovers.get(demo.tenant.id, r.id) for r in records]
    owners = [f.agent_id if f else None for f in fresh]
    assert {owners[0], owners[1]} == {ann.id, bob.id}, "the first two go to the two idle agents"
    assert owners[2] == bob.id, "ann is at her capacity of one: the third goes to bob"
    assert owners[3:] == [None, None], "everyone is at capacity: the rest wait"
    assert [f.status for f in fresh if f] == ["assigned", "assigned", "assigned", "waiting", "waiting"]

    anns = next(r for r, owner in zip(records, owners, strict=True) if owner == ann.id)
    await services.desk.claim(Actor(demo.tenant.id, ann), anns.id)
    await services.desk.resolve(Actor(demo.tenant.id, ann), anns.id)
    fourth = await services.store.handovers.get(demo.tenant.id, records[3].id)
    fifth = await services.store.handovers.get(demo.tenant.id, records[4].id)
    assert fourth is not None and fourth.agent_id == ann.id and fourth.status == "assigned", "oldest waiting first"
    assert fifth is not None and fifth.status == "waiting"


async def test_going_away_puts_unclaimed_handovers_back_for_another_agent(services: Services, demo: DemoInfo) -> None:
    ann = await agent(services, demo, "ann")
    await online(services, ann)
    _, (record, _) = await escalate(services, demo, "user-1")
    assigned = await services.store.handovers.get(demo.tenant.id, record.id)
    assert assigned is not None and assigned.agent_id == ann.id
    await services.desk.presence(Actor(demo.tenant.id, ann), "away")
    back = await services.store.handovers.get(demo.tenant.id, record.id)
    assert back is not None and back.status == "waiting" and back.agent_id is None
    bob = await agent(services, demo, "bob")
    await online(services, bob)
    taken = await services.store.handovers.get(demo.tenant.id, record.id)
    assert taken is not None and taken.agent_id == bob.id, "an agent coming online gets the waiting handover"
    steps = [
        (t.from_status, t.to_status) for t in await services.store.handovers.transitions(demo.tenant.id, record.id)
    ]
    assert steps == [(None, "waiting"), ("waiting", "assigned"), ("assigned", "waiting"), ("waiting", "assigned")]


async def test_nobody_online_the_bot_says_so_and_collects(services: Services, demo: DemoInfo) -> None:
    ann = await agent(services, demo, "ann")  # registered, never sent a heartbeat: away
    chat, (record, result) = await escalate(services, demo, "user-1")
    assert result.replies[-1].text == UNAVAILABLE_NOTICE
    assert "e-mail" in UNAVAILABLE_NOTICE
    assert record.status == "waiting" and record.summary["availability"] == "nobody_available"
    held = await chat.say("order 1234, reach me at pat@example.org")
    assert held.status == "for_agent" and held.replies == [], "what the user adds is kept for the agent"
    events = await services.store.events.after(demo.tenant.id, 0)
    assert events[-1].kind == "conversation.user_message" and events[-1].data["follow_up_email"] == "pat@example.org"
    await online(services, ann)
    now = await services.store.handovers.get(demo.tenant.id, record.id)
    assert now is not None and now.agent_id == ann.id


async def test_no_agents_at_all_keeps_the_usual_notice(services: Services, demo: DemoInfo) -> None:
    _, (record, result) = await escalate(services, demo, "user-1")
    assert "connecting you with a person" in result.replies[-1].text
    assert record.summary["availability"] == "no_agents"


async def test_outside_business_hours_the_notice_says_the_team_is_away(services: Services, demo: DemoInfo) -> None:
    await configure(services, demo, default_team="billing")
    await services.store.teams.put(demo.tenant.id, "billing", timezone="Europe/Berlin", hours={"mon": []})
    ann = await agent(services, demo, "ann", teams=("billing",))
    await online(services, ann)
    _, (record, result) = await escalate(services, demo, "user-1")
    assert result.replies[-1].text == CLOSED_NOTICE
    assert record.team == "billing" and record.summary["availability"] == "closed"
    still = await services.store.handovers.get(demo.tenant.id, record.id)
    assert still is not None and still.status == "waiting", "closed: not assigned, even to an agent online"

    await services.store.teams.delete(demo.tenant.id, "billing")  # open at every hour again
    _, (other, result) = await escalate(services, demo, "user-2")
    assert "connecting you with a person" in result.replies[-1].text
    assigned = await services.store.handovers.get(demo.tenant.id, other.id)
    assert assigned is not None and assigned.agent_id == ann.id


async def test_the_wait_ends_and_the_bot_takes_the_conversation_back(services: Services, demo: DemoInfo) -> None:
    await configure(services, demo, wait_minutes=0.005, first_response_minutes=0.001)
    chat, (record, _) = await escalate(services, demo, "user-1")
    deadline = time.monotonic() + 30
    swept: dict[str, int] = {"timed_out": 0}
    while swept["timed_out"] == 0:
        assert time.monotonic() < deadline, "the wait never ended"
        swept = await services.desk.sweep()
        await asyncio.sleep(0.05)
    done = await services.store.handovers.get(demo.tenant.id, record.id)
    assert done is not None and done.status == "timed_out_to_bot" and done.note == TIMEOUT_NOTE
    conversation = await services.store.conversations.get(demo.tenant.id, chat.conversation_id or "")
    assert conversation is not None and conversation.status == "open"
    transcript = await chat.transcript()
    assert transcript[-1] == ("outbound", TIMEOUT_MESSAGE), "the user is told"
    assert (await chat.state())["agent_note"] == TIMEOUT_NOTE
    again = await chat.say("where is my order 1236")
    assert not again.escalated and "1236" in again.replies[0].text, "the bot answers again"
    kinds = [e.kind for e in await services.store.events.after(demo.tenant.id, 0)]
    assert "handover.sla_missed" in kinds and kinds[-1] == "handover.timed_out_to_bot"
    assert (await services.desk.sweep())["timed_out"] == 0, "once"


async def test_a_suggested_reply_needs_a_language_model(services: Services, demo: DemoInfo) -> None:
    ann = await agent(services, demo, "ann")
    _, (record, _) = await escalate(services, demo, "user-1")
    with pytest.raises(DeskRefused) as refused:
        await services.desk.suggest(Actor(demo.tenant.id, ann), record.id)
    assert refused.value.status == 409 and "OPENAI_API_KEY" in refused.value.detail
