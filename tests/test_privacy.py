"""Personal data in checkpoints and logs: per-bot redaction, encryption at rest, masked logs."""

from __future__ import annotations

import logging

import msgspec
import psycopg
import pytest

from botloom import Intent, Slot, hookimpl
from botloom.core.settings import Settings
from botloom.runtime.services import open_services
from botloom.server.demo import ensure_demo
from botloom.server.logs import RedactingFilter
from tests.helpers import Chat, enable, host_with

PHONE = "+49 170 1234567"


class Callback:
    @hookimpl
    def register_intents(self) -> list[Intent]:
        return [
            Intent(
                name="callback",
                description="the user wants a call back",
                examples=("call me back", "please call me at", "ring me"),
                slots=(Slot(name="phone", pattern=r"(\+?\d[\d ]{7,}\d)", required=True),),
                answer="We will call you at {phone} within the hour.",
            )
        ]


def checkpoint_bytes(database_url: str) -> bytes:
    """Everything the Postgres checkpointer stored, as one byte string."""
    with psycopg.connect(database_url) as conn:
        parts = [str(row[0]).encode() for row in conn.execute("SELECT checkpoint::text FROM checkpoints").fetchall()]
        parts += [bytes(row[0] or b"") for row in conn.execute("SELECT blob FROM checkpoint_blobs").fetchall()]
        parts += [bytes(row[0] or b"") for row in conn.execute("SELECT blob FROM checkpoint_writes").fetchall()]
    return b"\n".join(parts)


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "plain"])
async def test_redaction_keeps_phone_numbers_out_of_checkpoints(
    settings: Settings, database_url: str, redact: bool
) -> None:
    async with open_services(settings, url=database_url, host=host_with(("callback", Callback()))) as services:
        demo = await ensure_demo(services)
        await enable(services, demo.bot, "callback")
        bot = await services.store.bots.update(
            demo.tenant.id,
            demo.bot.id,
            settings=msgspec.structs.replace(demo.bot.settings, redact_personal_data=redact),
        )
        assert bot is not None
        chat = Chat(services, bot)
        result = await chat.say(f"please call me at {PHONE}")
        assert [r.text for r in result.replies] == [f"We will call you at {PHONE} within the hour."]
        stored = checkpoint_bytes(database_url)
        assert (b"1234567" in stored) is not redact
        if redact:
            assert b"<phone>" in stored
            assert (await chat.say("where is my order 1236")).replies[0].text.startswith("Your Acme Shop order 1236")
            state = await chat.state()
            assert all("1234567" not in m["content"] for m in state["messages"]), "later turns see the masked form"


async def test_encrypted_checkpoints_hold_no_readable_text(settings: Settings, database_url: str) -> None:
    encrypted = msgspec.structs.replace(settings, encrypt_checkpoints=True)
    async with open_services(encrypted, url=database_url) as services:
        demo = await ensure_demo(services)
        chat = Chat(services, demo.bot)
        await chat.say("where is my order?")
        result = await chat.say("it is 1234, thanks")
        assert "1234 has shipped" in result.replies[0].text, "the conversation continues from encrypted state"
        stored = checkpoint_bytes(database_url)
        assert stored, "checkpoints were written"
        for text in (b"where is my order", b"shipped", b"1234, thanks", b"order number"):
            assert text not in stored, text


def test_log_lines_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("botloom.test")
    handler_filter = RedactingFilter()
    record = logger.makeRecord(
        "botloom.test",
        logging.INFO,
        __file__,
        1,
        "user %s wrote from %s with key %s",
        ("ada@example.com", PHONE, "blk_abcdefghijklmnop"),
        None,
    )
    assert handler_filter.filter(record)
    message = record.getMessage()
    assert "ada@example.com" not in message and "1234567" not in message and "abcdefghijklmnop" not in message
    assert "<email>" in message and "<phone>" in message
