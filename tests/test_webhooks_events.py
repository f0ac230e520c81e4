"""Events and webhooks: signed deliveries checked by a receiver written from docs/webhooks.md alone.

The receiver below knows nothing of botloom's code: it verifies ``Botloom-Signature``
as the docs say (HMAC-SHA256 of ``t`` + ``.`` + body with the secret shown once),
answers what each test scripts (500s, then 200), and records what arrived. Events
are emitted through ``services.events.emit`` (as the agent desk does) and delivered
by the real job workers on the test's database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from botloom.core.settings import Settings
from botloom.runtime.events import WebhookPolicy
from botloom.runtime.services import Services
from botloom.server.worker import workers
from tests.test_api_resources import api_client, bearer, field_errors, make_bot, make_tenant

# -- the receiver, from docs/webhooks.md ------------------------------------------------


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether a Botloom-Signature header signs body, recently (docs/webhooks.md, "Verifying the signature")."""
    parts = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value for name, value in parts if name.strip() == "t"]
    signatures = [value for name, value in parts if name.strip() == "v1"]
    if not timestamps or not timestamps[0].isdigit() or not signatures:
        return False
    if abs(time.time() - int(timestamps[0])) > 300:
        return False
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


@dataclass
class Arrival:
    event_id: str
    body: dict[str, Any]
    signed: bool
    answered: int


@dataclass
class Receiver:
    """An HTTP server on loopback that verifies, records and answers as scripted."""

    secret: str = ""
    answers: list[int] = field(default_factory=list)
    """Statuses for the next requests, in order (then 200)."""
    fail_event: str | None = None
    """An event id always answered 500."""
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def accepted(self) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if 200 <= a.answered < 300]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signed = verify(state.secret, body, self.headers.get("Botloom-Signature", ""))
            event_id = self.headers.get("Botloom-Event-Id", "")
            with state.lock:
                status = state.answers.pop(0) if state.answers else 200
                if event_id == state.fail_event:
                    status = 500
                if not signed:
                    status = 401
                state.arrivals.append(Arrival(event_id, json.loads(body), signed, status))
            payload = b"REMOTE-SECRET-BODY do not quote me"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


@pytest.fixture
async def running(services: Services) -> AsyncIterator[Services]:
    """The job workers, with retries a second apart (attempts: 3)."""
    services.events.policy = WebhookPolicy(attempts=3, first_retry=0.5, max_retry=1.0, timeout=5.0)
    async with workers(services):
        yield services


@dataclass
class Tenant:
    id: str
    slug: str
    key: str
    bot_id: str


async def tenant(client: httpx.AsyncClient, slug: str) -> Tenant:
    made, key = await make_tenant(client, slug)
    bot = await make_bot(client, slug, "support")
    return Tenant(made["id"], slug, key, bot["id"])


async def conversation(services: Services, who: Tenant) -> str:
    return (await services.store.conversations.create(who.id, who.bot_id, "rest")).id


async def add_endpoint(client: httpx.AsyncClient, who: Tenant, url: str, **extra: Any) -> dict[str, Any]:
    r = await client.post(f"/api/v1/tenants/{who.slug}/webhooks", json={"url": url, **extra}, headers=bearer(who.key))
    assert r.status_code == 201, r.text
    return r.json()


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``check()`` (polling), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- tests -----------------------------------------------------------------------------


