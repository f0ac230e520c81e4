"""The Twilio channel: SMS and WhatsApp through Twilio Programmable Messaging.

Point a Twilio number's "A message comes in" webhook at
``POST {public URL}/channels/twilio/{bot}`` (WhatsApp senders too: their
``From`` starts with ``whatsapp:``). Every request's ``X-Twilio-Signature`` is
checked with the bot's auth token against the public URL Twilio called.

``reply_mode``:

* ``twiml``: the reply goes back in the webhook's TwiML answer when the turn
  finishes within ``twiml_wait_seconds``; a slower turn is acknowledged empty and
  its reply sent through the REST API, so it is never lost;
* ``rest``: the webhook is acknowledged at once with empty TwiML and the reply is
  sent through Twilio's REST API by a delivery job, with retries.

Replies carry a status callback (``{bot}/status?ref=...``) when the deployment
knows its public URL, so the stored message moves on to ``delivered`` or
``failed``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import weakref
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qs, parse_qsl, urlparse, urlsplit

import msgspec

from botloom import (
    Attachment,
    Capabilities,
    ChannelAdapter,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
    Secret,
    SendError,
    aiohttp_session,
    endpoint,
    hookimpl,
)

SMS_LIMIT = 1600
"""Longest body of one SMS message Twilio accepts (characters)."""
WHATSAPP_LIMIT = 4096
"""Longest body of one WhatsApp message."""
WHATSAPP = "whatsapp:"
MAX_MEDIA = 10
MAX_INBOUND_TEXT = 10_000
STATUS_PATH = "status"
TWIML = "application/xml"
FORM = "application/x-www-form-urlencoded"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response />'
CLOCK_SKEW = timedelta(minutes=1)
"""How much earlier than botloom's record of an attempt Twilio's clock may date the message (see ``find_sent``)."""
FIND_LIMIT = 200
"""Messages to the recipient ``find_sent`` reads at most, newest first."""
FIND_PAGE = 50
_PHONE_PUNCTUATION = str.maketrans("", "", " -.()\u00a0")
"""What people write inside a phone number and E.164 leaves out."""

_STATUSES: dict[str, DeliveryStatus] = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
"""Twilio's message statuses, as botloom's delivery statuses."""

_http_log = logging.getLogger(__name__ + ".http")
_http_log.setLevel(logging.WARNING)  # the twilio client logs every request at INFO

Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=500)]


class TwilioConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bot's Twilio account and how it replies."""

    account_sid: Annotated[str, msgspec.Meta(pattern=r"^AC[0-9a-fA-F]{32}$")]
    auth_token: Secret
    reply_mode: Literal["twiml", "rest"] = "twiml"
    """``twiml``: reply in the webhook's answer; ``rest``: acknowledge at once, send through the REST API."""
    from_number: Annotated[str, msgspec.Meta(pattern=r"^(whatsapp:)?\+?[0-9A-Za-z]{2,20}$")] | None = None
    """The sender of replies sent through the REST API; default: the number the user wrote to."""
    public_base_url: Url | None = None
    """The URL Twilio reaches this server at, when it differs from ``BOTLOOM_PUBLIC_URL`` (a proxy)."""
    api_base_url: Annotated[Url, endpoint()] | None = None
    """Where to reach Twilio's REST API instead of ``https://api.twilio.com`` (a regional proxy, a test double);
    a private address only where the operator allows it (``BOTLOOM_ALLOWED_ENDPOINTS``)."""
    twiml_wait_seconds: Annotated[float, msgspec.Meta(gt=0, le=13)] = 10.0
    """In ``twiml`` mode, how long a webhook waits for the turn; Twilio gives up after 15 seconds."""


class TwilioSendError(SendError):
    """Twilio did not take a reply; ``retryable`` says whether trying again can help."""


class _MultiDict(dict[str, list[str]]):
    """Form fields with every value, as ``RequestValidator`` reads them (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _form(request: ChannelRequest) -> _MultiDict:
    """The request's form with every value of each field (verify, parse and status reports all read it)."""
    return _parse_form(request.body)


