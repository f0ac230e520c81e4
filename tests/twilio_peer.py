"""A local stand-in for Twilio's Messages API, reached by the real ``twilio`` client in tests and benchmarks.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth
(the account SID and auth token) answers ``201`` with a message resource shaped
like Twilio's and records the message; ``GET`` on the same path lists the
messages it took, newest first, filtered by ``To``, ``From`` and ``DateSent``
(``DateSent>=``, ``DateSent<=``; a date or a date and time) and paged
(``PageSize``, ``Page``) as Twilio's message list is. It is scriptable:
:meth:`TwilioPeer.fail` answers the next requests with Twilio's error JSON
(``fail_always`` until :meth:`TwilioPeer.recover`), and :meth:`TwilioPeer.slow`
holds each answer to a send back (after the message was taken).

Nothing here imports pytest.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.etree import ElementTree

import httpx
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-test-auth-token"
BOT_NUMBER = "+15559998888"
MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-fA-F]{32})/Messages\.json$")


@dataclass(frozen=True)
class SentMessage:
    """A message the peer accepted."""

    sid: str
    to: str
    from_: str
    body: str
    media: tuple[str, ...] = ()
    status_callback: str | None = None
    at: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    """When the peer took it, on the wall clock (its ``date_created`` and ``date_sent``)."""


@dataclass
class _Script:
    failures: int = 0
    always: bool = False
    status: int = 500
    code: int = 20500
    delay: float = 0.0


class TwilioPeer:
    """Twilio's Messages API on a free loopback port, served from a thread."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Condition()
        self._sent: list[SentMessage] = []
        self._script = _Script()
        self.requests = 0
        """Sends (``POST``) that reached the peer with the account's credentials."""
        self.lists = 0
        """Message list pages (``GET``) read with the account's credentials."""
        self.connections = 0
        """TCP connections clients opened to the peer (it keeps them alive, as Twilio does)."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.peer = self  # type: ignore[attr-defined]
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        """What to give the twilio client instead of ``https://api.twilio.com``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def sent(self) -> list[SentMessage]:
        """Messages accepted so far, oldest first."""
        with self._lock:
            return list(self._sent)

    def fail(self, times: int = 1, *, status: int = 500, code: int = 20500) -> None:
        """Answer the next ``times`` requests with an error."""
        with self._lock:
            self._script = _Script(failures=times, status=status, code=code, delay=self._script.delay)

    def fail_always(self, *, status: int = 503, code: int = 20503) -> None:
        """Answer every request with an error until :meth:`recover`."""
        with self._lock:
            self._script = _Script(always=True, status=status, code=code, delay=self._script.delay)

    def recover(self) -> None:
        """Accept messages again."""
        with self._lock:
            self._script = _Script(delay=self._script.delay)

    def slow(self, seconds: float) -> None:
        """Hold every answer to a send back ``seconds`` (the message is taken before the wait)."""
        with self._lock:
            self._script.delay = seconds

    def reset(self) -> None:
        """Forget the messages and the script."""
        with self._lock:
            self._sent.clear()
            self._script = _Script()
            self.requests = 0
            self.lists = 0

    def wait_for(self, count: int, timeout: float = 30.0) -> list[SentMessage]:
        """Block until ``count`` messages were accepted; raises ``TimeoutError`` with what arrived."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._sent) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._sent)} of {count} messages reached the Twilio peer: {self._sent}")
                self._lock.wait(left)
            return list(self._sent)

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> TwilioPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # On the server's threads.

    def _refusal(self, path: str, authorization: str) -> tuple[int, dict[str, Any]] | None:
        """Twilio's answer to a request for another path or account, or with wrong credentials; None when right."""
        match = MESSAGES.match(path)
        if match is None:
            return 404, _error(404, 20404, f"The requested resource {path} was not found")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if match["sid"] != self.account_sid or authorization != f"Basic {expected}":
            return 401, _error(401, 20003, "Authenticate")
        return None

    def _scripted_failure(self) -> tuple[int, dict[str, Any]] | None:
        """The scripted failure this request gets (counting it down), if any; the caller holds the lock."""
        script = self._script
        if script.always or script.failures > 0:
            script.failures -= 1
            return script.status, _error(script.status, script.code, "scripted failure")
        return None

    def _answer(self, path: str, authorization: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        refused = self._refusal(path, authorization)
        if refused is not None:
            return refused
        with self._lock:
            self.requests += 1
            failure = self._scripted_failure()
            if failure is not None:
                return failure
        to, sender = form.get("To", [""])[-1], form.get("From", [""])[-1]
        if not to or not sender:
            return 400, _error(400, 21604, "A 'To' and a 'From' phone number are required")
        message = SentMessage(
            sid="SM" + secrets.token_hex(16),
            to=to,
            from_=sender,
            body=form.get("Body", [""])[-1],
            media=tuple(form.get("MediaUrl", [])),
            status_callback=form.get("StatusCallback", [None])[-1],
        )
        with self._lock:
            self._sent.append(message)
            self._lock.notify_all()
        return 201, self._resource(message)

    def _list(self, path: str, authorization: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """A page of the message list, as Twilio's ``GET .../Messages.json`` answers it."""
        refused = self._refusal(path, authorization)
        if refused is not None:
            return refused
        with self._lock:
            self.lists += 1
            failure = self._scripted_failure()
            if failure is not None:
                return failure
            messages = list(self._sent)
        filters = {name: values[-1] for name, values in query.items() if values and name not in ("Page", "PageSize")}
        try:
            size = min(1000, max(1, int(query.get("PageSize", ["50"])[-1])))
            number = max(0, int(query.get("Page", ["0"])[-1]))
            wanted = [m for m in messages if _matches(m, filters)]
        except ValueError as exc:
            return 400, _error(400, 20001, f"Invalid filter: {exc}")
        wanted.sort(key=lambda m: m.created, reverse=True)
        page = wanted[number * size : (number + 1) * size]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

        def uri(at: int) -> str:
            return f"{base}?{urlencode({**filters, 'PageSize': size, 'Page': at})}"

        more = (number + 1) * size < len(wanted)
        return 200, {
            "messages": [self._resource(m, listed=True) for m in page],
            "uri": uri(number),
            "first_page_uri": uri(0),
            "next_page_uri": uri(number + 1) if more else None,
            "previous_page_uri": uri(number - 1) if number > 0 else None,
            "page": number,
            "page_size": size,
            "start": number * size,
            "end": number * size + max(0, len(page) - 1),
        }

    def _resource(self, message: SentMessage, *, listed: bool = False) -> dict[str, Any]:
        """The message as Twilio shows it: ``queued`` when it is taken, ``sent`` (with ``date_sent``) when listed."""
        created = formatdate(message.created, usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message.sid}.json"
        return {
            "sid": message.sid,
            "account_sid": self.account_sid,
            "to": message.to,
            "from": message.from_,
            "body": message.body,
            "status": "sent" if listed else "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "num_segments": "1",
            "num_media": str(len(message.media)),
            "messaging_service_sid": None,
            "error_code": None,
            "error_message": None,
            "price": None,
            "price_unit": "USD",
            "date_created": created,
            "date_updated": created,
            "date_sent": created if listed else None,
            "uri": uri,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }


def _when(value: str) -> tuple[datetime, bool]:
    """A ``DateSent`` filter's value (``YYYY-MM-DD`` or an ISO 8601 time, UTC) and whether it is a whole day."""
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC), True
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), False


