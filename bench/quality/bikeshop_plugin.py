"""The fourth evaluation bot's intents: the workshop of a bike repair shop (bench/quality.py).

Written for issue #17's blind check (session 7), apart from the demo, library and gym
bots and before any engine change of that session: the whole set is only counted,
never read case by case while the engine is changed (see docs/benchmarks.md,
"Answer quality").
"""

from __future__ import annotations

from botloom import Intent, Slot, hookimpl


@hookimpl
def register_intents() -> list[Intent]:
    """A repair's status (with the repair ticket number), booking a service and cancelling an appointment."""
    return [
        Intent(
            name="repair_status",
            description="The customer asks whether their bike in the workshop is ready, or how its repair is going.",
            examples=(
                "is my bike ready",
                "what's the status of my repair",
                "when can I pick up my bike, ticket 40317",
                "how is the repair of my bike going",
            ),
            slots=(
                Slot(
                    name="ticket",
                    description="The repair ticket number, five digits",
                    pattern=r"\b(\d{5})\b",
                    required=True,
                    prompt="I can check that. What is your repair ticket number (five digits, on your receipt)?",
                ),
            ),
            answer="Repair {ticket} is on the workshop stand today; we'll text you as soon as the bike is ready.",
        ),
        Intent(
            name="book_service",
            description="The customer wants an appointment for a service or repair of their bike.",
            examples=(
                "I'd like to book a service",
                "can I make an appointment for my bike",
                "book my bike in for a repair",
                "I need a slot to get my bike serviced",
            ),
            answer="I've put in a request for you: our workshop will call you today to agree on a day to bring the "
            "bike in.",
        ),
        Intent(
            name="cancel_appointment",
            description="The customer wants to cancel or move their workshop appointment.",
            examples=(
                "cancel my appointment",
                "I can't make it to my appointment tomorrow",
                "I need to reschedule my booking",
                "please move my service to another day",
            ),
            answer="No problem: I've asked the workshop to cancel your appointment; they'll text you to confirm "
            "or offer a new day.",
        ),
    ]
