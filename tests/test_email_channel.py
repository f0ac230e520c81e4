"""The e-mail channel end to end: posted and polled mail, threads, robots, bounces, SMTP with TLS and retries.

A real PostgreSQL, a real SMTP server (aiosmtpd) and a real IMAP server (Dovecot);
the channel contract's common tests are in ``test_channel_contract_email.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo
from botloom.server.worker import workers
from botloom.testing.channel_contract import GREETING, fast_app, settled, transcript, wait_until
from tests.email_client import BOT_ADDRESS, INBOUND_SECRET, USER, email_config, post_mail, raw_mail
from tests.helpers import api_client
from tests.mailservers import RunningImap, RunningSmtp, start_imap, start_smtp

pytestmark = pytest.mark.slow

AUTH_USER, AUTH_PASSWORD = "bot-login", "smtp-pass-1234"


@pytest.fixture(scope="module")
def imap_server() -> Iterator[RunningImap]:
    base = Path(tempfile.mkdtemp(prefix="botloom-imap-"))  # not pytest's temp dir: Dovecot's users must reach it
    try:
        with start_imap(base) as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mailbox(imap_server: RunningImap) -> tuple[RunningImap, str]:
    """The IMAP server and a fresh account of the bot's, empty."""
    user, _ = imap_server.add_user()
    return imap_server, user


@contextlib.asynccontextmanager
async def email_app(
    settings: Settings, services: Services, demo: DemoInfo, config: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the e-mail channel enabled for the demo bot through the API, and a client of it."""
    async with api_client(fast_app(settings, services)) as client:
        response = await client.put(
            "/api/v1/bots/acme/support/plugins/email",
            json={"enabled": True, "config": config},
            headers={"Authorization": f"Bearer {demo.api_key}"},
        )
        assert response.status_code == 200, response.text
        yield client


def plain_text(message: Any) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content()).strip()


# --------------------------------------------------------------------------- posted mail


async def test_a_posted_mail_is_answered_in_its_thread(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)) as client, workers(services):
        first = raw_mail("hello\n\nOn Monday, Bob wrote:\n> older text", message_id="q1@example.org", subject="Hi")
        assert (await post_mail(client, first)).status_code == 200
        [reply] = await asyncio.to_thread(smtp.wait_for, 1, 30)
        mail = reply.message
        assert plain_text(mail) == GREETING
        assert mail.get_body(preferencelist=("html",)) is not None
        assert mail["Subject"] == "Re: Hi"
        assert mail["In-Reply-To"] == "<q1@example.org>"
        assert mail["References"] == "<q1@example.org>"
        assert mail["From"] == f"Acme Support <{BOT_ADDRESS}>"
        assert reply.rcpt_tos == (USER,)

        # the user answers the bot's reply, naming only it: the same conversation goes on
        second = raw_mail("hello again", message_id="q2@example.org", in_reply_to=mail["Message-ID"].strip("<>"))
        assert (await post_mail(client, second)).status_code == 200
        await asyncio.to_thread(smtp.wait_for, 2, 30)
    conversations = await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)
    assert len(conversations) == 1
    texts = [(d, t) for d, t, _ in await transcript(services, demo)]
    assert texts == [("inbound", "hello"), ("outbound", GREETING), ("inbound", "hello again"), ("outbound", GREETING)]


async def test_the_reply_goes_to_whoever_wrote_last_in_the_thread(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    colleague = "bob@example.org"
    async with email_app(settings, services, demo, email_config(smtp)) as client, workers(services):
        assert (await post_mail(client, raw_mail("hello", message_id="c1@example.org"))).status_code == 200
        await asyncio.to_thread(smtp.wait_for, 1, 30)
        joined = raw_mail("hello", message_id="c2@example.org", sender=colleague, references=["c1@example.org"])
        assert (await post_mail(client, joined)).status_code == 200
        first, second = await asyncio.to_thread(smtp.wait_for, 2, 30)
    assert (first.rcpt_tos, second.rcpt_tos) == ((USER,), (colleague,))
    assert len(await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)) == 1


async def test_channel_webhooks_are_not_rate_limited_like_api_clients(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    """A provider posts every user's mail from one address: a per-address limit would lose messages."""
    limited = msgspec.structs.replace(settings, rate_limit_per_minute=3)
    async with email_app(limited, services, demo, email_config(smtp)) as client:
        codes = [
            (await post_mail(client, raw_mail("hello", message_id=f"rl{n}@example.org", subject=f"R{n}"))).status_code
            for n in range(6)
        ]
        api = [
            (
                await client.get("/api/v1/bots/acme/support", headers={"Authorization": f"Bearer {demo.api_key}"})
            ).status_code
            for _ in range(4)
        ]
    assert codes == [200] * 6
    assert api[-1] == 429, "API clients are still limited"
    assert len([d for d, _, _ in await transcript(services, demo) if d == "inbound"]) == 6


async def test_separate_threads_are_separate_conversations(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)) as client:
        for number in (1, 2):
            raw = raw_mail("hello", message_id=f"t{number}@example.org", subject=f"Thread {number}")
            assert (await post_mail(client, raw)).status_code == 200
    assert await services.inbound.ingest_inbox() == 2, "acknowledged into the webhook inbox"
    assert len(await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)) == 2


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"Authorization": f"Bearer {INBOUND_SECRET}"}},
        {"headers": {"X-Botloom-Secret": INBOUND_SECRET}},
        {"query": f"?secret={INBOUND_SECRET}"},
    ],
    ids=["bearer", "header", "query"],
)
async def test_the_secret_may_come_in_a_header_or_the_url(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, how: dict[str, Any]
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)) as client:
        response = await client.post(
            "/channels/email/acme/support/inbound" + how.get("query", ""),
            content=raw_mail("hello", message_id="s@example.org"),
            headers={"Content-Type": "message/rfc822", **how.get("headers", {})},
        )
    assert response.status_code == 200, response.text
    assert [t for _, t, _ in await transcript(services, demo)] == ["hello"]


