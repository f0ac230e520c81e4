"""Where botloom's processes may connect when a tenant names the server: the endpoint guard.

A tenant configures some endpoints itself (a Twilio API base URL, an SMTP or IMAP
host). Left unchecked, a tenant could make the workers connect to the deployment's
own network (a database, a cloud metadata service, an admin port) with the bot's
credentials, and read parts of the answer. The guard refuses every address that is
not public: loopback, private (RFC 1918, IPv6 ULA, CGNAT), link-local, multicast,
unspecified, reserved and documentation ranges, and IPv6 forms that carry one of
them (IPv4-mapped, 6to4, NAT64), unless the operator allows it:

* ``BOTLOOM_ALLOWED_ENDPOINTS``: comma-separated host names (``smtp.internal``,
  ``*.corp.example``), addresses or networks (``10.0.0.5``, ``10.1.0.0/16``,
  ``[fd00::1]``), each with an optional port (``relay.internal:25``,
  ``127.0.0.1:2525``, ``[::1]:143``); an endpoint matching one is allowed even
  when it is private;
* ``BOTLOOM_ALLOW_PRIVATE_ENDPOINTS=true``: allow every address (one trusted tenant).

Names are resolved once, every answer is checked, and the connection goes to a
checked address (:func:`resolve_endpoint`, :func:`open_socket`,
:func:`aiohttp_session`), so a name cannot answer a public address to the check
and a private one to the connection (DNS rebinding). Channels check their
endpoints again when a tenant saves its config (fields annotated with
:func:`endpoint`, checked by :func:`endpoint_errors`).

The process's policy is installed once from the settings (:func:`install_policy`,
done by the composition root); a process that installed none reads the two
variables from its environment.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
import socket
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from botloom.core.channels import SendError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ENDPOINT_MARK = "botloom_endpoint"
"""The ``msgspec.Meta(extra=...)`` key that marks a config field as an endpoint (see :func:`endpoint`)."""

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_V4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_TRUE = frozenset({"1", "true", "yes", "on"})


class EndpointRefused(SendError, ValueError):
    """A tenant's endpoint points at an address the operator did not allow; never worth retrying.

    A :class:`~botloom.core.channels.SendError` that is not ``retryable``: a send that
    meets it makes the reply a dead letter at once, whether or not the channel words
    it (a ``ValueError`` too, for the config checks).
    """

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(
            f"{endpoint} is refused: {reason}; only public addresses are allowed "
            "unless the operator lists the endpoint in BOTLOOM_ALLOWED_ENDPOINTS",
            retryable=False,
        )


@dataclass(frozen=True)
class AllowRule:
    """One entry of ``BOTLOOM_ALLOWED_ENDPOINTS``: a name (``*.`` for subdomains) or a network, maybe a port."""

    name: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def allows_name(self, host: str, port: int) -> bool:
        """Whether this rule names ``host`` (lower case, no trailing dot) on ``port``."""
        if self.name is None or (self.port is not None and self.port != port):
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and host != self.name[2:]
        return host == self.name

    def allows_address(self, address: IPAddress, port: int) -> bool:
        """Whether this rule's network holds ``address`` (or its IPv4 form) on ``port``."""
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return any(a.version == self.network.version and a in self.network for a in _forms(address))


@dataclass(frozen=True)
class EndpointPolicy:
    """The operator's exceptions to "public addresses only"."""

    allow_private: bool = False
    rules: tuple[AllowRule, ...] = ()

    @classmethod
    def parse(cls, allowed: str | None, *, allow_private: bool = False) -> EndpointPolicy:
        """A policy from ``BOTLOOM_ALLOWED_ENDPOINTS``'s text; ``ValueError`` names a malformed entry."""
        return cls(
            allow_private=allow_private, rules=tuple(_rule(e.strip()) for e in (allowed or "").split(",") if e.strip())
        )

    @classmethod
    def from_environment(cls, environ: typing.Mapping[str, str] | None = None) -> EndpointPolicy:
        """The policy the two environment variables describe."""
        env = os.environ if environ is None else environ
        flag = env.get("BOTLOOM_ALLOW_PRIVATE_ENDPOINTS", "").strip().lower() in _TRUE
        return cls.parse(env.get("BOTLOOM_ALLOWED_ENDPOINTS"), allow_private=flag)

    def allows_name(self, host: str, port: int) -> bool:
        """Whether the operator allowed this host name (whatever it resolves to)."""
        return self.allow_private or any(r.allows_name(host, port) for r in self.rules)

    def allows_address(self, address: IPAddress, port: int) -> bool:
        """Whether the operator allowed this (non-public) address."""
        return self.allow_private or any(r.allows_address(address, port) for r in self.rules)


