"""The Twilio channel: signatures, media, long replies, status callbacks, TwiML timing, bad input.

Webhooks are signed with the twilio package's own ``RequestValidator``; the REST
reply mode reaches a local Twilio peer through the real ``twilio`` client. The
behaviour every channel shares is in ``test_channel_contract_twilio.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from botloom import OutboundMessage
from botloom.channels.twilio import TwilioChannel
from botloom.core.netguard import policy_installed
from botloom.core.settings import Settings
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from botloom.testing.channel_contract import configure_twilio, fast_app, settled, transcript, wait_until
from tests.helpers import api_client, disable, enable, host_with
from tests.turn_process import SLOWPOKE
from tests.twilio_peer import (
    BOT_NUMBER,
    PUBLIC_URL,
    TwilioPeer,
    inbound_form,
    post_signed,
    sign,
    status_form,
    twilio_config,
    twiml_replies,
)

WEBHOOK = "/channels/twilio/acme/support"
SMS_USER = "+15550001111"
WHATSAPP_USER = "whatsapp:+15550001111"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(fast_app(settings, services)) as test_client:
        yield test_client


async def wait_sent(peer: TwilioPeer, count: int) -> list[str]:
    return [m.body for m in await asyncio.to_thread(peer.wait_for, count, 30)]


# ----------------------------------------------------------------------------- configuration


async def test_config_is_validated_and_the_token_masked(
    client: httpx.AsyncClient, demo: DemoInfo, peer: TwilioPeer
) -> None:
    bad = await configure_twilio(client, demo, {**twilio_config(peer), "account_sid": "nope", "reply_mode": "fax"})
    assert bad.status_code == 400
    assert {e["key"] for e in bad.json()["extra"]} >= {"config.account_sid", "config.reply_mode"}
    good = await configure_twilio(client, demo, twilio_config(peer, "twiml"))
    assert good.status_code == 200, good.text
    assert good.json()["config"]["auth_token"] == "********"
    assert good.json()["config"]["reply_mode"] == "twiml"


# ----------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("public_url", "config_base", "signed_for", "headers", "status"),
    [
        (None, PUBLIC_URL, PUBLIC_URL, {}, 200),
        ("https://public.example", None, "https://public.example", {}, 200),
        (None, None, "https://proxied.example", {"X-Forwarded-Proto": "https", "Host": "proxied.example"}, 200),
        (None, None, "http://testserver", {}, 200),
        (None, PUBLIC_URL, "https://elsewhere.example", {}, 403),
        ("https://public.example", None, "https://public.example:8443", {}, 403),
    ],
    ids=["config-base", "BOTLOOM_PUBLIC_URL", "tls-proxy-headers", "direct", "other-host", "other-port"],
)
async def test_signatures_are_checked_against_the_public_url(
    settings: Settings,
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    public_url: str | None,
    config_base: str | None,
    signed_for: str,
    headers: dict[str, str],
    status: int,
) -> None:
    settings = msgspec.structs.replace(settings, public_url=public_url)
    async with api_client(fast_app(settings, services)) as client:
        config = {k: v for k, v in twilio_config(peer, "rest").items() if k != "public_base_url"}
        assert (await configure_twilio(client, demo, {**config, "public_base_url": config_base})).status_code == 200
        response = await post_signed(client, WEBHOOK, inbound_form("hello"), base=signed_for, headers=headers)
    assert response.status_code == status, response.text
    assert len(await transcript(services, demo)) == (1 if status == 200 else 0)


# ----------------------------------------------------------------------------- bad input


def _bad_requests(peer: TwilioPeer) -> dict[str, tuple[str, bytes, dict[str, str], int]]:
    """name → (path, body, headers, expected status); signatures are made for the body as given."""
    form = inbound_form("hello")
    body = httpx.QueryParams(form).__str__().encode()

    def signed(data: bytes, path: str = WEBHOOK, token: str = peer.auth_token) -> dict[str, str]:
        params = dict(httpx.QueryParams(data.decode("utf-8", "replace")).multi_items())
        return {"X-Twilio-Signature": sign(PUBLIC_URL + path, params, token), "content-type": FORM}

    tampered = body.replace(b"Body=hello", b"Body=give+me+a+refund")
    return {
        "unsigned": (WEBHOOK, body, {"content-type": FORM}, 403),
        "forged": (WEBHOOK, body, signed(body, token="guessed-token"), 403),
        "tampered": (WEBHOOK, tampered, signed(body), 403),
        "truncated": (WEBHOOK, body[: len(body) // 2], signed(body), 403),
        "truncated-escape": (WEBHOOK, body + b"&Extra=%E2%8", signed(body), 400),
        "not-utf8": (WEBHOOK, body + b"&Extra=\xff\xfe", signed(body), 400),
        "unknown-charset": (WEBHOOK, body, {**signed(body), "content-type": f"{FORM}; charset=klingon"}, 415),
        "json": (WEBHOOK, b'{"Body": "hello"}', {**signed(body), "content-type": "application/json"}, 415),
        "oversized": (WEBHOOK, body + b"&Pad=" + b"x" * 2_000_000, signed(body), 413),
        "missing-fields": (
            WEBHOOK,
            b"AccountSid=" + peer.account_sid.encode(),
            signed(b"AccountSid=" + peer.account_sid.encode()),
            400,
        ),
        "other-account": (
            WEBHOOK,
            body.replace(peer.account_sid.encode(), b"AC" + b"f" * 32),
            signed(body.replace(peer.account_sid.encode(), b"AC" + b"f" * 32)),
            403,
        ),
        "bad-media-count": (
            WEBHOOK,
            body.replace(b"NumMedia=0", b"NumMedia=many"),
            signed(body.replace(b"NumMedia=0", b"NumMedia=many")),
            400,
        ),
        "unknown-subpath": (WEBHOOK + "/voice", body, signed(body, WEBHOOK + "/voice"), 404),
        "unknown-bot": ("/channels/twilio/acme/nobody", body, signed(body, "/channels/twilio/acme/nobody"), 404),
        "unknown-channel": ("/channels/fax/acme/support", body, signed(body), 404),
        "response-channel": ("/channels/rest/acme/support", body, signed(body), 404),
    }


FORM = "application/x-www-form-urlencoded"
BAD = [
    "unsigned",
    "forged",
    "tampered",
    "truncated",
    "truncated-escape",
    "not-utf8",
    "unknown-charset",
    "json",
    "oversized",
    "missing-fields",
    "other-account",
    "bad-media-count",
    "unknown-subpath",
    "unknown-bot",
    "unknown-channel",
    "response-channel",
]


@pytest.mark.parametrize("case", BAD)
async def test_bad_requests_get_a_clear_4xx_and_store_nothing(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer, case: str
) -> None:
    assert (await configure_twilio(client, demo, twilio_config(peer, "rest"))).status_code == 200
    path, body, headers, status = _bad_requests(peer)[case]
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"], "the answer says what is wrong"
    assert await transcript(services, demo) == []
    assert await services.queue.pending("turns") == 0


async def test_config_changes_reach_the_webhooks_at_once_or_within_a_second(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200  # the route is now cached
    rotated = await configure_twilio(client, demo, {**twilio_config(peer, "rest"), "auth_token": "rotated-token"})
    assert rotated.status_code == 200
    signed_new = await post_signed(client, WEBHOOK, inbound_form("hello"), token="rotated-token")
    assert signed_new.status_code == 200, "a rotated token is checked against the stored config at once"
    signed_old = await post_signed(client, WEBHOOK, inbound_form("hello"))
    assert signed_old.status_code == 403
    await disable(services, demo.bot, "twilio")
    await asyncio.sleep(1.1)
    refused = await post_signed(client, WEBHOOK, inbound_form("hello"), token="rotated-token")
    assert refused.status_code == 403 and "not enabled" in refused.json()["detail"]


async def test_a_bot_that_has_not_enabled_twilio_refuses_webhooks(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    response = await post_signed(client, WEBHOOK, inbound_form("hello"))
    assert response.status_code == 403
    assert "not enabled" in response.json()["detail"]
    assert await transcript(services, demo) == []


# ----------------------------------------------------------------------------- messages


async def test_media_reach_the_turn_as_attachments(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    media = (("https://api.twilio.com/media/ME1", "image/jpeg"), ("https://api.twilio.com/media/ME2", "image/png"))
    assert (await post_signed(client, WEBHOOK, inbound_form("a photo of my order", media=media))).status_code == 200
    photo_only = inbound_form("", sender=WHATSAPP_USER, media=media[:1])
    assert (await post_signed(client, WEBHOOK, photo_only)).status_code == 200
    assert await services.inbound.ingest_inbox() == 2, "acknowledged into the webhook inbox, kept whole"
    conversations = await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)
    stored = {c.user: (await services.store.messages.list_all(demo.tenant.id, c.id))[0] for c in conversations}
    sms, whatsapp = stored[SMS_USER], stored[WHATSAPP_USER]
    assert [(a.url, a.content_type) for a in sms.attachments] == list(media)
    assert sms.text == "a photo of my order" and sms.metadata["to"] == BOT_NUMBER
    assert [a.url for a in whatsapp.attachments] == [media[0][0]] and whatsapp.text == ""
    assert whatsapp.metadata["profile_name"] == "Ada"


@pytest.mark.parametrize(
    ("sender", "limit", "parts"), [(SMS_USER, 1600, 4), (WHATSAPP_USER, 4096, 2)], ids=["sms", "whatsapp"]
)
async def test_long_replies_are_split_within_the_limits(
    client: httpx.AsyncClient,
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    sender: str,
    limit: int,
    parts: int,
) -> None:
    long_reply = " ".join(f"Sentence number {i} of a very long answer." for i in range(140))  # ~5900 characters
    await services.store.bots.update(
        demo.tenant.id, demo.bot.id, settings=msgspec.structs.replace(demo.bot.settings, fallback_reply=long_reply)
    )
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    async with workers(services):
        await post_signed(client, WEBHOOK, inbound_form("qwertyuiop asdfgh", sender=sender))
        bodies = await wait_sent(peer, parts)
    assert len(bodies) == parts and all(len(b) <= limit for b in bodies)
    assert " ".join(bodies) == long_reply, "split at sentence breaks, nothing lost"
    number = ("whatsapp:" if sender.startswith("whatsapp:") else "") + BOT_NUMBER
    assert all(m.to == sender and m.from_ == number for m in peer.sent), "from the number the user wrote to"
    assert (await transcript(services, demo))[-1][2] == "sent"


async def test_long_twiml_replies_are_several_messages(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    long_reply = "word " * 700  # 3500 characters
    await services.store.bots.update(
        demo.tenant.id, demo.bot.id, settings=msgspec.structs.replace(demo.bot.settings, fallback_reply=long_reply)
    )
    await configure_twilio(client, demo, twilio_config(peer, "twiml"))
    response = await post_signed(client, WEBHOOK, inbound_form("qwertyuiop asdfgh"))
    messages = twiml_replies(response.text)
    assert response.headers["content-type"].startswith("application/xml")
    assert [len(m) for m in messages] == [1599, 1599, 299]
    assert " ".join(messages) == long_reply.strip()


# ----------------------------------------------------------------------------- status callbacks


async def test_status_callbacks_update_the_stored_reply(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    await configure_twilio(client, demo, twilio_config(peer, "rest"))
    async with workers(services):
        await post_signed(client, WEBHOOK, inbound_form("hello"))
        await post_signed(client, WEBHOOK, inbound_form("thanks", sender="+15552223333"))
        await wait_sent(peer, 2)
    greeting, thanks = sorted(peer.sent, key=lambda m: m.to != SMS_USER)
    assert greeting.status_callback is not None
    callback = greeting.status_callback.removeprefix(PUBLIC_URL)
    assert callback.startswith(f"/channels/twilio/{demo.bot.id}/status?ref=")

    async def status_of(text: str) -> str:
        return next(s for d, t, s in await transcript(services, demo) if d == "outbound" and t.startswith(text))

    for reported, expected in [("sent", "sent"), ("delivered", "delivered"), ("sent", "delivered")]:
        response = await post_signed(client, callback, status_form(greeting.sid, reported))
        assert response.status_code == 200, response.text
        assert await status_of("Hello") == expected, f"after {reported!r}"
    path = f"/channels/twilio/{demo.bot.id}/status"  # found by MessageSid alone
    assert (await post_signed(client, path, status_form(thanks.sid, "undelivered", error_code="30003"))).is_success
    assert await status_of("You're welcome") == "undelivered"
    unsigned = await client.post(path, data=status_form(thanks.sid, "delivered"))
    assert unsigned.status_code == 403
    unknown = await post_signed(client, path, status_form("SM" + "0" * 32, "delivered"))
    assert unknown.status_code == 200, "a report on no message of ours is acknowledged and ignored"

    auth = {"Authorization": f"Bearer {demo.api_key}"}
    dead = await client.get("/api/v1/bots/acme/support/dead-letters", headers=auth)
    assert [(d["status"], d["error"]) for d in dead.json()] == [("undelivered", "twilio error 30003")]


# ----------------------------------------------------------------------------- TwiML timing


@pytest.fixture
async def slow_services(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[Services, DemoInfo]]:
    """Services whose bot has the ``slowpoke`` plugin: ``parcel P<n>`` takes ``SLOWPOKE_SECONDS``."""
    monkeypatch.setenv("SLOWPOKE_SECONDS", "2")
    async with open_services(settings, url=database_url, host=host_with(("slowpoke", SLOWPOKE))) as opened:
        demo = await ensure_demo(opened)
        await enable(opened, demo.bot, "slowpoke")
        yield opened, demo


async def test_a_turn_slower_than_the_twiml_window_is_sent_through_the_rest_api(
    settings: Settings, slow_services: tuple[Services, DemoInfo], peer: TwilioPeer
) -> None:
    services, demo = slow_services
    async with api_client(fast_app(settings, services)) as client:
        await configure_twilio(client, demo, twilio_config(peer, "twiml", twiml_wait_seconds=0.5))
        form = inbound_form("parcel P7")
        async with workers(services):
            slow = await post_signed(client, WEBHOOK, form)
            assert slow.status_code == 200 and twiml_replies(slow.text) == [], "acknowledged empty, not lost"
            assert await wait_sent(peer, 1) == ["Parcel 7 is in the depot."]
            retried = await post_signed(client, WEBHOOK, form)
            assert twiml_replies(retried.text) == [], "the retried webhook does not send the reply again"
            await wait_until(lambda: settled(services, demo), what="the turn and its reply to settle")
    assert [m.body for m in peer.sent] == ["Parcel 7 is in the depot."]
    assert peer.sent[0].from_ == BOT_NUMBER, "the reply comes from the number the user wrote to"


async def test_twiml_replies_report_their_status_through_the_action_url(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> None:
    from xml.etree import ElementTree

    await configure_twilio(client, demo, twilio_config(peer, "twiml"))
    form = inbound_form("hello")
    answer = await post_signed(client, WEBHOOK, form)
    (message,) = ElementTree.fromstring(answer.text).iter("Message")
    action = message.get("action") or ""
    assert action.startswith(f"{PUBLIC_URL}/channels/twilio/{demo.bot.id}/status?ref=")
    again = await post_signed(client, WEBHOOK, form)
    assert again.text == answer.text, "a retried webhook gets the same TwiML"
    report = await post_signed(client, action.removeprefix(PUBLIC_URL), status_form("SM" + "1" * 32, "delivered"))
    assert report.status_code == 200
    assert (await transcript(services, demo))[-1] == ("outbound", "Hello! How can I help you today?", "delivered")


@given(
    url=st.sampled_from(["https://bots.example/channels/twilio/acme/support", "http://127.0.0.1:8000/c/t/a?x=1"]),
    form=st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=12), min_size=1, max_size=3), max_size=6),
    token=st.text(min_size=1, max_size=32),
)
def test_the_one_hmac_check_agrees_with_twilios_validator(url: str, form: dict[str, list[str]], token: str) -> None:
    from twilio.request_validator import RequestValidator

    from botloom.channels.twilio import _MultiDict, _signed

    fields = _MultiDict(form)
    good = RequestValidator(token).compute_signature(url, fields)
    assert _signed(token, url, fields, good)
    assert not _signed(token, url + "/", fields, good) and not _signed(token, url, fields, good[:-2] + "é=")


# ----------------------------------------------------------------------------- connections


async def test_sends_and_lookups_reuse_one_connection_to_twilio(settings: Settings, peer: TwilioPeer) -> None:
    channel = TwilioChannel()
    config = TwilioChannel.settings(twilio_config(peer, from_number=BOT_NUMBER))
    with policy_installed(settings.endpoint_policy):
        try:
            since = datetime.now(UTC)
            for n in range(3):
                message = OutboundMessage(channel="twilio", text=f"reply {n}", recipient=SMS_USER)
                assert str(await channel.send(message, config)).startswith("SM")
            assert await channel.find_sent(message, since, config) == peer.sent[-1].sid
        finally:
            await channel.aclose()
    assert [m.body for m in peer.sent] == ["reply 0", "reply 1", "reply 2"]
    assert peer.connections == 1, "every request on the one kept-alive connection"


async def test_the_hosts_shutdown_closes_the_twilio_connections(
    settings: Settings, database_url: str, peer: TwilioPeer
) -> None:
    async with open_services(settings, url=database_url) as services:
        channel = services.host.registry.channels["twilio"]
        assert isinstance(channel, TwilioChannel)
        config = TwilioChannel.settings(twilio_config(peer, from_number=BOT_NUMBER))
        await channel.send(OutboundMessage(channel="twilio", text="hi", recipient=SMS_USER), config)
        session = channel._session()
        assert not session.closed
    assert session.closed
    assert not channel._sessions, "a later send opens a new session"