async def test_signed_retried_in_order_with_stable_ids(
    client: httpx.AsyncClient, running: Services, receiver: Receiver
) -> None:
    acme = await tenant(client, "acme")
    created = await add_endpoint(client, acme, receiver.url)
    receiver.secret = created["secret"]
    assert (
        created["secret"].startswith("whsec_")
        and "secret" not in (await client.get("/api/v1/tenants/acme/webhooks", headers=bearer(acme.key))).json()[0]
    )
    conv = await conversation(running, acme)
    receiver.answers = [500, 503]  # the first event fails twice, then is accepted
    emitted = [
        await running.events.emit(acme.id, kind, conversation_id=conv, data={"n": n})
        for n, kind in enumerate(["handover.waiting", "handover.claimed", "message.agent"], start=1)
    ]
    assert all(e is not None for e in emitted)
    ids = [e.id for e in emitted if e is not None]
    await until(lambda: len(receiver.accepted()) == 3)
    arrivals = list(receiver.arrivals)
    assert all(a.signed for a in arrivals), "every request verifies with the documented scheme"
    assert [a.event_id for a in arrivals] == [ids[0]] * 3 + ids[1:], "retries keep the id; n+1 waits for n"
    assert [a.answered for a in arrivals] == [500, 503, 200, 200, 200]
    assert [a.body["sequence"] for a in receiver.accepted()] == [1, 2, 3]
    first = receiver.accepted()[0].body
    assert first["id"] == ids[0] and first["kind"] == "handover.waiting" and first["conversation_id"] == conv
    assert first["data"] == {"n": 1} and first["tenant_id"] == acme.id
    async with running.store.db.connection() as conn:
        cur = await conn.execute("SELECT status, attempts, last_error FROM webhook_deliveries ORDER BY sequence")
        rows = await cur.fetchall()
    assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 3), ("delivered", 1), ("delivered", 1)]


async def test_given_up_event_lets_the_next_one_go_and_errors_never_quote_the_remote(
    client: httpx.AsyncClient, running: Services, receiver: Receiver
) -> None:
    acme = await tenant(client, "acme")
    receiver.secret = (await add_endpoint(client, acme, receiver.url))["secret"]
    conv = await conversation(running, acme)
    doomed = await running.events.emit(acme.id, "handover.waiting", conversation_id=conv)
    assert doomed is not None
    receiver.fail_event = doomed.id
    after = await running.events.emit(acme.id, "handover.timed_out", conversation_id=conv)
    assert after is not None
    await until(lambda: [a.event_id for a in receiver.accepted()] == [after.id])
    tried = [a.event_id for a in receiver.arrivals]
    assert tried == [doomed.id] * 3 + [after.id], "three attempts, given up, then the next event"
    async with running.store.db.connection() as conn:
        cur = await conn.execute("SELECT status, last_error FROM webhook_deliveries WHERE event_id = %s", (doomed.id,))
        row = await cur.fetchone()
    assert row is not None and row["status"] == "failed"
    assert row["last_error"] == "HTTP 500" and "REMOTE" not in row["last_error"]
    endpoint = (await client.get("/api/v1/tenants/acme/webhooks", headers=bearer(acme.key))).json()[0]["id"]
    r = await client.get(f"/api/v1/tenants/acme/webhooks/{endpoint}/deliveries", headers=bearer(acme.key))
    assert r.status_code == 200, r.text
    shown = [(d["event_id"], d["kind"], d["status"], d["attempts"], d["last_error"]) for d in r.json()]
    assert shown == [
        (after.id, "handover.timed_out", "delivered", 1, None),
        (doomed.id, "handover.waiting", "failed", 3, "HTTP 500"),
    ]
    globex = await tenant(client, "globex")
    for path in (f"/api/v1/tenants/acme/webhooks/{endpoint}", f"/api/v1/tenants/globex/webhooks/{endpoint}"):
        assert (await client.get(f"{path}/deliveries", headers=bearer(globex.key))).status_code == 404
    r = await client.get(f"/api/v1/tenants/acme/webhooks/{uuid.uuid4()}/deliveries", headers=bearer(acme.key))
    assert r.status_code == 404


async def test_order_per_conversation_with_many_events(
    client: httpx.AsyncClient, running: Services, receiver: Receiver
) -> None:
    acme = await tenant(client, "acme")
    receiver.secret = (await add_endpoint(client, acme, receiver.url))["secret"]
    convs = [await conversation(running, acme) for _ in range(3)]
    receiver.answers = [500, 200, 500, 200, 500]  # failures sprinkled over the first deliveries
    await asyncio.gather(
        *(
            running.events.emit(acme.id, "message.user", conversation_id=c, data={"i": i})
            for i in range(5)
            for c in convs
        )
    )
    await until(lambda: len({a.event_id for a in receiver.accepted()}) == 15)
    for c in convs:
        seqs = [a.body["sequence"] for a in receiver.accepted() if a.body["conversation_id"] == c]
        assert seqs == [1, 2, 3, 4, 5], seqs
    assert len(receiver.accepted()) == 15, "no event accepted twice here"


