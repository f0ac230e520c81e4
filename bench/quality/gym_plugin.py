"""The third evaluation bot's intents: the front desk of a gym (bench/quality.py).

Written for issue #17's generalisation check, apart from the demo and library
bots: its tune half may be looked at while improving the engine, its held-out half
only counted (see docs/benchmarks.md, "Answer quality").
"""

from __future__ import annotations

from botloom import Intent, Slot, hookimpl


@hookimpl
def register_intents() -> list[Intent]:
    """Freezing a membership (with the member number), a lost key fob and a personal trainer request."""
    return [
        Intent(
            name="freeze_membership",
            description="The member wants to freeze (pause) their membership for a while.",
            examples=(
                "freeze my membership",
                "I want to pause my membership",
                "can I put my membership on hold",
                "please freeze my account for two months",
            ),
            slots=(
                Slot(
                    name="member_number",
                    description="The membership number, six digits",
                    pattern=r"\b(\d{6})\b",
                    required=True,
                    prompt="I can freeze it for you. What is your membership number (six digits, on your key fob)?",
                ),
            ),
            answer="Done: membership {member_number} is frozen from the first of next month; a frozen month costs "
            "5 euros.",
        ),
        Intent(
            name="lost_fob",
            description="The member lost their key fob or it stopped opening the gate.",
            examples=(
                "I lost my key fob",
                "my fob doesn't open the gate",
                "I can't find my entry tag",
                "my access key is gone",
            ),
            answer="I've blocked your old key fob: pick up a new one at reception with an ID (replacement 10 euros).",
        ),
        Intent(
            name="trainer_request",
            description="The member wants a session with a personal trainer arranged.",
            examples=(
                "book a personal trainer",
                "I'd like a session with a trainer",
                "can I get a PT session",
                "set me up with a coach",
            ),
            answer="I've passed your request to our trainers: one of them will call you within a day to set a time.",
        ),
    ]
