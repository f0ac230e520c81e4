"""Hostile input on every route family: NUL and other control characters, lone surrogates, huge numbers, deep JSON.

PostgreSQL text and JSON cannot hold NUL (U+0000), so a NUL used to be a 500. The
rule, decided once at each boundary: the API refuses a control character in any
field with a 400 naming the field; a message from an end user loses control
characters from its text and names, and is refused (400, naming the field) when an
identifier (sender, message id, conversation id, media URL) holds one. Channel
routes are reached over HTTP only, by their public URLs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from botloom.core.messages import Attachment, InboundMessage, InvalidMessage, clean_text
from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from botloom.testing.channel_contract import configure_twilio, fast_app, transcript
from tests.conftest import ADMIN_TOKEN
from tests.helpers import api_client
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

NUL = "\x00"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBHOOK = "/channels/twilio/acme/support"
BOT = "/api/v1/bots/acme/support"


@pytest.fixture
async def client(
    settings: Settings, services: Services, demo: DemoInfo, peer: TwilioPeer
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(fast_app(settings, services)) as test_client:
        assert (await configure_twilio(test_client, demo, twilio_config(peer, "rest"))).status_code == 200
        yield test_client


def tenant(demo: DemoInfo) -> dict[str, str]:
    return {"Authorization": f"Bearer {demo.api_key}"}


def names_field(response: httpx.Response, *fields: str) -> bool:
    """Whether a 400's answer names one of ``fields`` (in ``detail`` or in ``extra``)."""
    body = response.json()
    said = json.dumps([body.get("detail"), body.get("extra")])
    return any(field in said for field in fields)


# ----------------------------------------------------------------------------- the message boundary


def test_message_text_and_names_lose_control_characters() -> None:
    message = InboundMessage(
        channel="twilio",
        text=f"hi{NUL} there\x1b[31m\x07\r\n\tbye \ud800",
        sender="+15550001111",
        metadata={"profile_name": f"A{NUL}da", "subject": ["re:\x0c order"]},
        attachments=(Attachment(url="https://api.twilio.com/media/ME1", filename=f"photo{NUL}.jpg"),),
    )
    assert message.text == "hi there[31m\r\n\tbye \ufffd"
    assert message.metadata == {"profile_name": "Ada", "subject": ["re: order"]}
    assert message.attachments[0].filename == "photo.jpg"
    assert clean_text("plain text\n") == "plain text\n"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", f"+1555{NUL}0001111"),
        ("sender", "whatsapp:+15550001111\n"),
        ("idempotency_key", f"SM{NUL}"),
        ("conversation_key", "thread\x1f"),
        ("channel", f"rest{NUL}"),
        ("idempotency_key", "SM\ud800"),
    ],
)
def test_identifiers_with_control_characters_are_refused_naming_the_field(field: str, value: str) -> None:
    given: dict[str, Any] = {"channel": "twilio", "text": "hello", "sender": "+15550001111", field: value}
    with pytest.raises(InvalidMessage) as refused:
        InboundMessage(**given)
    assert refused.value.field == field and field in str(refused.value)
    assert isinstance(refused.value, ValueError)
    with pytest.raises(InvalidMessage, match="attachment url"):
        Attachment(url=f"https://api.twilio.com/media/{NUL}")


# ----------------------------------------------------------------------------- the API: NUL in any field is a 400


