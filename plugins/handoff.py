"""Human handoff: the intent "talk to a person", which ends the turn in ``escalate``."""

from __future__ import annotations

from botloom import Intent, hookimpl


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
