"""Reading and writing e-mail without a server: real client samples, threading, robots, hostile input."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from botloom import InboundMessage, OutboundMessage
from botloom.channels.email import EmailChannel
from botloom.channels.email.inbound import (
    MAX_MULTIPARTS,
    MailError,
    bounced_message_id,
    thread_key,
    thread_of,
    to_inbound,
)
from botloom.channels.email.outbound import compose, html_body

SAMPLES = Path(__file__).parent / "data" / "mail"
BOT = "support@acme.test"
CONFIG = EmailChannel.settings({"address": BOT, "display_name": "Acme Support", "smtp_host": "localhost"})


def read(name: str) -> InboundMessage:
    found = to_inbound((SAMPLES / name).read_bytes(), channel="email", own_address=BOT)
    assert isinstance(found, InboundMessage), found
    return found


def mail(headers: str, body: str = "Hello there", content_type: str = "text/plain; charset=utf-8") -> bytes:
    return f"{headers.strip()}\nContent-Type: {content_type}\n\n{body}\n".encode()


# --------------------------------------------------------------------------- real clients


def test_a_gmail_reply_keeps_only_the_new_text() -> None:
    message = read("gmail-reply.eml")
    assert message.text == "Thanks! When will it arrive in München?"
    assert message.sender == "anna.example@gmail.com"
    assert message.idempotency_key == "CAF=8kZ0d6q+Vx3hbPq0rXz1@mail.gmail.com"
    assert message.metadata["subject"] == "Your order 1234"
    assert message.metadata["from_name"] == "Anna Example"


def test_a_reply_to_the_bot_continues_the_thread_named_in_the_bots_message_id() -> None:
    assert read("gmail-reply.eml").conversation_key == "mail:4b1f0c2a9d3e8f7a6b5c4d3e2f1a0b9c"
    german = read("thunderbird-de.eml")
    assert german.conversation_key == "mail:0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert german.metadata["references"] == [
        "thread-root-77@example.de",
        "botloom.0a1b2c3d4e5f60718293a4b5c6d7e8f9.77aa-0@acme.test",
        "5d9c1e2f-7a3b-4c8d-9e0f-1a2b3c4d5e6f@example.de",
    ]


def test_a_german_reply_loses_its_quote_and_signature_and_its_subject_prefixes() -> None:
    message = read("thunderbird-de.eml")
    assert message.text == "Danke, dann warte ich bis Montag."
    assert message.metadata["subject"] == "Lieferung"
    assert message.metadata["from_name"] == "Jürgen Müller"


def test_html_only_outlook_mail_becomes_text_in_windows_1252() -> None:
    message = read("outlook-html-only.eml")
    assert "Could you send me the invoice for order 5678?" in message.text
    assert "49,90 € incl. VAT & shipping" in message.text
    assert "<" not in message.text and "margin-top" not in message.text
    assert message.metadata["subject"] == "Invoice question"


def test_attachments_are_kept_as_metadata_and_mobile_footers_dropped() -> None:
    message = read("apple-attachment.eml")
    assert message.text == "The mug arrived broken, photo attached. Can I get a replacement?"
    [photo] = message.attachments
    assert (photo.filename, photo.content_type, photo.url) == ("IMG_0042.jpg", "image/jpeg", None)
    assert photo.size is not None and photo.size > 100


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ("vacation-auto-reply.eml", "Auto-Submitted"),
        ("bounce-dsn.eml", "Auto-Submitted"),
        ("mailing-list.eml", "Precedence: bulk"),
    ],
)
def test_robots_are_not_answered(sample: str, reason: str) -> None:
    found = to_inbound((SAMPLES / sample).read_bytes(), channel="email", own_address=BOT)
    assert isinstance(found, str) and reason in found


@pytest.mark.parametrize(
    "headers",
    [
        "From: MAILER-DAEMON@mx.example.org\nMessage-ID: <a@x>",
        "From: postmaster@example.org\nMessage-ID: <a@x>",
        "From: no-reply@shop.example\nMessage-ID: <a@x>",
        "From: someone@example.org\nReturn-Path: <>\nMessage-ID: <a@x>",
        "From: someone@example.org\nX-Autoreply: yes\nMessage-ID: <a@x>",
        f"From: Acme <{BOT.upper()}>\nMessage-ID: <a@x>",
    ],
)
def test_bounces_auto_replies_and_the_bots_own_mail_are_not_answered(headers: str) -> None:
    assert isinstance(to_inbound(mail(headers), channel="email", own_address=BOT), str)


def test_auto_submitted_no_is_a_person() -> None:
    found = to_inbound(
        mail("From: a@example.org\nAuto-Submitted: no\nMessage-ID: <a@x>"), channel="email", own_address=BOT
    )
    assert isinstance(found, InboundMessage)


def test_a_bounce_names_the_reply_that_failed() -> None:
    found = bounced_message_id((SAMPLES / "bounce-dsn.eml").read_bytes())
    assert found is not None
    message_id, reason = found
    assert message_id == "botloom.4b1f0c2a9d3e8f7a6b5c4d3e2f1a0b9c.bounced-0@acme.test"
    assert "550 5.1.1" in reason and "User unknown" in reason
    assert bounced_message_id((SAMPLES / "gmail-reply.eml").read_bytes()) is None


# --------------------------------------------------------------------------- threading


def test_a_new_message_starts_its_own_thread() -> None:
    thread = thread_of("first@x", [], [])
    assert thread.key == f"mail:{thread_key('first@x')}"
    assert thread.references == ("first@x",)


def test_replies_in_one_thread_share_its_root_however_the_client_links_them() -> None:
    root = thread_of("root@x", [], []).key
    assert thread_of("r1@y", ["root@x"], ["root@x"]).key == root
    assert thread_of("r2@x", ["root@x", "r1@y"], ["r1@y"]).key == root
    assert thread_of("r3@z", [], ["root@x"]).key == root, "In-Reply-To alone"
    assert thread_of("other@x", [], []).key != root


def test_long_reference_chains_keep_the_root_and_the_latest() -> None:
    chain = [f"m{i}@x" for i in range(500)]
    thread = thread_of("new@x", chain, [chain[-1]])
    assert thread.references[0] == "m0@x" and thread.references[-2:] == ("m499@x", "new@x")
    assert len(thread.references) <= 50


# --------------------------------------------------------------------------- replies


def test_a_reply_is_threaded_and_has_a_text_and_an_html_part() -> None:
    inbound = read("gmail-reply.eml")
    reply = OutboundMessage(
        channel="email",
        text="It arrives on Monday.\n\nTrack it at https://acme.test/t/1234.",
        recipient=inbound.sender,
        metadata={"reply_to": inbound.metadata},
        idempotency_key="5f0e-0",
    )
    sent = compose(reply, CONFIG)
    assert sent["Subject"] == "Re: Your order 1234"
    assert sent["In-Reply-To"] == "<CAF=8kZ0d6q+Vx3hbPq0rXz1@mail.gmail.com>"
    assert sent["References"].split()[-1] == "<CAF=8kZ0d6q+Vx3hbPq0rXz1@mail.gmail.com>"
    assert sent["Message-ID"] == "<botloom.4b1f0c2a9d3e8f7a6b5c4d3e2f1a0b9c.5f0e-0@acme.test>"
    assert sent["From"] == "Acme Support <support@acme.test>"
    assert sent["To"] == "Anna Example <anna.example@gmail.com>"
    assert sent["Auto-Submitted"] == "auto-replied"
    text = sent.get_body(preferencelist=("plain",))
    page = sent.get_body(preferencelist=("html",))
    assert text is not None and page is not None
    assert text.get_content().strip() == reply.text
    assert '<a href="https://acme.test/t/1234">' in page.get_content()
    # the user's answer to this reply lands in the same conversation
    answer = to_inbound(
        mail(f"From: anna.example@gmail.com\nMessage-ID: <next@gmail.com>\nIn-Reply-To: {sent['Message-ID']}"),
        channel="email",
        own_address=BOT,
    )
    assert isinstance(answer, InboundMessage) and answer.conversation_key == inbound.conversation_key


def test_a_hostile_subject_cannot_inject_headers() -> None:
    inbound = to_inbound(
        mail("From: a@example.org\nMessage-ID: <a@x>\nSubject: =?utf-8?q?hi=0D=0ABcc=3A_victim=40example.org?="),
        channel="email",
        own_address=BOT,
    )
    assert isinstance(inbound, InboundMessage)
    reply = OutboundMessage(
        channel="email", text="ok", recipient=inbound.sender, metadata={"reply_to": inbound.metadata}
    )
    raw = compose(reply, CONFIG).as_bytes()
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Bcc"] is None
    assert "victim@example.org" in str(parsed["Subject"])


def test_html_body_escapes_markup() -> None:
    page = html_body("<script>alert(1)</script> & more")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; more" in page


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "empty"),
        (b"   \r\n", "empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"just some text without any header line", "no mail headers"),
        (b"Subject: no sender\nMessage-ID: <a@x>\n\nhello\n", "sender"),
        (b"From: not an address\n\nhello\n", "sender"),
    ],
)
def test_what_is_not_mail_is_a_clear_error(raw: bytes, error: str) -> None:
    with pytest.raises(MailError, match=error):
        to_inbound(raw, channel="email", own_address=BOT)


def test_mime_nested_too_deep_is_refused_not_a_crash() -> None:
    depth = MAX_MULTIPARTS + 50
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth))
    closing = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    raw = f"From: a@example.org\nMessage-ID: <deep@x>\n{opening}Content-Type: text/plain\n\nhi\n{closing}".encode()
    with pytest.raises(MailError, match="multipart"):
        to_inbound(raw, channel="email", own_address=BOT)


def test_moderately_nested_mime_is_read() -> None:
    depth = 40
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth))
    closing = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    raw = (
        f"From: a@example.org\nMessage-ID: <deep@x>\n{opening}Content-Type: text/plain\n\nhi there\n{closing}".encode()
    )
    found = to_inbound(raw, channel="email", own_address=BOT)
    assert isinstance(found, InboundMessage) and found.text == "hi there"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain; charset=x-no-such-charset", "text/plain; charset=utf-8", "text/html; charset=utf-7"],
)
def test_unknown_charsets_and_broken_bytes_still_give_text(content_type: str) -> None:
    raw = (
        b"From: a@example.org\nMessage-ID: <c@x>\nContent-Type: "
        + content_type.encode()
        + b"\n\nhello \xff\xfe world\n"
    )
    found = to_inbound(raw, channel="email", own_address=BOT)
    assert isinstance(found, InboundMessage)
    assert "hello" in found.text and "world" in found.text


def test_a_message_without_message_id_is_keyed_by_its_content() -> None:
    raw = mail("From: a@example.org\nSubject: hi")
    first = to_inbound(raw, channel="email", own_address=BOT)
    second = to_inbound(raw, channel="email", own_address=BOT)
    assert isinstance(first, InboundMessage) and isinstance(second, InboundMessage)
    assert first.idempotency_key == second.idempotency_key and first.idempotency_key
    assert first.conversation_key == second.conversation_key


def test_a_message_with_only_a_subject_is_answered_about_its_subject() -> None:
    found = to_inbound(
        mail("From: a@example.org\nSubject: Opening hours?\nMessage-ID: <s@x>", body=""),
        channel="email",
        own_address=BOT,
    )
    assert isinstance(found, InboundMessage) and found.text == "Opening hours?"


def test_the_config_refuses_half_a_login() -> None:
    with pytest.raises(ValueError, match="smtp_username and smtp_password"):
        EmailChannel.settings({"address": BOT, "smtp_host": "localhost", "smtp_username": "bot"})
    with pytest.raises(ValueError, match="at least 16 characters"):
        EmailChannel.settings({"address": BOT, "smtp_host": "localhost", "inbound_secret": "short"})
    with pytest.raises(ValueError, match="imap_host needs"):
        EmailChannel.settings({"address": BOT, "smtp_host": "localhost", "imap_host": "localhost"})