async def test_kinds_filter_and_tenant_isolation(
    client: httpx.AsyncClient, running: Services, receiver: Receiver
) -> None:
    acme, globex = await tenant(client, "acme"), await tenant(client, "globex")
    receiver.secret = (await add_endpoint(client, acme, receiver.url, kinds=["handover.resolved"]))["secret"]
    acme_conv, globex_conv = await conversation(running, acme), await conversation(running, globex)
    await running.events.emit(acme.id, "handover.waiting", conversation_id=acme_conv)
    await running.events.emit(globex.id, "handover.resolved", conversation_id=globex_conv)
    assert await running.events.emit(acme.id, "handover.resolved", conversation_id=globex_conv) is None, (
        "an event never names another tenant's conversation"
    )
    wanted = await running.events.emit(acme.id, "handover.resolved", conversation_id=acme_conv)
    assert wanted is not None
    await until(lambda: len(receiver.accepted()) == 1)
    assert [a.event_id for a in receiver.arrivals] == [wanted.id]

    # polling: each tenant sees its own events only
    mine = (await client.get("/api/v1/events", headers=bearer(acme.key))).json()
    assert [e["kind"] for e in mine["events"]] == ["handover.waiting", "handover.resolved"]
    assert {e["tenant_id"] for e in mine["events"]} == {acme.id}
    theirs = (await client.get("/api/v1/events", headers=bearer(globex.key))).json()
    assert [e["kind"] for e in theirs["events"]] == ["handover.resolved"]
    page = (await client.get("/api/v1/events", params={"after": mine["after"]}, headers=bearer(acme.key))).json()
    assert page == {"events": [], "after": mine["after"]}
    one = (await client.get("/api/v1/events", params={"limit": 1}, headers=bearer(acme.key))).json()
    assert len(one["events"]) == 1 and one["after"] == mine["events"][0]["position"]
    # the operator names the tenant
    everything = (await client.get("/api/v1/events")).json()["events"]
    assert {e["tenant_id"] for e in everything} == {acme.id, globex.id}
    by_operator = (await client.get("/api/v1/events", params={"tenant": "globex"})).json()
    assert [e["id"] for e in by_operator["events"]] == [e["id"] for e in theirs["events"]]
    assert (
        await client.get("/api/v1/events", params={"tenant": "globex"}, headers=bearer(acme.key))
    ).status_code == 404

    # endpoints: another tenant's key neither sees nor deletes them
    endpoint_id = (await client.get("/api/v1/tenants/acme/webhooks", headers=bearer(acme.key))).json()[0]["id"]
    assert (await client.get("/api/v1/tenants/acme/webhooks", headers=bearer(globex.key))).status_code == 404
    r = await client.delete(f"/api/v1/tenants/acme/webhooks/{endpoint_id}", headers=bearer(globex.key))
    assert r.status_code == 404
    r = await client.delete(f"/api/v1/tenants/globex/webhooks/{endpoint_id}", headers=bearer(globex.key))
    assert r.status_code == 404
    r = await client.delete(f"/api/v1/tenants/acme/webhooks/{endpoint_id}", headers=bearer(acme.key))
    assert r.status_code == 204
    assert (await client.get("/api/v1/tenants/acme/webhooks", headers=bearer(acme.key))).json() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/hook",  # private
        "http://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "http://[::1]:8080/hook",  # loopback (this deployment allows 127.0.0.1 and localhost only)
        "http://0x0a000001/hook",  # a private address spelled as a number
        "https://user:pw@example.com/hook",  # credentials
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "http://example.com/hook#frag",
        "http://" + "a" * 2000 + ".com/",
    ],
)
async def test_refused_urls(client: httpx.AsyncClient, services: Services, url: str) -> None:
    acme = await tenant(client, "acme")
    r = await client.post("/api/v1/tenants/acme/webhooks", json={"url": url}, headers=bearer(acme.key))
    assert field_errors(r) == {"url"}, r.text
    assert await services.store.webhooks.of_tenant(acme.id) == []


