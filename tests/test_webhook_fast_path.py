"""The webhook fast path (botloom.server.channels.fast) answers exactly as Litestar's route does, and keeps the rest.

Each request is sent to two apps on the same services: one with the fast path (the
default) and one without it (``app.webhook_fast_path = None``), and their answers
compared: status, body and headers (but the date and the request id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.channels.fast import WebhookFastPath
from botloom.server.demo import DemoInfo
from botloom.testing.channel_contract import configure_twilio, fast_app, transcript
from tests.helpers import api_client
from tests.test_twilio import BAD, WEBHOOK, _bad_requests
from tests.twilio_peer import PUBLIC_URL, TwilioPeer, inbound_form, post_signed, sign, twilio_config

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def apps(settings: Settings, services: Services) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    fast, slow = fast_app(settings, services), fast_app(settings, services)
    assert isinstance(fast.webhook_fast_path, WebhookFastPath) and fast.webhook_fast_path.serves
    slow.webhook_fast_path = None
    async with api_client(fast) as fast_client, api_client(slow) as slow_client:
        yield fast_client, slow_client


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the fast path answered itself (not handed over)."""
    answered: list[str] = []
    answer = WebhookFastPath._answer

    async def spy(self: WebhookFastPath, call: Any) -> int:
        status = await answer(self, call)
        answered.append(call.scope["path"])
        return status

    monkeypatch.setattr(WebhookFastPath, "_answer", spy)
    return answered


def _comparable(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}
    return response.status_code, response.content, headers


@pytest.mark.parametrize("case", ["signed", *BAD])
async def test_the_fast_path_answers_as_litestar_does(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    taken: list[str],
    case: str,
) -> None:
    fast, slow = apps
    assert (await configure_twilio(fast, demo, twilio_config(peer, "rest"))).status_code == 200
    if case == "signed":
        form = inbound_form("hello")
        body = str(httpx.QueryParams(form)).encode()
        path, headers = WEBHOOK, {"X-Twilio-Signature": sign(PUBLIC_URL + WEBHOOK, form, peer.auth_token)}
        headers["content-type"] = FORM
    else:
        path, body, headers, _ = _bad_requests(peer)[case]
    answered = await fast.post(path, content=body, headers=headers)
    expected = await slow.post(path, content=body, headers=headers)
    assert _comparable(answered) == _comparable(expected)
    assert answered.headers["x-request-id"]
    if case in ("signed", "forged", "oversized", "unknown-bot", "unknown-subpath"):
        assert taken, "a declared webhook route is answered by the fast path"
    if case in ("unknown-channel", "response-channel"):
        assert not taken, "what no push channel declares is Litestar's"
    stored = await transcript(services, demo)
    assert len(stored) == (1 if case == "signed" else 0), "a retried webhook is stored once"


async def test_request_ids_security_headers_and_metrics_are_kept(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient], demo: DemoInfo, peer: TwilioPeer, taken: list[str]
) -> None:
    fast, _ = apps
    await configure_twilio(fast, demo, twilio_config(peer, "rest"))
    response = await post_signed(fast, WEBHOOK, inbound_form("hi"), headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200 and taken
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    insane = await post_signed(fast, WEBHOOK, inbound_form("hi"), headers={"X-Request-ID": "no spaces\tallowed"})
    assert insane.headers["x-request-id"] != "no spaces\tallowed"
    metrics = (await fast.get("/metrics")).text  # the template Litestar's Prometheus middleware labels it with
    line = 'botloom_requests_total{app_name="botloom",method="POST",path="/channels/twilio/{bot}",status_code="200"}'
    assert line in metrics


async def test_a_request_with_an_origin_is_litestars_cors(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient], demo: DemoInfo, peer: TwilioPeer, taken: list[str]
) -> None:
    fast, _ = apps
    await configure_twilio(fast, demo, twilio_config(peer, "rest"))
    response = await post_signed(fast, WEBHOOK, inbound_form("hi"), headers={"Origin": "https://example.org"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert not taken


async def test_an_outage_is_handed_to_litestar_with_the_body(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast, _ = apps
    await configure_twilio(fast, demo, twilio_config(peer, "rest"))
    webhook = services.inbound.webhook
    calls = 0

    async def once_down(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise psycopg.OperationalError("connection refused")
        return await webhook(*args)

    monkeypatch.setattr(services.inbound, "webhook", once_down)
    response = await post_signed(fast, WEBHOOK, inbound_form("hello"))
    assert calls == 2, "the fast path failed, Litestar's route ran the request again"
    assert response.status_code == 200, "with the body as it arrived: its signature still checks"
    assert len(await transcript(services, demo)) == 1
    monkeypatch.setattr(services.inbound, "webhook", _down)
    unavailable = await post_signed(fast, WEBHOOK, inbound_form("again"))
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"]
    assert unavailable.json()["detail"]


async def _down(*args: Any) -> Any:
    raise psycopg.OperationalError("connection refused")


def test_a_forked_process_draws_its_own_request_id_prefix() -> None:
    """A server started from a preloaded app forks its workers: their generated request ids must not collide."""
    import os
    import warnings

    from botloom.server.channels import fast

    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() in a process with threads; the child only writes
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its prefix, then leave without running the parent's cleanup
        os.write(write, fast._ID_PREFIX.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child != fast._ID_PREFIX
