"""Signatures of botloom's outbound requests on a tenant's behalf (webhooks, tool calls): HMAC-SHA256.

Every request botloom makes for a tenant carries::

    Botloom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC's key is the secret the tenant was shown (its UTF-8 bytes) and its
message is ``<unix seconds>`` + ``.`` + the raw request body, byte for byte. A
receiver recomputes it, compares in constant time, and refuses a timestamp more
than five minutes away from its clock (a replay). docs/webhooks.md is the
receiver's reference.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Botloom-Signature"
EVENT_ID_HEADER = "Botloom-Event-Id"
TIMESTAMP_TOLERANCE = 300
"""Seconds a receiver accepts between the signature's timestamp and its own clock."""
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def new_secret() -> str:
    """A new signing secret (``whsec_`` and 43 URL-safe characters: 256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_request(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign an outbound request's ``body`` with the tenant's ``secret``."""
    moment = int(time.time()) if timestamp is None else int(timestamp)
    return {SIGNATURE_HEADER: f"t={moment},v1={signature(secret, moment, body)}"}


def verify_signature(
    secret: str, body: bytes, header: str | None, *, tolerance: int = TIMESTAMP_TOLERANCE, now: float | None = None
) -> bool:
    """Whether ``header`` (a ``Botloom-Signature`` value) signs ``body`` with ``secret``, recently enough."""
    if not header or len(header) > 1000:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    moment = time.time() if now is None else now
    if abs(moment - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