@pytest.mark.parametrize(
    ("secret", "config_secret"),
    [(None, INBOUND_SECRET), ("wrong", INBOUND_SECRET), (INBOUND_SECRET[:-1], INBOUND_SECRET), (INBOUND_SECRET, None)],
    ids=["missing", "wrong", "prefix", "no-secret-configured"],
)
async def test_unauthenticated_mail_is_refused_and_stores_nothing(
    settings: Settings,
    services: Services,
    demo: DemoInfo,
    smtp: RunningSmtp,
    secret: str | None,
    config_secret: str | None,
) -> None:
    config = email_config(smtp, inbound_secret=config_secret)
    async with email_app(settings, services, demo, config) as client:
        response = await post_mail(client, raw_mail("hello", message_id="f@example.org"), secret=secret)
    assert response.status_code == 403, response.text
    assert await transcript(services, demo) == []


async def test_the_inbound_path_is_the_only_one(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)) as client:
        response = await client.post(
            "/channels/email/acme/support",
            content=raw_mail("hello", message_id="p@example.org"),
            headers={"Authorization": f"Bearer {INBOUND_SECRET}"},
        )
    assert response.status_code == 404
    assert "/inbound" in response.text


async def test_the_same_message_twice_runs_once(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    raw = raw_mail("hello", message_id="dup@example.org")
    async with email_app(settings, services, demo, email_config(smtp)) as client, workers(services):
        assert (await post_mail(client, raw)).status_code == 200
        await asyncio.to_thread(smtp.wait_for, 1, 30)
        assert (await post_mail(client, raw)).status_code == 200
        await wait_until(lambda: settled(services, demo), what="the turn and its reply to settle")
    assert len(smtp.received) == 1
    assert [d for d, _, _ in await transcript(services, demo)] == ["inbound", "outbound"]


async def test_auto_replies_and_bounces_are_accepted_but_never_answered(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    vacation = raw_mail("I am away", message_id="v@example.org", headers={"Auto-Submitted": "auto-replied"})
    bounce = (Path(__file__).parent / "data" / "mail" / "bounce-dsn.eml").read_bytes()
    async with email_app(settings, services, demo, email_config(smtp)) as client, workers(services):
        for raw in (vacation, bounce):
            assert (await post_mail(client, raw)).status_code == 200
        assert await services.queue.pending("turns") == 0, "stored nothing and queued no turn: nothing can answer"
    assert smtp.received == []
    assert await transcript(services, demo) == []


async def test_a_bounce_marks_the_reply_it_reports_as_failed(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)) as client, workers(services):
        assert (await post_mail(client, raw_mail("hello", message_id="b@example.org"))).status_code == 200
        [reply] = await asyncio.to_thread(smtp.wait_for, 1, 30)
        await wait_until(lambda: settled(services, demo), what="the delivery to record the part it handed over")
        template = (Path(__file__).parent / "data" / "mail" / "bounce-dsn.eml").read_text()
        bounced_id = "botloom.4b1f0c2a9d3e8f7a6b5c4d3e2f1a0b9c.bounced-0@acme.test"
        dsn = template.replace(f"<{bounced_id}>", reply.message["Message-ID"]).encode()
        assert (await post_mail(client, dsn)).status_code == 200
    rows = await transcript(services, demo)
    assert rows[-1][0] == "outbound" and rows[-1][2] == "failed", rows


async def test_retries_a_busy_smtp_server_and_gives_up_on_a_refusal(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)) as client, workers(services):
        smtp.fail_next(2, code=451, message="4.3.0 try again later")
        assert (await post_mail(client, raw_mail("hello", message_id="r1@example.org"))).status_code == 200
        await asyncio.to_thread(smtp.wait_for, 1, 30)
        smtp.fail_next(1, code=550, message="5.7.1 relaying denied")
        refused = raw_mail("hello", message_id="r2@example.org", subject="Other")
        assert (await post_mail(client, refused)).status_code == 200
        for _ in range(100):
            dead = await services.deliveries.parts.dead_letters(demo.tenant.id, demo.bot.id)
            if dead:
                break
            await asyncio.sleep(0.1)
    assert len(smtp.received) == 1
    [letter] = dead
    assert letter.attempts == 1, "a permanent refusal is not retried"
    assert letter.error is not None and "550" in letter.error


