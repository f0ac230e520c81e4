"""Structured logs with a request id, and with personal data and secrets masked."""

from __future__ import annotations

import contextvars
import json
import logging
import time

from botloom.core.redact import redact
from botloom.core.settings import Settings

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("botloom_request_id", default="-")
"""The id of the request being handled (``X-Request-ID``), on every log line."""


class RedactingFilter(logging.Filter):
    """Adds the request id to each record and masks personal data in its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets and personal data masked."""
        record.request_id = request_id.get()
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message; the route and traceback of errors."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        route = getattr(record, "route", None)
        if route:
            payload["route"] = route
        if record.exc_info and not record.exc_text:  # a record no RedactingFilter saw
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Send botloom's logs to standard error in the configured format, masked."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in ("pgserver", "httpx", "yoyo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
