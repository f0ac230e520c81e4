"""The second evaluation bot's intents: the front desk of a city library (bench/quality.py).

Written apart from the demo bot's data and never tuned on: it shows whether the
offline engine's figures on the demo set carry over to a domain it has not seen.
"""

from __future__ import annotations

from botloom import Intent, Slot, hookimpl


@hookimpl
def register_intents() -> list[Intent]:
    """Renewing loans, booking a study room and reporting a lost card."""
    return [
        Intent(
            name="renew_loans",
            description="The member wants to renew (extend) the items they have on loan.",
            examples=(
                "renew my books",
                "I want to extend my loans",
                "can I renew my loan",
                "please renew everything on my card",
                "I need more time with my books",
            ),
            slots=(
                Slot(
                    name="card_number",
                    description="The library card number, eight digits",
                    pattern=r"\b(\d{8})\b",
                    required=True,
                    prompt="I can renew them for you. What is your library card number (eight digits)?",
                ),
            ),
            answer="Done: every loan on card {card_number} that nobody has reserved now runs three more weeks.",
        ),
        Intent(
            name="book_study_room",
            description="The member wants to book a study or group room.",
            examples=(
                "book a study room",
                "can I reserve a room to study",
                "I need a group room for tomorrow",
                "is there a quiet room I can book",
            ),
            answer="Study rooms can be booked for up to two hours a day at the front desk or on our website.",
        ),
        Intent(
            name="lost_card",
            description="The member lost their library card or it was stolen.",
            examples=(
                "I lost my library card",
                "my card was stolen",
                "I can't find my card",
                "report a lost card",
            ),
            answer="I've noted it: please come to the front desk with an ID to block the card and get a new one.",
        ),
    ]
