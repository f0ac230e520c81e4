"""The offline engine on messages of several lines: a merged burst answers what the burst asks."""

from __future__ import annotations

import pytest

from botloom.graphs.engines import KNOWLEDGE_INTENT, SMALL_TALK, message_lines, specificity
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat


@pytest.mark.parametrize(
    ("lines", "intent", "says"),
    [
        # The burst of issue #12: a greeting, a preamble, then the question.
        (["hi", "I have a question", "about my order 1234"], "order_status", "1234 has shipped"),
        (["where is my order 1234?", "thanks"], "order_status", "1234 has shipped"),
        (["hello", "how much does express shipping cost?"], KNOWLEDGE_INTENT, "9.90"),
        (["hi", "I want to talk to a person"], "human_handoff", "person"),
        (["hello", "hi there"], "greeting", "How can I help"),
    ],
)
async def test_a_merged_burst_answers_its_most_specific_line(
    services: Services, demo: DemoInfo, lines: list[str], intent: str, says: str
) -> None:
    result = await Chat(services, demo.bot).say("\n".join(lines))
    assert result.intent == intent
    assert says in " ".join(r.text for r in result.replies)


async def test_one_line_is_classified_as_before(services: Services, demo: DemoInfo) -> None:
    result = await Chat(services, demo.bot).say("where is my order 1234?")
    assert result.intent == "order_status"


def test_specificity_ranks_a_person_over_slots_over_tools_over_small_talk(services: Services) -> None:
    ranks = {name: specificity(intent) for name, intent in services.host.registry.intents.items()}
    assert ranks["greeting"] == SMALL_TALK
    assert ranks["human_handoff"] > ranks["order_status"] > SMALL_TALK


def test_message_lines_drop_blank_lines() -> None:
    assert message_lines(" hi \n\n  where is my order?\r\n") == ["hi", "where is my order?"]