async def test_oversized_and_unreadable_mail_is_refused_with_a_reason(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    config = email_config(smtp, max_message_bytes=4096)
    async with email_app(settings, services, demo, config) as client:
        huge = raw_mail("x" * 10_000, message_id="big@example.org")
        assert (await post_mail(client, huge)).status_code == 413
        garbage = await post_mail(client, b"\x00\x01\x02\x03 binary junk")
        assert garbage.status_code == 400 and "binary" in garbage.text
        empty = await post_mail(client, b"")
        assert empty.status_code == 400 and "empty" in empty.text
        no_sender = await post_mail(client, b"Subject: hi\nMessage-ID: <n@x>\n\nhello\n")
        assert no_sender.status_code == 400 and "sender" in no_sender.text
    assert await transcript(services, demo) == []


async def test_the_config_is_validated_and_its_secrets_never_come_back(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with api_client(fast_app(settings, services)) as client:
        auth = {"Authorization": f"Bearer {demo.api_key}"}
        bad = await client.put(
            "/api/v1/bots/acme/support/plugins/email",
            json={"enabled": True, "config": {"address": "not-an-address", "smtp_port": 70000}},
            headers=auth,
        )
        assert bad.status_code == 400
        fields = {e["key"] for e in bad.json()["extra"]}
        assert fields == {"config.address", "config.smtp_host", "config.smtp_port"}, bad.json()
        good = await client.put(
            "/api/v1/bots/acme/support/plugins/email",
            json={"enabled": True, "config": email_config(smtp, smtp_username="u", smtp_password="p-secret")},
            headers=auth,
        )
        assert good.status_code == 200, good.text
        listed = await client.get("/api/v1/bots/acme/support/plugins", headers=auth)
    assert "p-secret" not in good.text and INBOUND_SECRET not in good.text
    assert "p-secret" not in listed.text and INBOUND_SECRET not in listed.text


# --------------------------------------------------------------------------- SMTP security


@pytest.mark.parametrize(("mode", "security"), [("starttls", "starttls"), ("tls", "tls")])
async def test_replies_go_out_over_tls_with_a_login(
    settings: Settings,
    services: Services,
    demo: DemoInfo,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    security: str,
) -> None:
    with start_smtp(mode, username=AUTH_USER, password=AUTH_PASSWORD) as server:  # type: ignore[arg-type]
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_path))  # trust the server's self-signed certificate
        config = email_config(server, smtp_security=security)
        async with email_app(settings, services, demo, config) as client, workers(services):
            assert (await post_mail(client, raw_mail("hello", message_id=f"{mode}@example.org"))).status_code == 200
            [reply] = await asyncio.to_thread(server.wait_for, 1, 30)
    assert plain_text(reply.message) == GREETING