async def test_malformed_unauthenticated_and_oversized(client: httpx.AsyncClient, services: Services) -> None:
    acme = await tenant(client, "acme")
    path = "/api/v1/tenants/acme/webhooks"
    assert (
        await client.post(path, json={"url": "https://example.com"}, headers={"Authorization": ""})
    ).status_code == 401
    assert (await httpx_no_auth(client).get("/api/v1/events")).status_code == 401
    assert field_errors(
        await client.post(path, json={"url": "https://x.example", "extra": 1}, headers=bearer(acme.key))
    )
    assert field_errors(await client.post(path, json={"url": 5}, headers=bearer(acme.key))) == {"url"}
    r = await client.post(path, json={"url": "https://x.example", "kinds": ["Bad Kind"]}, headers=bearer(acme.key))
    assert r.status_code == 400
    r = await client.post(path, json={"url": "https://x.example\x00"}, headers=bearer(acme.key))
    assert r.status_code == 400
    r = await client.post(path, content=b"{not json", headers={**bearer(acme.key), "content-type": "application/json"})
    assert r.status_code == 400
    r = await client.post(
        path, content=b"x" * 2_000_000, headers={**bearer(acme.key), "content-type": "application/json"}
    )
    assert r.status_code == 413
    for bad in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "100000"}):
        assert (await client.get("/api/v1/events", params=bad, headers=bearer(acme.key))).status_code == 400, bad
    assert (await client.delete(f"{path}/not-an-id", headers=bearer(acme.key))).status_code == 404
    assert (await client.delete(f"{path}/{uuid.uuid4()}", headers=bearer(acme.key))).status_code == 404
    assert await services.store.webhooks.of_tenant(acme.id) == []


def httpx_no_auth(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same app without the operator's token."""
    return httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))


async def test_hostile_event_data_is_stored_and_signed(
    client: httpx.AsyncClient, running: Services, receiver: Receiver
) -> None:
    acme = await tenant(client, "acme")
    receiver.secret = (await add_endpoint(client, acme, receiver.url))["secret"]
    conv = await conversation(running, acme)
    hostile = {"text": "nul\x00 <script>alert(1)</script> \u202e \ud83d\ude00 " + "x" * 20_000, "nested": [{"k": None}]}
    event = await running.events.emit(acme.id, "message.user", conversation_id=conv, data=hostile)
    assert event is not None
    await until(lambda: len(receiver.accepted()) == 1)
    body = receiver.accepted()[0].body
    assert body["data"]["text"].startswith("nul\ufffd <script>") and body["data"]["nested"] == [{"k": None}]
    with pytest.raises(ValueError, match="kind"):
        await running.events.emit(acme.id, "Bad Kind; DROP TABLE events")
    assert await running.events.emit("not-a-uuid", "handover.waiting") is None
    assert await running.events.emit(acme.id, "handover.waiting", conversation_id="nope") is None