@functools.lru_cache(maxsize=64)
def _parse_form(body: bytes) -> _MultiDict:
    fields = _MultiDict()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ChannelRejected(400, f"the body is not a UTF-8 form ({FORM})") from None
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _candidate_urls(request: ChannelRequest, base: str | None) -> list[str]:
    """The URLs Twilio may have signed: the configured public one, the host's, and the proxy's headers'."""
    parts = urlsplit(request.url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    urls = [base.rstrip("/") + tail] if base else []
    urls.append(request.url)
    host = request.headers.get("x-forwarded-host") or request.headers.get("host")
    if host:
        scheme = request.headers.get("x-forwarded-proto", parts.scheme).split(",")[0].strip()
        urls.append(f"{scheme}://{host.split(',')[0].strip()}{tail}")
    return list(dict.fromkeys(urls))


def _signed(token: str, url: str, fields: _MultiDict, signature: str) -> bool:
    """Whether ``signature`` is Twilio's HMAC-SHA1 of ``url`` and the form (``RequestValidator.compute_signature``)."""
    text = url + "".join(name + value for name in sorted(fields) for value in sorted(set(fields[name])))
    expected = base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


def _one(fields: _MultiDict, name: str, *, required: bool = True, limit: int = 200) -> str:
    values = fields.get(name) or [""]
    value = values[-1]
    if required and not value:
        raise ChannelRejected(400, f"missing form field {name!r}")
    if len(value) > limit:
        raise ChannelRejected(400, f"form field {name!r} is longer than {limit} characters")
    return value


def _attachments(fields: _MultiDict) -> tuple[Attachment, ...]:
    try:
        count = int(_one(fields, "NumMedia", required=False) or 0)
    except ValueError:
        raise ChannelRejected(400, "NumMedia is not a number") from None
    if not 0 <= count <= MAX_MEDIA:
        raise ChannelRejected(400, f"NumMedia must be between 0 and {MAX_MEDIA}")
    found = []
    for index in range(count):
        url = _one(fields, f"MediaUrl{index}", limit=2000)
        kind = _one(fields, f"MediaContentType{index}", required=False) or None
        found.append(Attachment(url=url, content_type=kind))
    return tuple(found)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def is_whatsapp(address: str) -> bool:
    """Whether a Twilio address is a WhatsApp one (``whatsapp:+15551234567``)."""
    return address.startswith(WHATSAPP)


class TwilioChannel(ChannelAdapter[TwilioConfig]):
    """Verifies and parses Twilio's webhooks, answers them in TwiML, and sends through the REST API."""

    name: ClassVar[str] = "twilio"
    kind: ClassVar[ChannelKind] = "push"
    capabilities: ClassVar[Capabilities] = Capabilities(
        text_limit=True, answers_in_response=True, delivery_reports=True, finds_sent=True
    )
    max_text_length: ClassVar[int | None] = SMS_LIMIT

    def __init__(self) -> None:
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _session(self) -> Any:
        """The HTTP session every send and lookup of this process shares (of the running event loop).

        One pool of connections to Twilio (or ``api_base_url``): a send reuses an open
        connection instead of a new TCP and TLS handshake. Opened on first use; closed
        by :meth:`aclose` at the host's shutdown.
        """
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp_session()  # connects only where the endpoint guard allows
            self._sessions[loop] = session
        return session

    async def aclose(self) -> None:
        """Close the shared HTTP session of the running event loop (the host's shutdown)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def contact_address(self, address: str) -> str:
        """A number as Twilio writes it, E.164 (``+15550100``, ``whatsapp:+15550100``).

        Spaces, dashes, dots and parentheses go from a number starting with ``+``, and a
        ``whatsapp:`` prefix is written in lower case. A number without its country code,
        or an alphanumeric sender, is kept as it is: there is no country code to assume.
        """
        value = address.strip()
        prefix = ""
        if value[: len(WHATSAPP)].lower() == WHATSAPP:
            prefix, value = WHATSAPP, value[len(WHATSAPP) :].strip()
        if value.startswith("+"):
            digits = value.translate(_PHONE_PUNCTUATION)
            if digits[1:].isdigit():
                value = digits
        return prefix + value

    @staticmethod
    def settings(config: Any) -> TwilioConfig:
        """The bot's config as a :class:`TwilioConfig`."""
        if isinstance(config, TwilioConfig):
            return config
        return msgspec.convert(config, TwilioConfig, strict=False)

    def verify(self, request: ChannelRequest, config: TwilioConfig) -> None:
        """Check ``X-Twilio-Signature`` against the bot's auth token; 403 when it is missing or wrong."""
        from twilio.request_validator import RequestValidator

        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise ChannelRejected(403, "missing X-Twilio-Signature header")
        settings = self.settings(config)
        validator = RequestValidator(settings.auth_token)
        query = parse_qs(urlsplit(request.url).query)
        if "bodySHA256" in query:  # a JSON webhook: the signature covers the body's hash
            params: Any = request.body.decode("utf-8", "replace")
        elif request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
            raise ChannelRejected(415, f"Twilio webhooks are {FORM}")
        else:
            params = _form(request)
            first = _candidate_urls(request, settings.public_base_url)[0]
            if _signed(settings.auth_token, urlparse(first).geturl(), params, signature):
                return  # the common case, one HMAC; RequestValidator below tries every URL with and without port
        for url in _candidate_urls(request, settings.public_base_url):
            if validator.validate(url, params, signature):
                return
        raise ChannelRejected(
            403,
            "invalid X-Twilio-Signature: check the bot's auth_token, and that BOTLOOM_PUBLIC_URL (or the "
            "twilio config's public_base_url) is the URL Twilio calls",
        )

    def parse(self, request: ChannelRequest, config: TwilioConfig) -> list[InboundMessage]:
        """An incoming SMS or WhatsApp message; nothing for a status callback or an empty message."""
        if request.subpath == STATUS_PATH:
            return []
        if request.subpath:
            raise ChannelRejected(404, f"no Twilio webhook {request.subpath!r}: use /channels/twilio/{{bot}}")
        fields = _form(request)
        settings = self.settings(config)
        if _one(fields, "AccountSid") != settings.account_sid:
            raise ChannelRejected(403, "AccountSid is not the bot's Twilio account")
        sid = _one(fields, "MessageSid", required=False) or _one(fields, "SmsMessageSid")
        sender, to = _one(fields, "From"), _one(fields, "To")
        text = _one(fields, "Body", required=False, limit=MAX_INBOUND_TEXT).strip()
        attachments = _attachments(fields)
        if not text and not attachments:
            return []
        metadata = {"to": to}
        profile = _one(fields, "ProfileName", required=False)
        if profile:
            metadata["profile_name"] = profile
        return [
            InboundMessage(
                channel=self.name,
                text=text,
                sender=sender,
                idempotency_key=sid,
                attachments=attachments,
                metadata=metadata,
            )
        ]

    def response_window(self, request: ChannelRequest, config: TwilioConfig) -> float:
        """Seconds the host may wait for the turn to answer in this webhook's TwiML (``twiml`` mode)."""
        settings = self.settings(config)
        if request.subpath or settings.reply_mode != "twiml":
            return 0.0
        return settings.twiml_wait_seconds

    def text_limit(self, message: OutboundMessage, config: TwilioConfig) -> int:
        """The longest body one message to this recipient may have: 4096 on WhatsApp, 1600 on SMS."""
        return WHATSAPP_LIMIT if is_whatsapp(message.recipient) else SMS_LIMIT

    def acknowledge(
        self, request: ChannelRequest, replies: list[OutboundMessage] | None, config: TwilioConfig
    ) -> ChannelResponse:
        """TwiML with the replies (one ``<Message>`` each), or empty TwiML; an empty 200 for status callbacks."""
        if request.subpath == STATUS_PATH:
            return ChannelResponse(status=200, body=b"", media_type="text/plain")
        if not replies:
            return ChannelResponse(status=200, body=EMPTY_TWIML, media_type=TWIML)
        from twilio.twiml.messaging_response import MessagingResponse

        base = self.settings(config).public_base_url or _origin(request.url)
        response = MessagingResponse()
        for reply in replies:
            callback = _status_callback(reply, base)
            message = response.message(reply.text, **({"action": callback, "method": "POST"} if callback else {}))
            for attachment in reply.attachments:
                if attachment.url:
                    message.media(attachment.url)
        return ChannelResponse(status=200, body=str(response).encode(), media_type=TWIML)

    def delivery_report(self, request: ChannelRequest, config: TwilioConfig) -> DeliveryReport | None:
        """A status callback as a :class:`~botloom.DeliveryReport`; ``None`` for other requests."""
        if request.subpath != STATUS_PATH:
            return None
        fields = _form(request)
        status = _STATUSES.get(_one(fields, "MessageStatus", required=False) or _one(fields, "SmsStatus"))
        if status is None:
            return None
        code = _one(fields, "ErrorCode", required=False)
        detail = _one(fields, "ErrorMessage", required=False, limit=1000)
        ref = parse_qs(urlsplit(request.url).query).get("ref", [None])[-1]
        return DeliveryReport(
            status=status,
            provider_id=_one(fields, "MessageSid", required=False) or _one(fields, "SmsSid"),
            ref=ref,
            error=f"twilio error {code}" + (f": {detail}" if detail else "") if code else None,
        )

    async def send(self, message: OutboundMessage, config: TwilioConfig) -> str:
        """Send one message through Twilio's Messages API; returns its ``MessageSid``.

        Raises :class:`TwilioSendError` when Twilio did not take the message,
        ``retryable`` unless Twilio refused it itself (a 4xx other than 429: a bad
        number, an opted-out user). Any other exception (a timeout, a connection cut
        mid-request) leaves it unknown whether Twilio has it: :meth:`find_sent` tells.
        """
        import aiohttp
        from twilio.base.exceptions import TwilioRestException

        settings = self.settings(config)
        sender = _sender(message, settings)
        arguments: dict[str, Any] = {"to": message.recipient, "from_": sender, "body": message.text}
        media = [a.url for a in message.attachments if a.url]
        if media:
            arguments["media_url"] = media
        callback = _status_callback(message, settings.public_base_url)
        if callback:
            arguments["status_callback"] = callback
        try:
            created = await _client(settings, self._session()).messages.create_async(**arguments)
        except TwilioRestException as exc:  # the tenant sees the status and Twilio's error code, never the body
            raise _refused(exc.status, exc.code, exc.msg) from None
        except aiohttp.ClientConnectorError as exc:  # no connection, so no message
            raise TwilioSendError(
                f"could not connect to Twilio's REST API ({type(exc).__name__})", retryable=True
            ) from None
        return str(created.sid)

    async def find_sent(self, message: OutboundMessage, since: datetime, config: TwilioConfig) -> str | None:
        """The ``MessageSid`` of a message Twilio took for this part at or after ``since``, or ``None``.

        Twilio's Messages API takes no idempotency key and echoes no id of the
        caller's, so the part is recognised by what it is: a message created through
        the REST API (``outbound-api``) to the recipient, from the sender :meth:`send`
        uses, with the part's body, created no earlier than
        :data:`CLOCK_SKEW` before ``since``. The list is read filtered by ``To`` and
        ``From``, newest first, until a message created a day before ``since`` (at
        most :data:`FIND_LIMIT` messages); ``DateSent`` is not used as a filter, since a
        message still queued at Twilio has no ``date_sent`` yet. The newest match wins.
        """
        from twilio.base.exceptions import TwilioException, TwilioRestException

        settings = self.settings(config)
        sender = _sender(message, settings)
        after, oldest = since - CLOCK_SKEW, since - timedelta(days=1)
        try:
            listed = await _client(settings, self._session()).messages.stream_async(
                to=message.recipient, from_=sender, limit=FIND_LIMIT, page_size=FIND_PAGE
            )
            async for record in listed:
                created = record.date_created
                if created is not None and created < oldest:
                    break
                if (
                    record.direction == "outbound-api"
                    and created is not None
                    and created >= after
                    and (record.body or "").strip() == message.text.strip()
                    and record.sid
                ):
                    return str(record.sid)
        except TwilioRestException as exc:
            raise _refused(exc.status, exc.code, exc.msg, "the message list") from None
        except TwilioException as exc:  # a page the list could not read: the response is its second argument
            response = exc.args[1] if len(exc.args) > 1 else None
            status = int(getattr(response, "status_code", 0) or 0)
            try:
                code = json.loads(getattr(response, "text", "") or "{}").get("code")
            except (ValueError, AttributeError):
                code = None
            raise _refused(status, code, str(exc.args[0]) if exc.args else "", "the message list") from None
        return None


def _sender(message: OutboundMessage, settings: TwilioConfig) -> str:
    """The number a reply goes out from: ``from_number``, else the number the user wrote to."""
    sender = settings.from_number or str((message.metadata.get("reply_to") or {}).get("to") or "")
    if not sender:
        raise TwilioSendError("no sender number: set from_number in the bot's twilio config", retryable=False)
    if is_whatsapp(message.recipient) and not is_whatsapp(sender):
        sender = WHATSAPP + sender
    return sender


def _client(settings: TwilioConfig, session: Any) -> Any:
    """A twilio REST client of the bot's account on ``session``, reaching ``api_base_url`` when one is configured."""
    from twilio.rest import Client

    return Client(settings.account_sid, settings.auth_token, http_client=_http_client(settings.api_base_url, session))


def _refused(status: int, code: object, detail: str, what: str = "") -> TwilioSendError:
    """Twilio's error answer as a :class:`TwilioSendError`: its status and error code, never its text.

    Retryable for a 429 or a 5xx; a 4xx is Twilio refusing (a bad number, an opted-out user, a wrong token).
    """
    retryable = not status or status == 429 or status >= 500
    number = f" (error {code})" if isinstance(code, int) and not isinstance(code, bool) else ""
    logging.getLogger(__name__).debug("Twilio answered %s: %s", status, detail)
    to = f" to {what}" if what else ""
    return TwilioSendError(f"Twilio answered {status}{number}{to}", retryable=retryable)


def _status_callback(message: OutboundMessage, base: str | None) -> str | None:
    """Where Twilio reports this message's status: the bot's status webhook, naming the part.

    ``base`` is the public URL Twilio reaches this server at; without one (and
    without ``BOTLOOM_PUBLIC_URL``) no status is asked for.
    """
    base = base or message.metadata.get("public_url")
    path, ref = message.metadata.get("webhook_path"), message.metadata.get("delivery_ref")
    if not base or not path or not ref:
        return None
    return f"{str(base).rstrip('/')}{path}/{STATUS_PATH}?ref={ref}"


def _http_client(api_base_url: str | None, session: Any) -> Any:
    """Twilio's async HTTP client on the channel's shared ``session``, sending to ``api_base_url`` when configured.

    A custom HTTP client is the twilio library's documented way to reach another
    host. The session is the channel's (:meth:`TwilioChannel._session`): the client
    never closes it.
    """
    client = _redirecting_client_class()(pool_connections=False, timeout=30, logger=_http_log)
    client.base_url = api_base_url
    client.session = session
    return client


@functools.cache
def _redirecting_client_class() -> type:
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    class RedirectingClient(AsyncTwilioHttpClient):  # type: ignore[misc]
        base_url: str | None = None

        async def request(self, method: str, url: str, **kwargs: Any) -> Any:
            if self.base_url:
                parts = urlsplit(url)
                url = self.base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
            auth = kwargs.pop("auth", None)
            if auth is not None:  # as a header: aiohttp deprecates its BasicAuth
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Basic {token}"}
            return await super().request(method, url, **kwargs)

    return RedirectingClient


@hookimpl
def register_channels() -> list[ChannelAdapter[Any]]:
    """The Twilio channel (SMS and WhatsApp)."""
    return [TwilioChannel()]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The bot's Twilio account and reply mode."""
    return TwilioConfig
