"""A local stand-in of Telegram's Bot API (``sendMessage``), and Telegram's side of a webhook: updates, the secret."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botloom.testing import SigningRequest

TOKEN = "123456789:AAHtestTOKENtestTOKENtestTOKEN_-12345"
SECRET = "webhook-secret-of-the-test-bot"


@dataclass(frozen=True)
class Sent:
    """One ``sendMessage`` call the stand-in answered ``ok``."""

    chat_id: int | str
    text: str
    reply_to_message_id: int | None


@dataclass
class TelegramStandIn:
    """Telegram's Bot API on 127.0.0.1: ``sendMessage`` for one bot token, with failures on demand."""

    token: str = TOKEN
    sent: list[Sent] = field(default_factory=list)
    calls: int = 0
    failures: list[tuple[int, int]] = field(default_factory=list)
    """``(status, error_code)`` answers to give the next calls, in order."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, times: int, status: int = 502, error_code: int = 502) -> None:
        """Answer the next ``times`` calls with ``status``, as Telegram does when it is down or refuses."""
        with self.lock:
            self.failures.extend([(status, error_code)] * times)

    def reset(self) -> None:
        with self.lock:
            self.sent.clear()
            self.failures.clear()
            self.calls = 0

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Sent]:
        """Every message sent, once there are at least ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.sent) >= count:
                    return list(self.sent)
            if time.monotonic() > deadline:
                raise AssertionError(f"Telegram got {len(self.sent)} message(s), not {count}")
            time.sleep(0.02)

    def answer(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """What the Bot API answers a ``POST`` to ``path``."""
        with self.lock:
            self.calls += 1
            if path != f"/bot{self.token}/sendMessage":
                return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
            try:
                request = json.loads(body)
            except ValueError:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: can't parse JSON"}
            if self.failures:
                status, code = self.failures.pop(0)
                return status, {"ok": False, "error_code": code, "description": "secret detail of the provider"}
            chat_id, text = request.get("chat_id"), request.get("text")
            if chat_id in (None, "") or not isinstance(text, str) or not text:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
            if len(text) > 4096:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
            self.sent.append(Sent(chat_id, text, request.get("reply_to_message_id")))
            message_id = 1000 + len(self.sent)
            return 200, {"ok": True, "result": {"message_id": message_id, "chat": {"id": chat_id}, "text": text}}


def handler(standin: TelegramStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            status, answer = standin.answer(self.path, self.rfile.read(length))
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def sign(request: SigningRequest) -> dict[str, str]:
    """What Telegram adds to every update: the webhook's secret token."""
    return {"X-Telegram-Bot-Api-Secret-Token": str(request.config["webhook_secret"])}


def update(text: str | None, *, update_id: int = 1, chat_id: int = 4242, message_id: int = 7) -> dict[str, Any]:
    """An Update as Telegram sends it for a private chat's message (``text=None``: a photo)."""
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ada", "language_code": "en"},
        "chat": {"id": chat_id, "first_name": "Ada", "type": "private"},
        "date": 1_764_590_000,
    }
    if text is None:
        message["photo"] = [{"file_id": "AgAD", "file_unique_id": "AQAD", "width": 90, "height": 90}]
    else:
        message["text"] = text
    return {"update_id": update_id, "message": message}
