"""Personal data in checkpoints and logs: per-bot redaction, encryption at rest, masked logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import msgspec
import psycopg
import pytest

from botloom import Intent, Slot, hookimpl
from botloom.core.settings import Settings
from botloom.runtime.services import open_services
from botloom.server.demo import ensure_demo
from botloom.server.logs import RedactingFilter
from tests.helpers import Chat, captured_logs, enable, host_with

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


# Real log lines: (what botloom or its libraries log, with the personal data in it). Nothing but the
# phone numbers and e-mail addresses may change.
REAL_LINES = [
    "turn 0b9c7c1e-52ee-4123-8456-b99a548ce180 of conversation 88dd4209-52ee-4123-8456-b99a548ce180 failed",
    "conversation 12345678-1234-1234-1234-123456789012: state migration failed; starting afresh",
    "job turns:88dd4209-52ee-4123-8456-b99a548ce180 took 1234.567 ms (0.0123456789 s in the model)",
    "heartbeat of job deliveries:5d0c2a1e-0001-4000-8000-000000000001 failed at 2026-12-01T14:11:06.438Z",
    "error connecting in 'botloom': connection failed: connection to server at \"127.0.0.1\", port 60435 failed",
    '10.100.200.150:54321 - "POST /channels/twilio/acme/support HTTP/1.1" 200',
    '[2001:db8:85a3::8a2e:370:7334]:443 - "GET /ready HTTP/1.1" 503; peer ::ffff:192.168.100.200',
    "retrying in 123456789 ms; epoch 1733061234.567 / 1733061234567; listening on [::1]:5432",
    "request 4f9c2a0e8b7d4c3a9e1f2b3c4d5e6f70 (x-request-id req-123456789) for MessageSid SM0123456789abcdef01234567",
    "2026-12-01 14:11:06.438 UTC [31817] LOG:  database system is ready to accept connections",
]
PERSONAL = [
    ("inbound from {} for acme/support", "+15550001111"),
    ("inbound from whatsapp:{} (profile Ada)", "+15550001111"),
    ("the user asked to be called at {}.", "+49 170 1234567"),
    ("callback to {} scheduled", "+1 (555) 000-1111"),
    ("form body From={}&Body=hello", "%2B15550001111"),
    ("reply to {}, subject: order", "ada.lovelace+bot@mail.example.co.uk"),
    ("number {} given in text", "0170 1234567"),
    ("number {} given in text", "(555) 123-4567"),
    ("number {} given in text", "01701234567"),
]


@pytest.fixture
def log_stream(settings: Settings, request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """botloom's configured logging (the format the test names), written to a string."""
    with captured_logs(settings, request.param) as stream:
        yield stream


@pytest.mark.parametrize("log_stream", ["text", "json"], indirect=True)
@pytest.mark.parametrize("line", REAL_LINES)
def test_identifiers_addresses_and_times_in_log_lines_are_kept(log_stream: io.StringIO, line: str) -> None:
    logging.getLogger("botloom.test").warning("%s", line)
    written = log_stream.getvalue()
    message = json.loads(written)["message"] if written.startswith("{") else written.split(": ", 1)[1].rstrip("\n")
    assert message == line
    assert "<phone>" not in written, "the line's own time stamp is kept too"


@pytest.mark.parametrize("log_stream", ["text", "json"], indirect=True)
@pytest.mark.parametrize(("template", "personal"), PERSONAL)
def test_phone_numbers_and_addresses_in_log_lines_are_masked(
    log_stream: io.StringIO, template: str, personal: str
) -> None:
    logging.getLogger("botloom.test").warning(template.replace("{}", "%s"), personal)
    written = log_stream.getvalue()
    assert personal not in written
    digits = "".join(c for c in personal if c.isdigit())
    assert not digits or digits[-7:] not in written
    expected = template.format("<email>" if "@" in personal else "<phone>")
    assert expected in written, written


def test_redacted_checkpoints_keep_their_ids_and_times() -> None:
    from botloom.runtime.saver import scrub

    turn = "0b9c7c1e-52ee-4123-8456-b99a548ce180"
    values = {
        "turn_id": turn,
        "messages": [{"id": "12345678-1234-1234-1234-123456789012", "content": f"call me at {PHONE} please"}],
        "received_at": "2026-12-01T14:11:06.438123+00:00",
        "trace": [{"node": "respond", "ms": 12.345678}, "took 1234.567 ms"],
    }
    scrubbed = scrub(values)
    assert scrubbed["turn_id"] == turn, "the runner compares it when a turn runs again"
    message = scrubbed["messages"][0]
    assert message == {"id": "12345678-1234-1234-1234-123456789012", "content": "call me at <phone> please"}
    assert scrubbed["received_at"] == values["received_at"]
    assert scrubbed["trace"] == values["trace"]