async def test_a_wrong_smtp_password_is_a_dead_letter_that_says_what_to_fix(
    settings: Settings, services: Services, demo: DemoInfo
) -> None:
    with start_smtp("plain", username=AUTH_USER, password=AUTH_PASSWORD) as server:
        config = email_config(server, smtp_password="wrong-password")
        async with email_app(settings, services, demo, config) as client, workers(services):
            assert (await post_mail(client, raw_mail("hello", message_id="pw@example.org"))).status_code == 200
            for _ in range(100):
                dead = await services.deliveries.parts.dead_letters(demo.tenant.id, demo.bot.id)
                if dead:
                    break
                await asyncio.sleep(0.1)
        assert server.received == []
    [letter] = dead
    assert letter.error is not None and "smtp_password" in letter.error


# --------------------------------------------------------------------------- IMAP


def imap_config(smtp: RunningSmtp, mailbox: tuple[RunningImap, str], **overrides: Any) -> dict[str, Any]:
    imap, user = mailbox
    config = email_config(
        smtp,
        imap_host=imap.host,
        imap_port=imap.port,
        imap_security="none",
        imap_username=user,
        imap_password=imap.users[user],
    )
    return config | overrides


async def test_polling_reads_new_mail_once_and_flags_it_seen(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, mailbox: tuple[RunningImap, str]
) -> None:
    imap, user = mailbox
    imap.append(user, raw_mail("old news", message_id="old@example.org"), seen=True)
    imap.append(user, raw_mail("hello", message_id="new1@example.org", subject="One"))
    auto = raw_mail("I am away", message_id="auto@example.org", headers={"Auto-Submitted": "auto-replied"})
    imap.append(user, auto)
    async with email_app(settings, services, demo, imap_config(smtp, mailbox)):
        polled = await services.polling.poll(demo.tenant.id, demo.bot.id, "email")
        assert polled == 1
        assert [t for _, t, _ in await transcript(services, demo)] == ["hello"]
        assert all("\\Seen" in flags for _, flags, _ in imap.messages(user)), "stored or skipped: all flagged seen"
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 0, "nothing new"
        imap.append(user, raw_mail("hello again", message_id="new2@example.org", subject="Two"))
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 1
        async with workers(services):
            received = await asyncio.to_thread(smtp.wait_for, 2, 30)
    assert sorted(m.message["Subject"] for m in received) == ["Re: One", "Re: Two"]
    cursor = await services.polling.polls.cursor(demo.tenant.id, demo.bot.id, "email")
    assert cursor["last_uid"] == 4 and cursor["uidvalidity"]