def _matches(message: SentMessage, filters: dict[str, str]) -> bool:
    """Whether a taken message passes the list's filters (``DateSent>`` is ``DateSent>=`` URL-decoded)."""
    sent = datetime.fromtimestamp(message.created, UTC)
    for name, value in filters.items():
        if name == "To" and message.to != value:
            return False
        if name == "From" and message.from_ != value:
            return False
        if name.startswith("DateSent"):
            when, day = _when(value.lstrip("<>="))
            end = when + timedelta(days=1) if day else when
            operator = name.removeprefix("DateSent") + value[: len(value) - len(value.lstrip("<>="))]
            if operator.startswith(">") and sent < when:
                return False
            if operator.startswith("<") and (sent >= end if day else sent > when):
                return False
            if not operator and not (when <= sent < end if day else sent == when):
                return False
    return True


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests on one connection

    def setup(self) -> None:
        super().setup()
        peer: TwilioPeer = self.server.peer  # type: ignore[attr-defined]
        with peer._lock:
            peer.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_POST(self) -> None:
        peer: TwilioPeer = self.server.peer  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        status, body = peer._answer(urlsplit(self.path).path, self.headers.get("Authorization", ""), form)
        delay = peer._script.delay
        if delay:
            time.sleep(delay)
        self._reply(status, body)

    def do_GET(self) -> None:
        peer: TwilioPeer = self.server.peer  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        self._reply(*peer._list(url.path, self.headers.get("Authorization", ""), query))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