def _rule(entry: str) -> AllowRule:
    """One allow-list entry: ``name``, ``*.domain``, ``address``, ``network/len``, each with ``:port`` or not."""
    text, port = entry.lower(), None
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if bracketed:
        text, port = bracketed.group(1), bracketed.group(2)
    elif text.count(":") == 1:
        text, port = text.split(":")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    number = int(port) if port is not None else None
    try:
        return AllowRule(network=ipaddress.ip_network(text, strict=False), port=number)
    except ValueError:
        pass
    if not re.fullmatch(r"(\*\.)?[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?)*\.?", text):
        raise ValueError(f"{entry!r} is neither a host name, an address nor a network (10.0.0.0/8)")
    return AllowRule(name=text.rstrip("."), port=number)


_installed: EndpointPolicy | None = None


def current_policy() -> EndpointPolicy:
    """The process's policy: the one installed from the settings, else the environment's."""
    return _installed if _installed is not None else EndpointPolicy.from_environment()


def install_policy(policy: EndpointPolicy | None) -> EndpointPolicy | None:
    """Make ``policy`` the process's policy (``None``: read the environment); returns the previous one."""
    global _installed
    previous, _installed = _installed, policy
    return previous


@contextmanager
def policy_installed(policy: EndpointPolicy) -> Iterator[EndpointPolicy]:
    """``policy`` as the process's policy for the duration of a ``with`` block."""
    previous = install_policy(policy)
    try:
        yield policy
    finally:
        install_policy(previous)


