"""Small talk: greetings, thanks and goodbyes, answered from templates."""

from __future__ import annotations

from botloom import Intent, hookimpl


@hookimpl
def register_intents() -> list[Intent]:
    """Greeting, thanks and goodbye intents."""
    return [
        Intent(
            name="greeting",
            description="The user says hello or starts the conversation.",
            examples=("hi", "hello", "hey there", "good morning", "hello, anyone there?", "hi bot"),
            answer="Hello! How can I help you today?",
        ),
        Intent(
            name="thanks",
            description="The user thanks the bot.",
            examples=("thanks", "thank you", "thanks a lot", "great, thank you", "cheers", "much appreciated"),
            answer="You're welcome! Is there anything else I can do for you?",
        ),
        Intent(
            name="goodbye",
            description="The user ends the conversation.",
            examples=("bye", "goodbye", "see you", "that's all, bye", "have a nice day", "talk to you later"),
            answer="Goodbye, and have a great day!",
        ),
    ]
