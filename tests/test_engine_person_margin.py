"""An intent's own example, as written, is never read as a faint call for a person (the tutorial's
``this is Barbara speaking`` was read as ``human_handoff``, by ``speak`` and by ``this`` pointing back)."""

from __future__ import annotations

from botloom import Intent, Slot, hookimpl
from botloom.testing.intent_contract import check_intent


class Greeter:
    """A plugin with one intent whose examples share a word with the demo's call for a person."""

    @hookimpl
    def register_intents(self) -> list[Intent]:
        """The introduction intent."""
        return [
            Intent(
                name="introduction",
                description="The user introduces themselves by name.",
                examples=("my name is Ada", "I am Grace", "this is Barbara speaking"),
                slots=(Slot(name="name", pattern=r"(?:name is|I am|this is)\s+([A-Z][a-z]+)", required=True),),
            )
        ]


async def test_an_example_as_written_beats_a_faint_call_for_a_person() -> None:
    assert await check_intent(Greeter(), "introduction", name="greeter") == []
