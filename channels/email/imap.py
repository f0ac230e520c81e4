r"""Reading new mail from an IMAP mailbox with ``aioimaplib``.

Each poll logs in, selects the mailbox, and fetches the unseen messages above
the last UID it handled (``BODY.PEEK``, so fetching alone marks nothing). Each
message is handed to the host, which stores it; only then is it flagged
``\Seen``. The cursor keeps the mailbox's ``UIDVALIDITY`` and the last UID, so a
restarted host resumes where it stopped; a message stored but not yet flagged
when the host died is fetched again and recognised by its Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from botloom import open_socket, server_name

from .config import EmailConfig

logger = logging.getLogger(__name__)

BATCH = 50
"""Messages fetched per poll at most; the rest wait for the next poll."""

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")


class ImapError(Exception):
    """The IMAP server refused a step of the poll (login, mailbox, fetch)."""


Handle = Callable[[int, bytes, bool], Awaitable[None]]
"""``await handle(uid, raw message, truncated)``: store one fetched message."""


def _check(response: Any, step: str) -> Any:
    if response.result != "OK":
        detail = b" ".join(line for line in response.lines if isinstance(line, bytes)).decode("utf-8", "replace")
        raise ImapError(f"IMAP {step} failed: {detail[:300]}")
    return response


def _uids(response: Any) -> list[int]:
    found: list[int] = []
    for line in response.lines:
        if isinstance(line, bytes | bytearray) and not line.startswith((b"SEARCH completed", b"Search completed")):
            found.extend(int(token) for token in bytes(line).split() if token.isdigit())
    return sorted(set(found))


def _message(response: Any) -> bytes | None:
    """The literal of a ``UID FETCH ... BODY.PEEK[]`` response."""
    for line in response.lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


async def poll_mailbox(config: EmailConfig, cursor: dict[str, Any], handle: Handle) -> dict[str, Any]:
    """Fetch the mailbox's new unseen messages, hand each to ``handle``, flag it seen; the new cursor."""
    import aioimaplib

    if not (config.imap_host and config.imap_username and config.imap_password):
        raise ImapError("imap_host, imap_username and imap_password are all needed to read a mailbox")
    try:  # to an address the endpoint guard checked (EndpointRefused otherwise)
        sock = await open_socket(config.imap_host, config.imap_port, connect_timeout=config.timeout_seconds)
    except (OSError, TimeoutError) as exc:
        raise ImapError(f"could not reach the IMAP server {config.imap_host}:{config.imap_port}: {exc}") from None
    context = ssl.create_default_context() if config.imap_security == "tls" else None
    client: Any = _connected_client(aioimaplib, sock, config, context)
    try:
        await client.wait_hello_from_server()
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise ImapError(f"could not reach the IMAP server {config.imap_host}:{config.imap_port}: {exc}") from None
    try:
        login = await client.login(config.imap_username, config.imap_password)
        if login.result != "OK":
            raise ImapError("the IMAP server refused the login: check imap_username and imap_password")
        selected = _check(await client.select(_quoted(config.imap_mailbox)), f"SELECT {config.imap_mailbox}")
        validity = next((int(m.group(1)) for line in selected.lines if (m := _UIDVALIDITY.search(bytes(line)))), 0)
        last = int(cursor.get("last_uid", 0)) if cursor.get("uidvalidity") == validity else 0
        criteria = f"UNSEEN UID {last + 1}:*" if last else "UNSEEN"
        uids = [uid for uid in _uids(_check(await client.uid_search(criteria), "SEARCH")) if uid > last]
        for uid in uids[:BATCH]:
            raw, truncated = await _fetch(client, uid, config.max_message_bytes)
            if raw is not None:
                await handle(uid, raw, truncated)
            _check(await client.uid("store", str(uid), "+FLAGS", "(\\Seen)"), "STORE \\Seen")
            last = uid
        return {"uidvalidity": validity, "last_uid": last, "mailbox": config.imap_mailbox}
    finally:
        try:
            await client.logout()
        except Exception:
            logger.debug("IMAP logout failed", exc_info=True)


async def _fetch(client: Any, uid: int, limit: int) -> tuple[bytes | None, bool]:
    """The raw message (its first ``limit`` bytes when larger) and whether it was cut."""
    sized = _check(await client.uid("fetch", str(uid), "(RFC822.SIZE)"), "FETCH RFC822.SIZE")
    size = next((int(m.group(1)) for line in sized.lines if (m := re.search(rb"RFC822\.SIZE (\d+)", bytes(line)))), 0)
    part = f"(BODY.PEEK[]<0.{limit}>)" if size > limit else "(BODY.PEEK[])"
    fetched = _check(await client.uid("fetch", str(uid), part), "FETCH")
    raw = _message(fetched)
    if raw is None:
        logger.warning("IMAP message %s came without a body; skipped", uid)
    return raw, size > limit


def _quoted(mailbox: str) -> str:
    """A mailbox name as an IMAP quoted string."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _connected_client(aioimaplib: Any, sock: socket.socket, config: EmailConfig, context: ssl.SSLContext | None) -> Any:
    """An aioimaplib client speaking over ``sock``, already connected to a checked address.

    aioimaplib connects to a host name by itself; this client hands asyncio the
    socket instead, with the configured host as the TLS server name.
    """

    class Connected(aioimaplib.IMAP4):  # type: ignore[misc]
        def create_client(
            self, host: str, port: int, loop: Any, conn_lost_cb: Any = None, ssl_context: Any = None
        ) -> None:
            running = loop if loop is not None else asyncio.get_running_loop()
            self.protocol = aioimaplib.IMAP4ClientProtocol(running, conn_lost_cb)
            name = server_name(config.imap_host or "") if ssl_context is not None else None
            protocol = self.protocol
            connecting = running.create_connection(lambda: protocol, sock=sock, ssl=ssl_context, server_hostname=name)
            self._client_task = running.create_task(connecting)

    return Connected(host=config.imap_host, port=config.imap_port, timeout=config.timeout_seconds, ssl_context=context)
