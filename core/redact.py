"""Masking personal data and secrets in text that goes to logs (and, later, checkpoints)."""

from __future__ import annotations

import re

PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bblk_[A-Za-z0-9_-]{8,}"), "blk_***"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (re.compile(r"(?i)\b(auth_token|password|secret|api_key|token)(\W{1,3})[^\s,;&\"']{4,}"), r"\1\2***"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "<email>"),
    (re.compile(r"(?<![\w])(?!\d{4}-\d{2}-\d{2}\b)(?:\+|00)?\d[\d ()./-]{7,}\d(?![\w])"), "<phone>"),
)


def redact(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers, API keys and secrets masked."""
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text