REFUSED: list[tuple[str, str, str, Any, tuple[str, ...]]] = [
    # (auth, method, path, body, names) -- the answer must name one of ``names``
    ("admin", "POST", "/api/v1/tenants", {"slug": "nul", "name": f"Nul{NUL}Inc"}, ("name",)),
    ("admin", "POST", "/api/v1/tenants", {"slug": f"n{NUL}l", "name": "Nul"}, ("slug",)),
    ("tenant", "POST", "/api/v1/tenants/acme/keys", {"name": f"key{NUL}"}, ("name",)),
    ("tenant", "POST", "/api/v1/tenants/acme/bots", {"slug": "b2", "name": f"B{NUL}"}, ("name",)),
    ("tenant", "POST", "/api/v1/tenants/acme/bots", {"slug": "b3", "name": "B", "settings": {"persona": NUL}},
     ("persona",)),
    ("tenant", "PATCH", BOT, {"name": f"Support{NUL}"}, ("name",)),
    ("tenant", "PATCH", BOT, {"persona": f"kind{NUL}"}, ("persona",)),
    ("tenant", "PATCH", BOT, {"fallback_reply": f"sorry{NUL}"}, ("fallback_reply",)),
    ("tenant", "PATCH", BOT, {"busy_reply": f"busy{NUL}"}, ("busy_reply",)),
    ("tenant", "PATCH", BOT, {"allowed_origins": [f"https://shop.example{NUL}"]}, ("allowed_origins",)),
    ("tenant", "PATCH", BOT, {"model": {"model": f"gpt{NUL}"}}, ("model",)),
    ("tenant", "PATCH", BOT, {"settings": {"fallback_reply": f"x{NUL}"}}, ("fallback_reply",)),
    ("tenant", "PATCH", BOT, {"name": "Support\x1b[2J"}, ("name",)),
    ("tenant", "PUT", f"{BOT}/plugins/twilio", {"config": {"account_sid": f"AC{NUL}"}}, ("account_sid",)),
    ("tenant", "PUT", f"{BOT}/plugins/twilio", {"config": {f"account_sid{NUL}": "AC"}}, ("config",)),
    ("tenant", "PUT", f"{BOT}/plugins/knowledge", {"config": {"x": [f"{NUL}"]}}, ("config",)),
    ("tenant", "POST", f"{BOT}/knowledge", {"name": f"faq{NUL}.md", "content": "# FAQ"}, ("name",)),
    ("tenant", "POST", f"{BOT}/knowledge", {"name": "faq.md", "content": "x", "content_type": f"text/{NUL}"},
     ("content_type",)),
    ("tenant", "POST", f"{BOT}/messages", {"text": "hi", "user": f"ada{NUL}"}, ("user", "sender")),
    ("tenant", "POST", f"{BOT}/messages", {"text": "hi", "message_id": f"m{NUL}1"}, ("message_id", "idempotency_key")),
    ("tenant", "POST", f"{BOT}/messages", {"text": "hi", "conversation_id": f"c{NUL}"},
     ("conversation_id", "conversation_key")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("auth", "method", "path", "body", "names"),
    REFUSED,
    ids=[f"{m} {p.removeprefix('/api/v1')} {'/'.join(n)}" for _, m, p, _, n in REFUSED],
)
async def test_a_control_character_in_an_api_field_is_a_400_naming_it(
    client: httpx.AsyncClient,
    services: Services,
    demo: DemoInfo,
    auth: str,
    method: str,
    path: str,
    body: Any,
    names: tuple[str, ...],
) -> None:
    headers = ADMIN if auth == "admin" else tenant(demo)
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert names_field(response, *names), response.text
    assert await transcript(services, demo) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v1/bots/acme{NUL}/support"),
        ("GET", f"/api/v1/tenants/acme{NUL}"),
        ("GET", f"/api/v1/conversations/{NUL}"),
        ("DELETE", f"{BOT}/knowledge/faq{NUL}.md"),
        ("GET", f"{BOT}/knowledge/search?q=where{NUL}"),
        ("GET", f"{BOT}/plugins/twilio{NUL}"),
    ],
)
async def test_a_nul_in_a_path_or_query_is_a_4xx(
    client: httpx.AsyncClient, demo: DemoInfo, method: str, path: str
) -> None:
    response = await client.request(method, path.replace(NUL, "%00"), headers=tenant(demo))
    assert 400 <= response.status_code < 500, response.text


# ----------------------------------------------------------------------------- end users' text is cleaned, not refused


