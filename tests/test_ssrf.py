"""A tenant must not choose where botloom's processes connect (issue 12, item 2).

The guard itself (``core/netguard.py``): which addresses are refused in which form,
the operator's allow-list, names checked by their DNS answers, and connections that
go to the checked address. The channels' use of it follows below the unit tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import msgspec
import pytest

from botloom.channels.twilio import TwilioChannel
from botloom.core import netguard
from botloom.core.config import split_secrets, validate_config
from botloom.core.netguard import (
    EndpointPolicy,
    EndpointRefused,
    check_url,
    endpoint,
    endpoint_errors,
    host_literal,
    open_socket,
    policy_installed,
    refusal,
    resolve_endpoint,
)
from botloom.core.settings import Settings, SettingsError, load_settings
from botloom.runtime.services import Services, open_services
from botloom.server.demo import DemoInfo, ensure_demo
from botloom.server.worker import workers
from botloom.testing.channel_contract import GREETING, fast_app, wait_until
from tests.email_client import BOT_ADDRESS, INBOUND_SECRET, email_config, post_mail, raw_mail
from tests.helpers import api_client
from tests.mailservers import RunningSmtp
from tests.twilio_peer import TwilioPeer, inbound_form, post_signed, twilio_config

WEBHOOK = "/channels/twilio/acme/support"

STRICT = EndpointPolicy()

REFUSED_HOSTS = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "[::1]",
    "::",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:169.254.169.254",
    "::ffff:7f00:1",
    "fd00::1",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",
    "64:ff9b::a00:1",
    "2002:7f00:1::",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "127.1",
    "017700000001",
    "localhost",
    "LOCALHOST.",
    "db.localhost",
]


class FakeDns:
    """Stands in for the resolver the guard asks (``netguard._lookup``): names map to answer lists."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[tuple[int, str]]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        found = []
        for text in self.answers[host]:
            family = socket.AF_INET6 if ipaddress.ip_address(text).version == 6 else socket.AF_INET
            found.append((int(family), text))
        return found


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """A fake resolver: ``public.example`` is public, ``inside.example`` loopback, ``mixed.example`` both."""
    fake = FakeDns(
        {
            "public.example": ["93.184.215.14"],
            "inside.example": ["127.0.0.1"],
            "meta.example": ["169.254.169.254"],
            "mixed.example": ["93.184.215.14", "10.0.0.7"],
            "six.example": ["::ffff:10.1.2.3"],
            "relay.internal": ["10.9.9.9"],
            "a.corp.example": ["10.1.1.1"],
        }
    )
    monkeypatch.setattr(netguard, "_lookup", fake)
    return fake


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_every_non_public_address_is_refused_in_every_form(host: str, dns: FakeDns) -> None:
    with pytest.raises(EndpointRefused) as refused:
        await resolve_endpoint(host, 443, policy=STRICT)
    assert "BOTLOOM_ALLOWED_ENDPOINTS" in str(refused.value)
    assert not dns.asked, "a literal address or a loopback name is judged without asking DNS"


@pytest.mark.parametrize("host", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "[2606:4700:4700::1111]"])
async def test_public_addresses_pass(host: str, dns: FakeDns) -> None:
    [(family, address)] = await resolve_endpoint(host, 443, policy=STRICT)
    assert ipaddress.ip_address(address) == host_literal(host)
    assert family == (socket.AF_INET6 if ":" in host else socket.AF_INET)