async def test_a_poll_that_dies_midway_resumes_without_losing_or_doubling_a_message(
    settings: Settings,
    database_url: str,
    services: Services,
    demo: DemoInfo,
    smtp: RunningSmtp,
    mailbox: tuple[RunningImap, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    imap, user = mailbox
    for number in (1, 2, 3):
        imap.append(user, raw_mail(f"message {number}", message_id=f"mid{number}@example.org", subject=f"S{number}"))
    stored_once = services.inbound.accept

    async def dies_after_storing_the_second(bot: Any, message: Any, **kwargs: Any) -> Any:
        result = await stored_once(bot, message, **kwargs)
        if message.text == "message 2":
            raise ConnectionResetError("the host died between storing and flagging")
        return result

    async with email_app(settings, services, demo, imap_config(smtp, mailbox)):
        monkeypatch.setattr(services.inbound, "accept", dies_after_storing_the_second)
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 1, "the first of three counted"
        flags = [("\\Seen" in f) for _, f, _ in imap.messages(user)]
        assert flags == [True, False, False], "stored but unflagged: the second comes again"
    async with open_services(settings, url=database_url) as restarted:  # a new process, the same database
        assert await restarted.polling.poll(demo.tenant.id, demo.bot.id, "email") == 1, "only the third is new"
    texts = [t for d, t, _ in await transcript(services, demo) if d == "inbound"]
    assert texts == ["message 1", "message 2", "message 3"]
    assert all("\\Seen" in f for _, f, _ in imap.messages(user))
    async with services.db.connection() as conn:
        row = await (await conn.execute("SELECT error FROM channel_polls")).fetchone()
    assert row is not None and row["error"] is None, "the successful poll cleared the error"


async def test_the_cron_sweep_queues_a_poll_that_a_worker_runs(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, mailbox: tuple[RunningImap, str]
) -> None:
    imap, user = mailbox
    imap.append(user, raw_mail("hello", message_id="cron@example.org"))
    async with email_app(settings, services, demo, imap_config(smtp, mailbox)), workers(services):
        assert await services.polling.sweep() == 1
        [reply] = await asyncio.to_thread(smtp.wait_for, 1, 30)
    assert plain_text(reply.message) == GREETING


async def test_a_large_message_is_read_in_part_and_marked_truncated(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, mailbox: tuple[RunningImap, str]
) -> None:
    imap, user = mailbox
    imap.append(user, raw_mail("hello " + "padding " * 2000, message_id="large@example.org"))
    async with email_app(settings, services, demo, imap_config(smtp, mailbox, max_message_bytes=4096)):
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 1
    conversation = (await services.store.conversations.list_all(demo.tenant.id, demo.bot.id))[0]
    [stored] = await services.store.messages.list_all(demo.tenant.id, conversation.id)
    assert stored.text.startswith("hello padding") and stored.metadata["truncated"] is True


async def test_a_failing_mailbox_records_its_error_and_keeps_its_bookmark(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, mailbox: tuple[RunningImap, str]
) -> None:
    async with email_app(settings, services, demo, imap_config(smtp, mailbox, imap_password="wrong")):
        await services.polling.polls.save(demo.tenant.id, demo.bot.id, "email", {"uidvalidity": 1, "last_uid": 3})
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 0
    async with services.db.connection() as conn:
        row = await (await conn.execute("SELECT cursor, error FROM channel_polls")).fetchone()
    assert row is not None
    assert row["cursor"] == {"uidvalidity": 1, "last_uid": 3}
    assert "imap_username and imap_password" in row["error"]


async def test_a_bot_without_a_mailbox_is_not_polled(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    async with email_app(settings, services, demo, email_config(smtp)):
        assert await services.polling.sweep() == 0, "no mailbox, nothing to poll"
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 0
        assert await services.polling.poll(demo.tenant.id, "not-a-bot", "email") == 0


async def test_polling_over_implicit_tls(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Path(tempfile.mkdtemp(prefix="botloom-imaps-"))
    try:
        with start_imap(base, tls=True) as imap:
            assert imap.tls_port is not None and imap.ca_path is not None
            monkeypatch.setenv("SSL_CERT_FILE", str(imap.ca_path))  # trust the server's own certificate authority
            user, _ = imap.add_user()
            imap.append(user, raw_mail("hello", message_id="tls@example.org"))
            config = imap_config(
                smtp, (imap, user), imap_port=imap.tls_port, imap_security="tls", imap_host="localhost"
            )
            async with email_app(settings, services, demo, config):
                assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert [t for _, t, _ in await transcript(services, demo)] == ["hello"]


async def test_a_mailbox_with_more_than_one_batch_is_read_in_one_poll(
    settings: Settings,
    services: Services,
    demo: DemoInfo,
    smtp: RunningSmtp,
    mailbox: tuple[RunningImap, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("botloom.channels.email.imap.BATCH", 2)
    imap, user = mailbox
    for number in range(5):
        imap.append(user, raw_mail(f"message {number}", message_id=f"batch{number}@example.org", subject=f"B{number}"))
    async with email_app(settings, services, demo, imap_config(smtp, mailbox)):
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 5
    assert sorted(t for _, t, _ in await transcript(services, demo)) == [f"message {n}" for n in range(5)]


async def test_a_bounce_in_the_mailbox_marks_the_reply_it_reports_as_failed(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp, mailbox: tuple[RunningImap, str]
) -> None:
    imap, user = mailbox
    imap.append(user, raw_mail("hello", message_id="ib@example.org"))
    async with email_app(settings, services, demo, imap_config(smtp, mailbox)):
        async with workers(services):
            assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 1
            [reply] = await asyncio.to_thread(smtp.wait_for, 1, 30)
            await wait_until(lambda: settled(services, demo), what="the delivery to record the part it handed over")
        template = (Path(__file__).parent / "data" / "mail" / "bounce-dsn.eml").read_text()
        bounced_id = "botloom.4b1f0c2a9d3e8f7a6b5c4d3e2f1a0b9c.bounced-0@acme.test"
        imap.append(user, template.replace(f"<{bounced_id}>", reply.message["Message-ID"]).encode())
        assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 0, "a bounce is no message"
    rows = await transcript(services, demo)
    assert [(d, s) for d, _, s in rows] == [("inbound", "answered"), ("outbound", "failed")]
    assert all("\\Seen" in flags for _, flags, _ in imap.messages(user))
