"""Fixtures: the local stand-in of Telegram's Bot API, and botloom.testing's fixtures pointed at it.

botloom.testing (botloom's pytest plugin, active wherever botloom is installed) gives
``botloom_harness``, ``botloom_channel``, ``botloom_demo`` and the channel contract;
this file adds only what is Telegram's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from telegram_standin import SECRET, TOKEN, TelegramStandIn, handler, sign

from botloom_telegram import API_BASE_VARIABLE


@pytest.fixture(scope="session")
def telegram_server() -> Iterator[TelegramStandIn]:
    """The session's stand-in of Telegram's Bot API."""
    standin = TelegramStandIn()
    standin.server = ThreadingHTTPServer(("127.0.0.1", 0), handler(standin))
    thread = threading.Thread(target=standin.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        standin.server.shutdown()
        standin.server.server_close()


@pytest.fixture(autouse=True)
def telegram(telegram_server: TelegramStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[TelegramStandIn]:
    """The stand-in, emptied, and the channel pointed at it (as an operator would, by the environment)."""
    telegram_server.reset()
    monkeypatch.setenv(API_BASE_VARIABLE, telegram_server.url)
    yield telegram_server
    telegram_server.reset()


@pytest.fixture
def botloom_plugins() -> Mapping[str, Mapping[str, Any] | None]:
    """The test bot enables the Telegram channel with the stand-in's token and a webhook secret."""
    return {"telegram": {"bot_token": TOKEN, "webhook_secret": SECRET}}


@pytest.fixture
def botloom_signer() -> Any:
    """botloom_channel's requests carry the secret token, as Telegram's do."""
    return sign