def test_numeric_forms_are_read_as_the_resolver_reads_them() -> None:
    assert host_literal("2130706433") == ipaddress.ip_address("127.0.0.1")
    assert host_literal("0x7f.1") == ipaddress.ip_address("127.0.0.1")
    assert host_literal("0177.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert host_literal("[::1]") == ipaddress.ip_address("::1")
    assert host_literal("smtp.example.com") is None
    assert host_literal("1e100.net") is None


def test_reasons_name_the_kind_of_address() -> None:
    assert refusal(ipaddress.ip_address("127.0.0.1")) == "a loopback address"
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1")) == "a loopback address in an IPv6 form"
    assert refusal(ipaddress.ip_address("169.254.169.254")) == "a link-local address"
    assert refusal(ipaddress.ip_address("10.0.0.1")) == "a private address"
    assert refusal(ipaddress.ip_address("100.64.1.1")) == "a shared (CGNAT) address"
    assert refusal(ipaddress.ip_address("0.0.0.0")) == "the unspecified address"
    assert refusal(ipaddress.ip_address("239.1.1.1")) == "a multicast address"
    assert refusal(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert refusal(ipaddress.ip_address("1.1.1.1")) is None


async def test_names_are_judged_by_every_dns_answer(dns: FakeDns) -> None:
    assert await resolve_endpoint("public.example", 443, policy=STRICT) == [(socket.AF_INET, "93.184.215.14")]
    for name in ("inside.example", "meta.example", "mixed.example", "six.example"):
        with pytest.raises(EndpointRefused) as refused:
            await resolve_endpoint(name, 443, policy=STRICT)
        assert "resolves to an address that is not public" in str(refused.value)
        assert "127.0.0.1" not in str(refused.value) and "10." not in str(refused.value), "no internal address shown"
    with pytest.raises(OSError):
        await resolve_endpoint("nowhere.example", 443, policy=STRICT)


async def test_the_operator_allow_list(dns: FakeDns) -> None:
    policy = EndpointPolicy.parse("127.0.0.1:2525, 10.0.0.0/8, relay.internal:25, *.corp.example, [::1]")
    assert await resolve_endpoint("127.0.0.1", 2525, policy=policy) == [(socket.AF_INET, "127.0.0.1")]
    assert await resolve_endpoint("::ffff:127.0.0.1", 2525, policy=policy)  # the same address in an IPv6 form
    with pytest.raises(EndpointRefused):
        await resolve_endpoint("127.0.0.1", 6379, policy=policy)  # another port of the same address
    assert await resolve_endpoint("10.2.3.4", 6379, policy=policy)
    assert await resolve_endpoint("mixed.example", 443, policy=policy)  # its private answer is in 10/8
    assert await resolve_endpoint("relay.internal", 25, policy=policy) == [(socket.AF_INET, "10.9.9.9")]
    assert await resolve_endpoint("a.corp.example", 993, policy=policy)
    assert await resolve_endpoint("[::1]", 143, policy=policy)
    with pytest.raises(EndpointRefused):
        await resolve_endpoint("inside.example", 443, policy=policy)
    with pytest.raises(EndpointRefused):
        await resolve_endpoint("169.254.169.254", 80, policy=policy)
    anything = EndpointPolicy(allow_private=True)
    assert await resolve_endpoint("169.254.169.254", 80, policy=anything)
    assert await resolve_endpoint("inside.example", 443, policy=anything) == [(socket.AF_INET, "127.0.0.1")]


@pytest.mark.parametrize("entry", ["127.0.0.1:99999", "exa mple", "10.0.0.0/33", "host:port", "a:b:c:d"])
def test_a_malformed_allow_list_entry_stops_start_up(entry: str) -> None:
    with pytest.raises(SettingsError, match="BOTLOOM_ALLOWED_ENDPOINTS"):
        load_settings(environ={"BOTLOOM_ALLOWED_ENDPOINTS": entry})


def test_settings_carry_the_policy() -> None:
    settings = load_settings(
        environ={"BOTLOOM_ALLOWED_ENDPOINTS": "smtp.internal:25,10.0.0.0/8", "BOTLOOM_ALLOW_PRIVATE_ENDPOINTS": "true"}
    )
    policy = settings.endpoint_policy
    assert policy.allow_private
    assert policy.allows_name("smtp.internal", 25) and policy.allows_address(ipaddress.ip_address("10.1.1.1"), 1)
    assert load_settings(environ={}).endpoint_policy == EndpointPolicy()


def test_without_installed_settings_the_environment_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netguard, "_installed", None)
    monkeypatch.setenv("BOTLOOM_ALLOWED_ENDPOINTS", "relay.internal")
    assert netguard.current_policy().allows_name("relay.internal", 25)
    with policy_installed(STRICT):
        assert not netguard.current_policy().allows_name("relay.internal", 25)
    assert netguard.current_policy().allows_name("relay.internal", 25)


async def test_urls(dns: FakeDns) -> None:
    await check_url("https://public.example/2010-04-01", policy=STRICT)
    for url in (
        "http://127.0.0.1:8080",
        "http://2130706433/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]:80/",
        "https://user@169.254.169.254/",
        "http://public.example@127.0.0.1/",
        "http://inside.example/",
        "http://localhost:5432/",
    ):
        with pytest.raises(EndpointRefused):
            await check_url(url, policy=STRICT)
    with pytest.raises(ValueError):
        await check_url("ftp://public.example/", policy=STRICT)


class Marked(msgspec.Struct, kw_only=True):
    base: Annotated[str, endpoint()] | None = None
    host: Annotated[str, endpoint("host", port_field="port")] | None = None
    port: int = 25
    other: str = "127.0.0.1"


async def test_config_errors_name_each_endpoint_field(dns: FakeDns) -> None:
    assert netguard.endpoint_fields(Marked).keys() == {"base", "host"}
    assert await endpoint_errors(Marked, {"base": "https://public.example", "host": "public.example"}) == []
    errors = await endpoint_errors(Marked, {"base": "http://10.0.0.1/", "host": "inside.example"}, policy=STRICT)
    assert [e["field"] for e in errors] == ["base", "host"]
    assert "10.0.0.1:80 is refused: it is a private address" in errors[0]["message"]
    allowed = EndpointPolicy.parse("inside.example:25")
    errors = await endpoint_errors(Marked, {"host": "inside.example", "port": 25}, policy=allowed)
    assert errors == []
    errors = await endpoint_errors(Marked, {"host": "inside.example", "port": 26}, policy=allowed)
    assert [e["field"] for e in errors] == ["host"]
    assert await endpoint_errors(Marked, {"host": "nowhere.example"}, policy=STRICT) == [], "checked when connecting"
    errors = await endpoint_errors(Marked, {"base": "http://[::ffff:169.254.169.254]/latest"}, policy=STRICT)
    assert errors[0]["message"].startswith("[::ffff:169.254.169.254]:80 is refused: it is a link-local address")


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP server on 127.0.0.1 that records the first line each client sends and answers an empty HTTP 204."""
    lines: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await reader.readline()).decode().strip())
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, lines


async def test_open_socket_connects_to_the_checked_address(listener: tuple[int, list[str]], dns: FakeDns) -> None:
    port, lines = listener
    with pytest.raises(EndpointRefused):
        await open_socket("inside.example", port, connect_timeout=5, policy=STRICT)
    allowed = EndpointPolicy.parse(f"127.0.0.1:{port}")
    sock = await open_socket("inside.example", port, connect_timeout=5, policy=allowed)
    assert sock.getpeername() == ("127.0.0.1", port)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"hello\n")
    await writer.drain()
    await reader.read()
    writer.close()
    assert lines == ["hello"]


async def test_a_name_cannot_rebind_between_check_and_connect(listener: tuple[int, list[str]], dns: FakeDns) -> None:
    """DNS answers public to a first lookup and loopback to every later one: the connection never reaches loopback."""
    port, lines = listener
    answers = iter([["93.184.215.14"]])

    async def rebinding(host: str, port: int) -> list[tuple[int, str]]:
        return [(int(socket.AF_INET), a) for a in next(answers, ["127.0.0.1"])]

    netguard_lookup = netguard._lookup
    try:
        netguard._lookup = rebinding  # type: ignore[assignment]
        await check_url(f"http://rebind.example:{port}/", policy=STRICT)  # the config-time check passes
        with pytest.raises(EndpointRefused):
            await open_socket("rebind.example", port, connect_timeout=5, policy=STRICT)
    finally:
        netguard._lookup = netguard_lookup  # type: ignore[assignment]
    assert lines == []


@pytest.fixture
def strict_policy() -> Iterator[None]:
    with policy_installed(STRICT):
        yield


async def test_the_aiohttp_session_checks_names_and_literals(
    listener: tuple[int, list[str]], dns: FakeDns, strict_policy: None
) -> None:
    port, lines = listener
    for host in ("127.0.0.1", "inside.example", "[::ffff:127.0.0.1]", "2130706433", "localhost"):
        url = f"http://{host}:{port}/"
        async with netguard.aiohttp_session() as session:
            with pytest.raises(EndpointRefused):
                await session.get(url)
    assert lines == []
    with policy_installed(EndpointPolicy.parse(f"127.0.0.1:{port}")):
        async with netguard.aiohttp_session() as session, session.get(f"http://inside.example:{port}/x") as answer:
            assert answer.status == 204
    assert lines == ["GET /x HTTP/1.1"]


# ----------------------------------------------------------------------------- the channels

REFUSED_URLS = [
    "http://127.0.0.1:8080",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:8080",
    "http://[::ffff:127.0.0.1]:8080",
    "http://0.0.0.0:8080",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://localhost:5432/",
    "http://inside.example/",
]
REFUSED_MAIL_HOSTS = [
    "127.0.0.1",
    "10.0.0.1",
    "169.254.169.254",
    "::1",
    "[::1]",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "2130706433",
    "localhost",
    "inside.example",
]
SECRET_BODY = "INTERNAL-ONLY: db_password=hunter2"
DEAD_LETTERS = "/api/v1/bots/acme/support/dead-letters"


@pytest.fixture
def strict_settings(settings: Settings) -> Settings:
    """A deployment whose operator allowed no private endpoint (the tests' usual settings allow loopback)."""
    return msgspec.structs.replace(settings, allowed_endpoints="")


@pytest.fixture
async def strict(strict_settings: Settings, database_url: str) -> AsyncIterator[tuple[Services, DemoInfo, Any]]:
    """Services, the demo bot and an app client of the strict deployment."""
    async with open_services(strict_settings, url=database_url) as services:
        demo = await ensure_demo(services)
        async with api_client(fast_app(strict_settings, services)) as client:
            client.headers["Authorization"] = f"Bearer {demo.api_key}"
            yield services, demo, client


async def put_config(client: Any, plugin: str, config: dict[str, Any]) -> Any:
    return await client.put(f"/api/v1/bots/acme/support/plugins/{plugin}", json={"enabled": True, "config": config})


async def store_config(services: Services, demo: DemoInfo, plugin: str, config: dict[str, Any]) -> None:
    """Store a config as an older version (or a laxer operator) let it through, without the API's check."""
    schema = services.host.config_schema(plugin)
    public, hidden = split_secrets(schema, validate_config(plugin, schema, config))
    await services.store.plugin_settings.put(
        demo.tenant.id, demo.bot.id, plugin, enabled=True, config=public, secrets=hidden
    )


async def dead_letter(client: Any) -> dict[str, Any]:
    """The bot's one dead letter, once there is one."""
    found: list[dict[str, Any]] = []

    async def dead() -> bool:
        found[:] = (await client.get(DEAD_LETTERS)).json()
        return bool(found)

    await wait_until(dead, what="a dead letter")
    [letter] = found
    return letter


async def test_a_tenant_cannot_save_a_twilio_api_base_url_that_is_not_public(
    strict: tuple[Services, DemoInfo, Any], peer: TwilioPeer, dns: FakeDns
) -> None:
    services, demo, client = strict
    for url in REFUSED_URLS:
        answer = await put_config(client, "twilio", twilio_config(peer, api_base_url=url))
        assert answer.status_code == 400, (url, answer.text)
        assert [e["key"] for e in answer.json()["extra"]] == ["config.api_base_url"], url
        assert "is refused" in answer.json()["extra"][0]["message"]
    assert await services.store.plugin_settings.get(demo.tenant.id, demo.bot.id, "twilio") is None, "nothing stored"
    public = await put_config(client, "twilio", twilio_config(peer, api_base_url="https://public.example"))
    assert public.status_code == 200, public.text


@pytest.mark.parametrize("field", ["smtp_host", "imap_host"])
async def test_a_tenant_cannot_save_a_mail_host_that_is_not_public(
    strict: tuple[Services, DemoInfo, Any], smtp: RunningSmtp, dns: FakeDns, field: str
) -> None:
    services, demo, client = strict
    base = email_config(smtp, smtp_host="public.example")
    if field == "imap_host":
        base |= {"imap_host": "public.example", "imap_username": "bot", "imap_password": "pw"}
    for host in REFUSED_MAIL_HOSTS:
        answer = await put_config(client, "email", base | {field: host})
        assert answer.status_code == 400, (host, answer.text)
        assert [e["key"] for e in answer.json()["extra"]] == [f"config.{field}"], host
    assert await services.store.plugin_settings.get(demo.tenant.id, demo.bot.id, "email") is None, "nothing stored"
    assert (await put_config(client, "email", base)).status_code == 200


async def test_a_twilio_send_never_reaches_an_address_the_name_rebound_to(
    strict: tuple[Services, DemoInfo, Any], peer: TwilioPeer, dns: FakeDns
) -> None:
    """The name answers a public address when the config is saved, loopback when the worker sends."""
    services, _, client = strict
    dns.answers["rebind.example"] = ["93.184.215.14"]
    config = twilio_config(peer, api_base_url=f"http://rebind.example:{peer.port}")
    assert (await put_config(client, "twilio", config)).status_code == 200
    dns.answers["rebind.example"] = ["127.0.0.1"]
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
        letter = await dead_letter(client)
    assert "rebind.example" in letter["error"] and "is refused" in letter["error"], letter
    assert letter["attempts"] == 1, "a refused endpoint is not tried again"
    assert peer.requests == 0, "the worker never connected to the peer"


async def test_a_stored_twilio_config_pointing_at_loopback_sends_nothing_there(
    strict: tuple[Services, DemoInfo, Any], peer: TwilioPeer
) -> None:
    services, demo, client = strict
    await store_config(services, demo, "twilio", twilio_config(peer))  # http://127.0.0.1:PORT
    async with workers(services):
        assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
        letter = await dead_letter(client)
    assert "127.0.0.1" in letter["error"] and "loopback" in letter["error"], letter
    assert peer.requests == 0


async def test_a_stored_smtp_host_on_loopback_is_never_connected_to(
    strict: tuple[Services, DemoInfo, Any], listener: tuple[int, list[str]]
) -> None:
    services, demo, client = strict
    port, lines = listener
    config = {
        "address": BOT_ADDRESS,
        "inbound_secret": INBOUND_SECRET,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "timeout_seconds": 2,
    }
    await store_config(services, demo, "email", config)
    async with workers(services):
        assert (await post_mail(client, raw_mail("hello", message_id="ssrf@example.org"))).status_code == 200
        letter = await dead_letter(client)
    assert "127.0.0.1" in letter["error"] and "loopback" in letter["error"], letter
    assert letter["attempts"] == 1
    assert lines == [], "no connection reached the listener"


async def test_a_stored_imap_host_on_loopback_is_never_polled(
    strict: tuple[Services, DemoInfo, Any], listener: tuple[int, list[str]]
) -> None:
    services, demo, _ = strict
    port, lines = listener
    config = {
        "address": BOT_ADDRESS,
        "smtp_host": "public.example",
        "imap_host": "::ffff:127.0.0.1",
        "imap_port": port,
        "imap_security": "none",
        "imap_username": "bot",
        "imap_password": "pw",
        "timeout_seconds": 2,
    }
    await store_config(services, demo, "email", config)
    assert await services.polling.poll(demo.tenant.id, demo.bot.id, "email") == 0
    async with services.db.connection() as conn:
        row = await (await conn.execute("SELECT error FROM channel_polls")).fetchone()
    assert row is not None and "loopback" in row["error"], row
    assert lines == [], "no connection reached the listener"


@pytest.fixture
async def internal_service() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An internal HTTP service on loopback that answers every request 400 with a secret in its body.

    ``/json`` answers Twilio's error JSON (a numeric ``code``), anything else plain text.
    """
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
        )
        await reader.readexactly(length)
        requests.append(head)
        if b"/json/" in head.split(b"\r\n")[0]:
            kind, body = b"application/json", json.dumps({"code": 21211, "message": SECRET_BODY, "status": 400})
        else:
            kind, body = b"text/plain", SECRET_BODY
        data = body.encode()
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: "
            + kind
            + b"\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + data
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], requests


@pytest.mark.parametrize("kind", ["json", "text"])
async def test_a_dead_letter_never_quotes_the_servers_answer(
    settings: Settings,
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    internal_service: tuple[int, list[bytes]],
    kind: str,
) -> None:
    """The operator allowed loopback (the tests' settings), so the request goes out: only its status comes back."""
    port, requests = internal_service
    base = f"http://127.0.0.1:{port}/{kind}"
    async with api_client(fast_app(settings, services)) as client:
        client.headers["Authorization"] = f"Bearer {demo.api_key}"
        assert (await put_config(client, "twilio", twilio_config(peer, api_base_url=base))).status_code == 200
        async with workers(services):
            assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
            letter = await dead_letter(client)
    assert requests, "the allowed endpoint was reached"
    assert letter["error"].startswith("TwilioSendError: Twilio answered 400"), letter
    assert "INTERNAL" not in letter["error"] and "hunter2" not in letter["error"]
    if kind == "json":
        assert "21211" in letter["error"], "Twilio's numeric error code is kept"


async def test_a_dead_letter_never_quotes_the_smtp_servers_reply(
    settings: Settings, services: Services, demo: DemoInfo, smtp: RunningSmtp
) -> None:
    smtp.fail_next(1, 550, f"5.7.1 {SECRET_BODY}")
    async with api_client(fast_app(settings, services)) as client:
        client.headers["Authorization"] = f"Bearer {demo.api_key}"
        assert (await put_config(client, "email", email_config(smtp))).status_code == 200
        async with workers(services):
            assert (await post_mail(client, raw_mail("hello", message_id="body@example.org"))).status_code == 200
            letter = await dead_letter(client)
    assert "550" in letter["error"], letter
    assert "INTERNAL" not in letter["error"] and "hunter2" not in letter["error"]


async def test_an_allowed_endpoint_still_works(
    settings: Settings, services: Services, demo: DemoInfo, peer: TwilioPeer, smtp: RunningSmtp
) -> None:
    """The tests' operator allows loopback: the Twilio peer and the SMTP server on 127.0.0.1 get the replies."""
    assert settings.endpoint_policy.allows_address(ipaddress.ip_address("127.0.0.1"), peer.port)
    async with api_client(fast_app(settings, services)) as client:
        client.headers["Authorization"] = f"Bearer {demo.api_key}"
        assert (await put_config(client, "twilio", twilio_config(peer))).status_code == 200
        assert (await put_config(client, "email", email_config(smtp))).status_code == 200
        async with workers(services):
            assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
            assert (await post_mail(client, raw_mail("hello", message_id="ok@example.org"))).status_code == 200
            assert [m.body for m in await asyncio.to_thread(peer.wait_for, 1)] == [GREETING]
            assert len(await asyncio.to_thread(smtp.wait_for, 1)) == 1


async def test_a_dead_letter_keeps_only_the_type_of_an_exception_a_channel_did_not_word(
    settings: Settings,
    services: Services,
    demo: DemoInfo,
    peer: TwilioPeer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A library's exception may quote what a server answered: the tenant sees its type, the operator's log the rest.

    A channel words what the tenant reads by raising ``SendError``; here the
    channel's send fails with something else (as a third-party channel's HTTP
    library might).
    """

    async def leaky(self: TwilioChannel, message: object, config: object) -> str:
        raise RuntimeError(f"server said: {SECRET_BODY}")

    monkeypatch.setattr(TwilioChannel, "send", leaky)
    async with api_client(fast_app(settings, services)) as client:
        client.headers["Authorization"] = f"Bearer {demo.api_key}"
        assert (await put_config(client, "twilio", twilio_config(peer))).status_code == 200
        async with workers(services):
            assert (await post_signed(client, WEBHOOK, inbound_form("hello"))).status_code == 200
            letter = await dead_letter(client)
    assert letter["error"].startswith("RuntimeError"), letter
    assert "INTERNAL" not in letter["error"] and "hunter2" not in letter["error"]
    assert SECRET_BODY in caplog.text, "the operator's log keeps the detail"