async def test_live_notices_reach_a_listener(services: Services, client: httpx.AsyncClient) -> None:
    """Without Redis, an event is a PostgreSQL NOTIFY on the tenant's channel (what the desk socket listens to)."""
    import psycopg

    from botloom.runtime.events import live_channel

    acme = await tenant(client, "acme")
    conv = await conversation(services, acme)
    async with await psycopg.AsyncConnection.connect(services.db.url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {live_channel(acme.id)}")
        event = await services.events.emit(acme.id, "handover.waiting", conversation_id=conv, data={"big": "y" * 9000})
        assert event is not None
        notice = await anext(aiter(conn.notifies(timeout=10)))
    published = json.loads(notice.payload)
    assert published["id"] == event.id and published["kind"] == "handover.waiting"
    assert published["data"] == {} and published["data_omitted"] is True, "too large for NOTIFY: data left out"


# -- the desk's socket, across processes -----------------------------------------------


@pytest.fixture(params=["postgres", "redis"])
def live_server(request: pytest.FixtureRequest, database_url: str, data_dir: Any) -> Iterator[tuple[Any, str | None]]:
    """``botloom serve`` in another process, its live events on PostgreSQL or on Redis."""
    from tests.serve_process import Server

    redis = request.getfixturevalue("redis_url") if request.param == "redis" else None
    server = Server(database_url, data_dir, **({"BOTLOOM_REDIS_URL": redis} if redis else {}))
    server.start()
    try:
        yield server, redis
    finally:
        server.stop()


@pytest.mark.slow
async def test_desk_socket_gets_events_emitted_by_another_process(
    live_server: tuple[Any, str | None], settings: Settings, database_url: str
) -> None:
    """Events emitted in this process (as a worker would) reach the server process's desk sockets, per tenant."""
    import aiohttp
    import msgspec

    from botloom.runtime.services import open_services

    server, redis = live_server
    admin = {"Authorization": "Bearer admin"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as http:
        acme_key = (await http.post("/api/v1/tenants/acme/keys", json={"name": "desk"})).json()["key"]
        made = await http.post("/api/v1/tenants", json={"slug": "globex", "name": "Globex"})
        globex_key = made.json()["api_key"]["key"]
        acme_id = (await http.get("/api/v1/tenants/acme")).json()["id"]
        globex_id = made.json()["tenant"]["id"]
    socket_url = server.url.replace("http://", "ws://") + "/api/v1/desk/ws"
    async with aiohttp.ClientSession() as session:
        for first in ('{"token": "blk_nothing"}', "not json", '{"token": 5}', '{"token": "' + "x" * 5000 + '"}', "[]"):
            async with session.ws_connect(socket_url) as refused:
                await refused.send_str(first)
                frame = await refused.receive_json(timeout=10)
                assert frame["type"] == "error", first
                closing = await refused.receive(timeout=10)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), first
                assert refused.close_code == 4401, first
        async with session.ws_connect(socket_url) as mine, session.ws_connect(socket_url) as theirs:
            await mine.send_str(json.dumps({"token": acme_key}))
            await theirs.send_str(json.dumps({"token": globex_key}))
            assert (await mine.receive_json(timeout=10)) == {"type": "ready", "tenant_id": acme_id, "agent_id": None}
            assert (await theirs.receive_json(timeout=10))["tenant_id"] == globex_id
            async with session.ws_connect(socket_url) as operator:
                await operator.send_str(json.dumps({"token": "admin", "tenant": "acme"}))
                assert (await operator.receive_json(timeout=10))["tenant_id"] == acme_id
            async with session.ws_connect(socket_url) as nameless:
                await nameless.send_str(json.dumps({"token": "admin"}))  # the operator must name the tenant
                assert (await nameless.receive_json(timeout=10))["type"] == "error"
            await mine.send_str('{"type": "ping"}')
            assert (await mine.receive_json(timeout=10)) == {"type": "pong"}

            worker_settings = msgspec.structs.replace(settings, redis_url=redis)
            async with open_services(worker_settings, url=database_url) as worker:
                secret = await worker.events.emit(acme_id, "handover.note", data={"text": "acme only"})
                public = await worker.events.emit(globex_id, "handover.waiting", data={"n": 1})
            assert secret is not None and public is not None
            got = await mine.receive_json(timeout=15)
            assert got["type"] == "event" and got["event"]["id"] == secret.id
            assert got["event"]["data"] == {"text": "acme only"}
            other = await theirs.receive_json(timeout=15)
            assert other["event"]["id"] == public.id, "a socket sees its own tenant's events only"

            # the server's listener loses its connection (a database or Redis restart): it listens again
            await (terminate_listeners(database_url) if redis is None else kill_subscribers(redis))
            async with open_services(worker_settings, url=database_url) as worker:
                emitted: list[str] = []
                received = None
                for _ in range(40):  # events sent while it reconnects are lost (live is best effort)
                    event = await worker.events.emit(acme_id, "handover.waiting", data={})
                    assert event is not None
                    emitted.append(event.id)
                    try:
                        received = await mine.receive_json(timeout=0.5)
                        break
                    except TimeoutError:
                        continue
            assert received is not None and received["event"]["id"] in emitted, "live again after the outage"


async def kill_subscribers(redis_url: str) -> None:
    """End Redis' pub/sub connections (as a Redis restart would)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        assert await client.client_kill_filter(_type="pubsub") >= 1, "the server listens"
    finally:
        await client.aclose()


async def terminate_listeners(database_url: str) -> None:
    """End the connections listening for live events (as a database restart would)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %%botloom_live_%%' AND pid <> pg_backend_pid()"
        )
        assert await cur.fetchall(), "the server listens"