def sign(url: str, params: dict[str, str], auth_token: str = AUTH_TOKEN) -> str:
    """``X-Twilio-Signature`` for a webhook to ``url`` with form ``params``, computed by the twilio package."""
    return RequestValidator(auth_token).compute_signature(url, params)


def inbound_form(
    text: str,
    *,
    sid: str | None = None,
    sender: str = "+15550001111",
    to: str | None = None,
    account_sid: str = ACCOUNT_SID,
    media: tuple[tuple[str, str], ...] = (),
) -> dict[str, str]:
    """The form Twilio posts for an incoming SMS (WhatsApp when ``sender`` starts with ``whatsapp:``).

    ``to`` is the bot's number, by default ``+15559998888`` (``whatsapp:+15559998888``).
    """
    whatsapp = sender.startswith("whatsapp:")
    to = to or ("whatsapp:" if whatsapp else "") + BOT_NUMBER
    form = {
        "ToCountry": "US",
        "SmsMessageSid": sid or "",
        "NumMedia": str(len(media)),
        "SmsSid": sid or "",
        "SmsStatus": "received",
        "Body": text,
        "To": to,
        "NumSegments": "1",
        "MessageSid": sid or "",
        "AccountSid": account_sid,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    if sid is None:
        form["MessageSid"] = form["SmsMessageSid"] = form["SmsSid"] = "SM" + secrets.token_hex(16)
    for index, (url, content_type) in enumerate(media):
        form[f"MediaUrl{index}"] = url
        form[f"MediaContentType{index}"] = content_type
    if whatsapp:
        form.update({"ProfileName": "Ada", "WaId": sender.removeprefix("whatsapp:+"), "MessageType": "text"})
    return form


def status_form(
    message_sid: str, status: str, *, error_code: str | None = None, account_sid: str = ACCOUNT_SID
) -> dict[str, str]:
    """The form of a status callback for ``message_sid``."""
    form = {
        "MessageSid": message_sid,
        "SmsSid": message_sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        form["ErrorCode"] = error_code
    return form


PUBLIC_URL = "https://bots.example.com"
"""The public URL the tests' Twilio configs declare (``public_base_url``): what Twilio signs."""


async def post_signed(
    client: httpx.AsyncClient,
    path: str,
    form: dict[str, str],
    *,
    base: str = PUBLIC_URL,
    token: str = AUTH_TOKEN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``form`` to ``path`` as Twilio would, signed for ``base + path`` with ``token``."""
    signature = sign(base + path, form, token)
    return await client.post(path, data=form, headers={"X-Twilio-Signature": signature, **(headers or {})})


def twiml_replies(body: str) -> list[str]:
    """The texts of the ``<Message>`` elements of a TwiML answer."""
    if not body.strip():
        return []
    return [(m.text or "").strip() for m in ElementTree.fromstring(body).iter("Message")]


def twilio_config(peer: TwilioPeer, mode: str = "rest", **extra: object) -> dict[str, object]:
    """A Twilio channel config that reaches ``peer`` and declares :data:`PUBLIC_URL`."""
    return {
        "account_sid": peer.account_sid,
        "auth_token": peer.auth_token,
        "reply_mode": mode,
        "public_base_url": PUBLIC_URL,
        "api_base_url": peer.base_url,
        **extra,
    }
