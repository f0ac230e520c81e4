"""The mail servers the e-mail channel's tests run against: Dovecot (IMAP) and aiosmtpd (SMTP)."""

from __future__ import annotations

import imaplib
import re
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from tests.mailservers import DEFAULT_MAIL_USERS, RunningImap, SmtpMode, start_imap, start_smtp

BOT = "bot@example.test"
ALICE = "alice@example.test"


def _raw(subject: str, body: str = "Hello there.") -> bytes:
    return (
        f"From: Carol <carol@example.test>\r\nTo: {BOT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


def _uids(data: list[bytes]) -> list[int]:
    return [int(uid) for uid in b" ".join(data).split()]


# ------------------------------------------------------------------------------- IMAP


@pytest.fixture(scope="module")
def imap_server() -> Iterator[RunningImap]:
    base = Path(tempfile.mkdtemp(prefix="botloom-test-imap-"))
    try:
        with start_imap(base, tls=True) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mailbox(imap_server: RunningImap) -> str:
    """A fresh account on the shared server, so tests never see each other's mail."""
    address, _ = imap_server.add_user()
    return address


@pytest.mark.slow
def test_imaplib_append_search_fetch_and_flag(imap_server: RunningImap, mailbox: str) -> None:
    first = imap_server.append(mailbox, _raw("first"))
    read = imap_server.append(mailbox, _raw("already read"), seen=True)
    second = imap_server.append(mailbox, _raw("second"))
    assert first < read < second

    with imap_server.imap(mailbox) as conn:
        status, _ = conn.select("INBOX")
        assert status == "OK"
        status, data = conn.uid("SEARCH", "UNSEEN")
        assert status == "OK"
        assert _uids(data) == [first, second]

        status, data = conn.uid("FETCH", str(first), "(BODY.PEEK[])")
        assert status == "OK"
        assert isinstance(data[0], tuple)
        assert data[0][1] == _raw("first")

        status, _ = conn.uid("STORE", str(first), "+FLAGS", r"(\Seen)")
        assert status == "OK"
        status, data = conn.uid("SEARCH", "UNSEEN")
        assert _uids(data) == [second]

    messages = imap_server.messages(mailbox)
    assert [(uid, flags) for uid, flags, _ in messages] == [(first, {r"\Seen"}), (read, {r"\Seen"}), (second, set())]
    assert messages[2][2] == _raw("second")


@pytest.mark.slow
def test_default_accounts_are_isolated(imap_server: RunningImap) -> None:
    assert set(DEFAULT_MAIL_USERS) <= set(imap_server.users)
    imap_server.clear(BOT)
    imap_server.clear(ALICE)
    uid = imap_server.append(BOT, _raw("for the bot only"))

    assert [m[0] for m in imap_server.messages(BOT)] == [uid]
    assert imap_server.messages(ALICE) == []

    conn = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            conn.login(ALICE, DEFAULT_MAIL_USERS[BOT])
    finally:
        conn.logout()


@pytest.mark.slow
def test_other_mailboxes_are_created_on_append(imap_server: RunningImap, mailbox: str) -> None:
    uid = imap_server.append(mailbox, _raw("archived"), mailbox="Archive/2024", seen=True)
    assert imap_server.messages(mailbox, "Archive/2024") == [(uid, {r"\Seen"}, _raw("archived"))]
    assert imap_server.messages(mailbox) == []


@pytest.mark.slow
def test_implicit_tls_port_verifies_against_the_ca(imap_server: RunningImap, mailbox: str) -> None:
    assert imap_server.tls is not None
    assert imap_server.tls_port is not None
    assert imap_server.ca_path is not None
    imap_server.append(mailbox, _raw("over tls"))
    with imap_server.imap(mailbox, tls=True) as conn:
        assert conn.select("INBOX")[0] == "OK"
        assert len(_uids(conn.uid("SEARCH", "UNSEEN")[1])) == 1

    # Verified against the system's CAs instead, the certificate is rejected.
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(imap_server.host, imap_server.tls_port, ssl_context=ssl.create_default_context(), timeout=10)


@pytest.mark.slow
async def test_aioimaplib_search_fetch_and_flag(imap_server: RunningImap, mailbox: str) -> None:
    aioimaplib = pytest.importorskip("aioimaplib")
    wanted = imap_server.append(mailbox, _raw("via aioimaplib"))
    imap_server.append(mailbox, _raw("old news"), seen=True)

    client = aioimaplib.IMAP4(host=imap_server.host, port=imap_server.port, timeout=10)
    await client.wait_hello_from_server()
    try:
        assert (await client.login(mailbox, imap_server.users[mailbox])).result == "OK"
        assert (await client.select("INBOX")).result == "OK"
        search = await client.uid_search("UNSEEN")
        assert search.result == "OK"
        assert [int(uid) for uid in search.lines[0].split()] == [wanted]

        fetch = await client.uid("fetch", str(wanted), "(BODY.PEEK[])")
        assert fetch.result == "OK"
        literals = [bytes(line) for line in fetch.lines if isinstance(line, bytearray)]
        assert literals == [_raw("via aioimaplib")]

        assert (await client.uid("store", str(wanted), "+FLAGS", r"(\Seen)")).result == "OK"
    finally:
        await client.logout()

    assert all(r"\Seen" in flags for _, flags, _ in imap_server.messages(mailbox))


@pytest.mark.slow
def test_plain_only_server_and_clean_stop() -> None:
    base = Path(tempfile.mkdtemp(prefix="botloom-test-imap-plain-"))
    try:
        server = start_imap(base, users={"solo@example.test": "pw"})
        with server:
            assert server.tls_port is None
            assert server.tls is None
            assert "ssl = no" in (base / "dovecot.conf").read_text()
            with server.imap("solo@example.test") as conn:
                assert "STARTTLS" not in conn.capabilities
            pid = server.pid
            assert pid is not None
        assert server.pid is None
        with pytest.raises(OSError), socket.create_connection((server.host, server.port), timeout=2):
            pass
        assert re.search(r"master: Info: Dovecot v2\.\d", (base / "dovecot.log").read_text())
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------- SMTP


def _message(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = BOT
    message["To"] = "carol@example.test"
    message["Subject"] = subject
    message.set_content("Hi Carol,\n\nyour order has shipped.\n")
    return message


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
async def test_smtp_login_and_send(mode: SmtpMode) -> None:
    with start_smtp(mode, username="bot", password="s3cret") as server:
        tls_context = server.client_context() if mode != "plain" else None
        await aiosmtplib.send(
            _message(f"over {mode}"),
            hostname=server.host,
            port=server.port,
            username="bot",
            password="s3cret",
            use_tls=mode == "tls",
            start_tls=mode == "starttls",
            tls_context=tls_context,
            timeout=10,
        )
        [received] = server.wait_for(1, timeout=5)
    assert received.mail_from == BOT
    assert received.rcpt_tos == ("carol@example.test",)
    assert received.login == "bot"
    assert received.tls is (mode != "plain")
    assert received.message["Subject"] == f"over {mode}"
    assert received.message.get_content() == "Hi Carol,\n\nyour order has shipped.\n"
    assert received.raw.startswith(b"From: bot@example.test\r\n")


@pytest.mark.parametrize("mode", ["plain", "tls"])
async def test_smtp_refuses_mail_without_login(mode: SmtpMode) -> None:
    with start_smtp(mode, username="bot", password="s3cret") as server:
        tls_context = server.client_context() if mode == "tls" else None
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(
                _message("anonymous"),
                hostname=server.host,
                port=server.port,
                use_tls=mode == "tls",
                tls_context=tls_context,
                timeout=10,
            )
        assert refused.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            await aiosmtplib.send(
                _message("wrong password"),
                hostname=server.host,
                port=server.port,
                username="bot",
                password="guess",
                use_tls=mode == "tls",
                tls_context=tls_context,
                timeout=10,
            )
        assert wrong.value.code == 535
        assert server.received == []


async def test_starttls_server_requires_tls_before_mail() -> None:
    with start_smtp("starttls") as server:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(
                _message("cleartext"), hostname=server.host, port=server.port, start_tls=False, timeout=10
            )
        assert refused.value.code == 530
        # Certificate checked against the CA and the name "localhost".
        await aiosmtplib.send(
            _message("upgraded"),
            hostname="localhost" if _localhost_is_ipv4() else server.host,
            port=server.port,
            tls_context=server.client_context(),
            timeout=10,
        )
        assert [m.tls for m in server.wait_for(1)] == [True]


def _localhost_is_ipv4() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and infos[0][0] == socket.AF_INET


async def test_fail_next_then_accept() -> None:
    with start_smtp("plain") as server:
        server.fail_next(1, 451, "4.3.0 try again later")
        server.fail_next(1, 550, "5.7.1 no such user here")
        with pytest.raises(aiosmtplib.SMTPResponseException) as temporary:
            await aiosmtplib.send(_message("attempt 1"), hostname=server.host, port=server.port, timeout=10)
        assert temporary.value.code == 451
        assert "try again later" in temporary.value.message
        with pytest.raises(aiosmtplib.SMTPResponseException) as permanent:
            await aiosmtplib.send(_message("attempt 2"), hostname=server.host, port=server.port, timeout=10)
        assert permanent.value.code == 550
        assert server.received == []

        await aiosmtplib.send(_message("attempt 3"), hostname=server.host, port=server.port, timeout=10)
        [received] = server.wait_for(1)
        assert received.message["Subject"] == "attempt 3"
        assert received.login is None


def test_wait_for_times_out() -> None:
    with start_smtp("plain") as server, pytest.raises(TimeoutError, match="got 0"):
        server.wait_for(1, timeout=0.1)


def test_credentials_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="both"):
        start_smtp("plain", username="bot")