def _forms(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address an IPv6 form of it carries (mapped, 6to4, NAT64, Teredo)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        found.extend(e for e in embedded if e is not None)
    return found


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one (``"a loopback address"``), or ``None`` when it is.

    An IPv4-mapped address (``::ffff:127.0.0.1``) is judged as the IPv4 address it
    is; other IPv6 forms that carry an IPv4 address (6to4, NAT64, Teredo) are
    refused when either address is.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        reason = _why(address.ipv4_mapped)
        return f"{reason} in an IPv6 form" if reason else None
    forms = _forms(address)
    for form in forms[1:]:
        reason = _why(form)
        if reason is not None:
            return f"{reason} in an IPv6 form"
    return _why(address)


def _why(address: IPAddress) -> str | None:
    checks = (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.version == 4 and address in _CGNAT, "a shared (CGNAT) address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def host_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one, in any form a resolver takes; ``None`` for a name.

    The forms: ``[::1]``, ``fe80::1%eth0``, and the old numeric IPv4 ones (``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``) that ``inet_aton`` reads as ``127.0.0.1``.
    """
    text = host.strip().strip("[]").rstrip(".").split("%")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_V4.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def shown_endpoint(host: str, port: int) -> str:
    """``host:port`` as written in a URL (``[::1]:25``)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


async def _lookup(host: str, port: int) -> list[tuple[int, str]]:
    """The resolver's answers for ``host`` as ``(family, address)``; tests replace this function."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos]


def check_address(address: IPAddress, port: int, *, shown: str, policy: EndpointPolicy | None = None) -> None:
    """Raise :class:`EndpointRefused` unless ``address`` is public or allowed; ``shown`` names the endpoint."""
    policy = policy or current_policy()
    reason = refusal(address)
    if reason is not None and not policy.allows_address(address, port):
        raise EndpointRefused(shown, f"it is {reason}")


async def resolve_endpoint(host: str, port: int, *, policy: EndpointPolicy | None = None) -> list[tuple[int, str]]:
    """The addresses to connect to for ``host:port``, as ``(family, address)``, each one checked.

    A name the operator allowed is resolved and trusted; any other name is refused
    when one of its answers is not a public address. ``OSError`` when the name
    does not resolve. Connect to what this returns, not to the name.
    """
    policy = policy or current_policy()
    shown = shown_endpoint(host, port)
    literal = host_literal(host)
    if literal is not None:
        check_address(literal, port, shown=shown, policy=policy)
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    name = _name(host)
    if not name:
        raise EndpointRefused(shown, "it names no host")
    if policy.allows_name(name, port):
        return _unique(await _lookup(name, port))
    if name == "localhost" or name.endswith(".localhost"):
        raise EndpointRefused(shown, "it is a loopback name")
    answers = _unique(await _lookup(name, port))
    if not answers:
        raise OSError(f"{host} does not resolve")
    for _, text in answers:
        address = ipaddress.ip_address(text.split("%")[0])
        if refusal(address) is not None and not policy.allows_address(address, port):
            raise EndpointRefused(shown, "it resolves to an address that is not public")
    return answers


def _unique(answers: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return list(dict.fromkeys(answers))


def url_endpoint(url: str) -> tuple[str, int]:
    """The host and port an ``http(s)://`` URL connects to; ``ValueError`` for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    return parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80)


async def check_url(url: str, *, policy: EndpointPolicy | None = None) -> None:
    """Raise :class:`EndpointRefused` (or ``OSError``, ``ValueError``) unless ``url``'s host may be reached."""
    host, port = url_endpoint(url)
    await resolve_endpoint(host, port, policy=policy)


async def open_socket(
    host: str, port: int, *, connect_timeout: float, policy: EndpointPolicy | None = None
) -> socket.socket:
    """A non-blocking socket connected to a checked address of ``host:port``.

    Hand it to a client library together with ``host`` as the TLS server name
    (aiosmtplib's ``sock=`` and ``hostname=``; asyncio's ``create_connection(sock=...,
    server_hostname=...)``). Raises :class:`EndpointRefused`, ``OSError`` or
    ``TimeoutError``; ``connect_timeout`` bounds the lookup and each connection attempt.
    """
    addresses = await asyncio.wait_for(resolve_endpoint(host, port, policy=policy), connect_timeout)
    loop = asyncio.get_running_loop()
    failure: Exception = OSError(f"could not connect to {host}:{port}")
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), connect_timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            failure = exc
            continue
        return sock
    raise failure


def server_name(host: str) -> str:
    """``host`` as a TLS server name: no brackets, no trailing dot."""
    return host.strip().strip("[]").rstrip(".")


def aiohttp_session(**kwargs: Any) -> Any:
    """An ``aiohttp.ClientSession`` that connects only where the guard allows.

    Names are resolved through the guard and the connection goes to the checked
    answer (the TLS server name stays the URL's host); a literal address in a URL,
    a redirect's included, is checked before connecting.
    """
    import aiohttp

    connector_class, resolver_class = _aiohttp_classes()
    return aiohttp.ClientSession(connector=connector_class(resolver=resolver_class()), **kwargs)


@functools.cache
def _aiohttp_classes() -> tuple[type, type]:
    import aiohttp
    from aiohttp.abc import AbstractResolver

    class GuardedResolver(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
            return [
                {"hostname": host, "host": address, "port": port, "family": found, "proto": 0, "flags": 0}
                for found, address in await resolve_endpoint(host, port)
            ]

        async def close(self) -> None:
            return None

    class GuardedConnector(aiohttp.TCPConnector):
        async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 - aiohttp's signature
            literal = host_literal(req.host or "")
            if literal is not None:
                check_address(literal, int(req.port or 0), shown=shown_endpoint(req.host, int(req.port or 0)))
            return await super().connect(req, traces, timeout)

    return GuardedConnector, GuardedResolver


EndpointKind = Literal["url", "host"]


def endpoint(kind: EndpointKind = "url", *, port_field: str | None = None, default_port: int | None = None) -> Any:
    """Mark a config field as an endpoint a tenant chooses, so saving the config checks it.

    ``Annotated[str, endpoint()]`` for an ``http(s)://`` URL;
    ``Annotated[str, endpoint("host", port_field="smtp_port")]`` for a host whose
    port is another field of the config. The channel must still connect through
    the guard (:func:`resolve_endpoint`, :func:`open_socket`, :func:`aiohttp_session`):
    a name may resolve elsewhere later.
    """
    return msgspec.Meta(extra={ENDPOINT_MARK: {"kind": kind, "port_field": port_field, "default_port": default_port}})


EndpointUrl = Annotated[str, endpoint()]
"""A config field holding an ``http(s)://`` URL a tenant chooses (checked when saved)."""


def endpoint_fields(schema: type[msgspec.Struct] | None) -> dict[str, dict[str, Any]]:
    """The endpoint fields of a config Struct (marked with :func:`endpoint`) and their marks."""
    if schema is None:
        return {}
    hints = typing.get_type_hints(schema, include_extras=True)
    found: dict[str, dict[str, Any]] = {}
    for field in msgspec.structs.fields(schema):
        mark = _mark(hints.get(field.name))
        if mark is not None:
            found[field.name] = mark
    return found


def _mark(annotation: Any) -> dict[str, Any] | None:
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, msgspec.Meta) and ENDPOINT_MARK in (meta.extra or {}):
                return dict((meta.extra or {})[ENDPOINT_MARK])
    for argument in typing.get_args(annotation):
        mark = _mark(argument)
        if mark is not None:
            return mark
    return None


async def endpoint_errors(
    schema: type[msgspec.Struct] | None, config: dict[str, Any], *, policy: EndpointPolicy | None = None
) -> list[dict[str, str]]:
    """A ``{"field", "message"}`` for each endpoint of a validated config that may not be reached.

    An endpoint is refused when it is, or its name resolves to, an address the policy
    refuses; a name that does not resolve (yet) passes, since every connection is
    checked again.
    """
    errors = []
    for name, mark in endpoint_fields(schema).items():
        value = config.get(name)
        if not value:
            continue
        try:
            if mark["kind"] == "url":
                host, port = url_endpoint(str(value))
            else:
                host, port = str(value), int(config.get(mark["port_field"] or "") or mark["default_port"] or 0)
            await asyncio.wait_for(resolve_endpoint(host, port, policy=policy), 10)
        except EndpointRefused as exc:
            errors.append({"field": name, "message": str(exc)})
        except ValueError as exc:
            errors.append({"field": name, "message": str(exc)})
        except (OSError, TimeoutError):
            continue  # not resolvable yet: nothing to judge now, and connecting checks it again
    return errors