async def test_recovery_finds_overdue_streams_and_prunes_old_events(
    client: httpx.AsyncClient, services: Services, receiver: Receiver
) -> None:
    acme = await tenant(client, "acme")
    receiver.secret = (await add_endpoint(client, acme, receiver.url))["secret"]
    conv = await conversation(services, acme)
    old = await services.events.emit(acme.id, "handover.waiting", conversation_id=conv)
    assert old is not None
    async with services.store.db.connection() as conn:  # as if its job was lost two minutes ago, a month back
        await conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '2 minutes'")
    assert await services.events.recover() == 1, "the overdue stream is queued again"
    async with services.store.db.connection() as conn:
        await conn.execute("UPDATE events SET created_at = now() - interval '31 days' WHERE id = %s", (old.id,))
    new = await services.events.emit(acme.id, "handover.claimed", conversation_id=conv)
    assert new is not None
    assert await services.events.recover() == 0, "the old event is pruned; the new one is not overdue"
    listed = (await client.get("/api/v1/events", headers=bearer(acme.key))).json()["events"]
    assert [e["id"] for e in listed] == [new.id], "a month-old event is pruned, with its delivery"
    async with services.store.db.connection() as conn:
        cur = await conn.execute("SELECT event_id FROM webhook_deliveries")
        assert [str(r["event_id"]) for r in await cur.fetchall()] == [new.id]
    async with workers(services):
        await until(lambda: [a.event_id for a in receiver.accepted()] == [new.id])


def test_public_signer_matches_the_documented_scheme() -> None:
    """``botloom.sign_request`` (for plugins calling a tenant's API) is the scheme the docs' receiver checks."""
    from botloom import sign_request, verify_signature

    body = b'{"id": "e1", "text": "h\xc3\xa9"}'
    header = sign_request("whsec_test", body)["Botloom-Signature"]
    assert verify(secret="whsec_test", body=body, header=header)
    assert verify_signature("whsec_test", body, header)
    assert not verify_signature("whsec_other", body, header)
    assert not verify_signature("whsec_test", body + b" ", header)
    stale = sign_request("whsec_test", body, timestamp=int(time.time()) - 301)["Botloom-Signature"]
    assert not verify(secret="whsec_test", body=body, header=stale) and not verify_signature("whsec_test", body, stale)
    for garbage in ("", "t=", "v1=abc", "t=abc,v1=abc", "t=1,v1=" + "0" * 64, "x" * 5000, "t=99999999999999,v1=a"):
        assert not verify_signature("whsec_test", body, garbage), garbage


async def test_delivery_checks_the_address_again(client: httpx.AsyncClient, services: Services) -> None:
    """A URL that passed when added but reaches a refused address now (its DNS changed) is not connected to."""
    acme = await tenant(client, "acme")
    endpoint = await services.store.webhooks.create(acme.id, "http://10.255.255.1/hook", "whsec_x")  # as if rebound
    assert endpoint is not None
    event = await services.events.emit(acme.id, "handover.waiting")
    assert event is not None
    assert await services.events.send_webhooks(endpoint.id, "") == 0
    r = await client.get(f"/api/v1/tenants/acme/webhooks/{endpoint.id}/deliveries", headers=bearer(acme.key))
    [delivery] = r.json()
    assert delivery["status"] == "pending" and delivery["attempts"] == 1, "tried again later (allowed by then?)"
    assert delivery["last_error"].startswith("refused: 10.255.255.1"), delivery["last_error"]