async def test_rest_chat_text_with_nul_is_answered_without_it(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    response = await client.post(f"{BOT}/messages", json={"text": f"hello{NUL} there\x07"}, headers=tenant(demo))
    assert response.status_code == 200, response.text
    assert response.json()["replies"], "answered"
    assert ("inbound", "hello there", "answered") in await transcript(services, demo)


@pytest.mark.parametrize("upload", [False, True], ids=["json", "file"])
async def test_knowledge_content_with_nul_is_a_400(client: httpx.AsyncClient, demo: DemoInfo, upload: bool) -> None:
    content = f"# Returns{NUL}\n\nReturns are free within 30 days.\n"
    if upload:
        files = {"file": ("hostile-nul.md", content.encode(), "text/markdown")}
        response = await client.post(f"{BOT}/knowledge/files", files=files, headers=tenant(demo))
    else:
        response = await client.post(
            f"{BOT}/knowledge", json={"name": "hostile-nul.md", "content": content}, headers=tenant(demo)
        )
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["detail"]
    listed = await client.get(f"{BOT}/knowledge", headers=tenant(demo))
    assert "hostile-nul.md" not in [d["name"] for d in listed.json()]


async def test_a_signed_twilio_message_with_nul_in_body_and_profile_is_stored_without_it(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    form = inbound_form(f"where is{NUL} my order", sender="whatsapp:+15550001111")
    form["ProfileName"] = f"A{NUL}da"
    response = await post_signed(client, WEBHOOK, form)
    assert response.status_code == 200, response.text
    assert [(d, t) for d, t, _ in await transcript(services, demo)] == [("inbound", "where is my order")]
    (conversation,) = await services.store.conversations.list_all(demo.tenant.id, demo.bot.id)
    (message,) = await services.store.messages.list_all(demo.tenant.id, conversation.id)
    assert NUL not in json.dumps(message.metadata)


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("From", ("From", "sender")),
        ("MessageSid", ("MessageSid", "idempotency_key")),
        ("MediaUrl0", ("MediaUrl0", "url")),
    ],
)
async def test_a_signed_twilio_identifier_with_nul_is_a_400_naming_it(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, field: str, names: tuple[str, ...]
) -> None:
    form = inbound_form("hello", media=(("https://api.twilio.com/media/ME1", "image/jpeg"),))
    form[field] = form[field][:6] + NUL + form[field][6:]
    if field == "MessageSid":
        form["SmsMessageSid"] = form["SmsSid"] = form["MessageSid"]
    response = await post_signed(client, WEBHOOK, form)
    assert response.status_code == 400, response.text
    assert names_field(response, *names), response.text
    assert await transcript(services, demo) == []
    assert await services.queue.pending("turns") == 0


# ----------------------------------------------------------------------------- malformed JSON: clear 4xx


DEEP = "[" * 100_000 + "]" * 100_000
JSON_BODIES = {
    "lone-surrogate": '{"text": "hi \\ud800 there"}',
    "lone-low-surrogate": '{"name": "\\udc00"}',
    "huge-float": '{"temperature": 1e400}',
    "huge-int": '{"max_tokens": ' + "9" * 5000 + "}",
    "deep": '{"config": ' + DEEP + "}",
    "deep-object": '{"a":' * 50_000 + "1" + "}" * 50_000,
}
JSON_ROUTES = [
    ("PATCH", BOT),
    ("PUT", f"{BOT}/plugins/twilio"),
    ("POST", f"{BOT}/messages"),
    ("POST", f"{BOT}/knowledge"),
    ("POST", "/api/v1/tenants/acme/keys"),
]


@pytest.mark.parametrize("route", JSON_ROUTES, ids=[f"{m} {p.removeprefix('/api/v1')}" for m, p in JSON_ROUTES])
async def test_malformed_json_is_a_clear_4xx(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, route: tuple[str, str]
) -> None:
    method, path = route
    headers = {**tenant(demo), "content-type": "application/json"}
    for case, body in JSON_BODIES.items():
        response = await client.request(method, path, content=body.encode(), headers=headers)
        assert 400 <= response.status_code < 500, f"{case}: {response.text}"
        assert response.json()["detail"], f"{case}: the answer says what is wrong"
    assert await transcript(services, demo) == []


# ----------------------------------------------------------------------------- web chat frames


@pytest.mark.parametrize(
    ("frame", "answered"),
    [
        ({"type": "message", "id": "m-1", "text": f"hello{NUL} there"}, True),
        ({"type": "message", "id": f"m{NUL}1", "text": "hello"}, False),
        ({"type": "message", "id": "m-1", "text": "hello \ud800"}, False),
    ],
    ids=["nul-in-text", "nul-in-id", "lone-surrogate"],
)
async def test_web_chat_frames_with_control_characters_get_an_answer_not_a_4500(
    settings: Settings, services: Services, demo: DemoInfo, frame: dict[str, str], answered: bool
) -> None:
    from tests.test_channel_contract_webchat import AsgiSocket

    app = fast_app(settings, services)
    async with AsgiSocket(app, "/api/v1/bots/acme/support/ws", {"origin": "http://testserver"}) as socket:
        assert socket.close_code is None
        await socket.send(type="hello", conversation_id=None)
        assert (await socket.frame())["type"] == "ready"
        await socket.send_text(json.dumps(frame))  # a lone surrogate goes out as its \ud800 escape
        frames = await socket.frames_until("done", "error")
    assert socket.close_code is None, "the socket stays open"
    if answered:
        assert frames[-1]["type"] == "done" and any(f["type"] == "reply" for f in frames), frames
        texts = [t for d, t, _ in await transcript(services, demo) if d == "inbound"]
        assert texts and not any(NUL in t or "\ud800" in t for t in texts), texts
    else:
        assert frames[-1]["type"] == "error", frames
        assert await transcript(services, demo) == []
