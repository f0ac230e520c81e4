"""Human handoff: the intent "talk to a person", which ends the turn in ``escalate``.

Its per-bot config says how the agent desk routes and times the bot's handovers (docs/desk.md):
the team of each intent, how long a handover waits for an agent before the bot takes the
conversation back, the SLA deadlines, and what the user is told when nobody can answer.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from botloom import Intent, hookimpl

Minutes = Annotated[float, msgspec.Meta(gt=0, le=43_200)]
Notice = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$")]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class HandoffConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the agent desk routes and times this bot's handovers (the desk reads the same fields)."""

    default_team: TeamName | None = None
    """The team of a handover whose intent has none below (``None``: any agent)."""
    teams_by_intent: Annotated[dict[str, TeamName], msgspec.Meta(max_length=200)] = {}
    """Intent name to team (``{"order_status": "orders"}``)."""
    wait_minutes: Minutes | None = 15.0
    """How long a handover waits for an agent before the bot takes the conversation back (``null``: for ever)."""
    first_response_minutes: Minutes | None = 5.0
    """SLA: an agent's first reply is due within this (a miss is a ``handover.sla_missed`` event)."""
    resolution_minutes: Minutes | None = 240.0
    """SLA: the handover is due to be closed within this."""
    unavailable_notice: Notice = (
        "Everyone on our team is busy right now. Tell me what you need, with any order number or details, and an "
        "e-mail address if you would like us to follow up by e-mail: a person will reply here as soon as one is free."
    )
    """What the user is told instead of the usual notice when the tenant's agents are all away or full."""
    closed_notice: Notice = (
        "Our team is away right now and will be back during business hours. Tell me what you need, with any "
        "details, and leave an e-mail address if you would like a person to follow up by e-mail."
    )
    """What the user is told outside the team's business hours."""
    timeout_message: Notice = (
        "Sorry, nobody from our team could answer in time. I'm back to help you in the meantime; if you left an "
        "e-mail address, a person will follow up there."
    )
    """What the user is told when the wait ends and the bot takes the conversation back."""


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The desk's routing and timing of this bot's handovers."""
    return HandoffConfig


@hookimpl
def register_intents() -> list[Intent]:
    """The handover intent."""
    return [
        Intent(
            name="human_handoff",
            description="The user asks to talk to a human agent or a real person.",
            examples=(
                "agent",
                "talk to a person",
                "I want to speak to a human",
                "can I talk to someone real",
                "connect me with an agent",
                "human please",
                "customer service representative",
                "let me talk to a real person",
            ),
            escalate=True,
            answer="I'm connecting you with a person. Someone from our team will reply here shortly.",
        )
    ]
