"""Web chat follows its conversation's live updates again when the subscription fails (a lost listener)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from botloom import ConversationUpdate
from botloom.channels.webchat import WebChatChannel, _Session


class RecordingSocket:
    """The frames the session sends to its user."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def send(self, text: str) -> None:
        self.frames.append(json.loads(text))
        self.arrived.set()


class FlakyHost:
    """A host whose first subscriptions fail (as a listener connection dying does), then delivers an update."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def follow(self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the listener's connection was lost")
        await deliver(ConversationUpdate(kind="agent_joined", name="Sam"))
        await asyncio.Event().wait()  # subscribed until cancelled


class QuietHost:
    """A host without live updates: its follow returns at once."""

    def __init__(self) -> None:
        self.calls = 0

    async def follow(self, conversation_id: str, deliver: Callable[[ConversationUpdate], Awaitable[object]]) -> None:
        self.calls += 1


async def test_a_failed_subscription_is_followed_again_and_the_update_shown() -> None:
    socket, host = RecordingSocket(), FlakyHost(failures=2)
    session = _Session(WebChatChannel(), socket, host, per_minute=60)  # type: ignore[arg-type]
    session.follow("conversation-1")
    try:
        await asyncio.wait_for(socket.arrived.wait(), timeout=10)
    finally:
        session.stop_following()
    assert socket.frames == [{"type": "agent_joined", "name": "Sam"}]
    assert host.calls == 3, "followed again after each failure"


async def test_a_host_without_live_updates_is_not_followed_again() -> None:
    host = QuietHost()
    session = _Session(WebChatChannel(), RecordingSocket(), host, per_minute=60)  # type: ignore[arg-type]
    session.follow("conversation-1")
    assert session.following is not None
    await asyncio.wait_for(session.following, timeout=10)
    assert host.calls == 1
