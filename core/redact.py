"""Masking personal data and secrets in text that goes to logs and (for bots that ask) checkpoints.

Phone numbers and e-mail addresses are masked; identifiers are not. A log line is
full of numbers that are not phone numbers (UUIDs, ISO timestamps, IPv4 and IPv6
addresses, ports, durations, request ids, Twilio SIDs), and a checkpoint holds turn
and message ids the runner compares; masking those loses the very thing a reader
(or the runner) needs. So a phone number is recognised positively:

* with an international prefix, ``+`` (or ``%2B`` in a form body) followed by 7 to
  15 digits in groups (``+15550001111``, ``+49 170 1234567``, ``+1 (555) 000-1111``,
  ``whatsapp:+15550001111``);
* without one, 9 to 15 digits in at least two groups separated by spaces, dashes,
  dots or parentheses (``0170 1234567``, ``(555) 123-4567``, ``555.123.4567``), or
  one run of digits in national or international form, starting with ``0``
  (``01701234567``, ``0049 170 1234567``).

A number that is part of a larger token is not a phone number: one that touches a
letter, ``_``, ``:``, ``/``, or continues with ``-``/``.`` and a digit (a UUID's
groups, a time, a port, a path, an address, a decimal), one that is only dotted
groups of one to three digits (an IPv4 address), or only two dotted groups (a
decimal). Sequences of plain numbers separated by single spaces (``1024 2048 4096``)
can still look like a phone number; that is the price of masking ``06 12 34 56 78``.
"""

from __future__ import annotations

import re

_GROUP = r"(?:\(\d{1,5}\)|\d{1,15})"
_SEPARATOR = r"(?:[ .-]|(?<=\))|(?=\())"  # one space, dot or dash; none needed next to a parenthesis
_NUMBER = rf"{_GROUP}(?:{_SEPARATOR}{_GROUP}){{0,7}}"
_PREFIXED = re.compile(rf"(?:(?<![\w+])\+|(?<![\w%])%2[Bb]){_NUMBER}")
_PLAIN = re.compile(rf"(?<![\w.:/+%#(-]){_NUMBER}")
_GROUPS = re.compile(_GROUP)
_DIGITS = re.compile(r"\d")
_CONTINUES = re.compile(r"[\w:/@]|[.,-]\d")
"""What, right after a number, makes it part of a larger token (not a phone number)."""

PHONE = "<phone>"
EMAIL = "<email>"

PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bblk_[A-Za-z0-9_-]{8,}"), "blk_***"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (re.compile(r"(?i)\b(auth_token|password|secret|api_key|token)(\W{1,3})[^\s,;&\"']{4,}"), r"\1\2***"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), EMAIL),
)
"""Secrets and e-mail addresses; phone numbers are found by :func:`mask_phone_numbers`."""


def _is_phone(number: str, *, prefixed: bool) -> bool:
    """Whether ``number`` (a match of groups, without its ``+``) has the shape of a phone number."""
    digits = len(_DIGITS.findall(number))
    if prefixed:
        return 7 <= digits <= 15
    if not 9 <= digits <= 15 or number.count("(") != number.count(")"):
        return False
    groups = re.findall(r"\d+", number)
    if len(groups) == 1:
        return number.startswith("0") and not number.startswith("000")  # 0170..., 0049...
    separators = set(re.sub(r"\d", "", number))
    if separators == {"."}:
        ipv4 = len(groups) == 4 and all(len(g) <= 3 for g in groups)
        return len(groups) >= 3 and not ipv4
    return True


def _mask(match: re.Match[str], *, prefixed: bool) -> str:
    """The match with its longest leading phone number masked, or unchanged when it holds none."""
    text, start, candidate = match.string, match.start(), match.group(0)
    lead = (1 if candidate.startswith("+") else 3) if prefixed else 0  # "+" or "%2B"
    ends = [g.end() for g in _GROUPS.finditer(candidate, lead)]
    for end in reversed(ends):
        if _CONTINUES.match(text, start + end):
            continue
        if _is_phone(candidate[lead:end], prefixed=prefixed):
            return PHONE + candidate[end:]
    return candidate


def mask_phone_numbers(text: str) -> str:
    """``text`` with phone numbers masked as ``<phone>`` (see the module's docs for what counts)."""
    text = _PREFIXED.sub(lambda m: _mask(m, prefixed=True), text)
    return _PLAIN.sub(lambda m: _mask(m, prefixed=False), text)


def redact(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers, API keys and secrets masked; identifiers kept."""
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return mask_phone_numbers(text)
