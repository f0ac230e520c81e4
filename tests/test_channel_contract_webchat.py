"""The channel contract, run against the web chat channel (the WebSocket ``/api/v1/bots/{bot}/ws``).

The socket is driven through the app's ASGI interface in the test's own event
loop, like ``tests.helpers.api_client`` does for HTTP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import pytest

from botloom.testing.channel_contract import ChannelContract, ChannelDriver, ContractContext, Outcome

CLOSE_TO_STATUS = {4403: 403, 4404: 404}


class AsgiSocket:
    """One WebSocket connection to an ASGI app, in the caller's event loop."""

    def __init__(self, app: Any, path: str, headers: dict[str, str]) -> None:
        self.app = app
        self.path = path
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.close_code: int | None = None

    async def __aenter__(self) -> AsgiSocket:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "http_version": "1.1",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), *self.headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
        }
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "websocket.connect"})
        first = await asyncio.wait_for(self.from_app.get(), 30)
        if first["type"] == "websocket.close":
            self.close_code = int(first.get("code", 1000))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 30)

    async def send(self, **frame: Any) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": json.dumps(frame)})

    async def send_text(self, text: str) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": text})

    async def frame(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.from_app.get(), 60)
        assert message["type"] == "websocket.send", message
        return dict(json.loads(message["text"]))

    async def frames_until(self, *kinds: str) -> list[dict[str, Any]]:
        frames = [await self.frame()]
        while frames[-1]["type"] not in kinds:
            frames.append(await self.frame())
        return frames


class WebChatDriver(ChannelDriver):
    """Talks over the socket; replies come back as ``reply`` frames. Forged: a foreign page's origin."""

    channel: ClassVar[str] = "webchat"

    async def enable(self, ctx: ContractContext) -> None:
        """The demo bot has web chat enabled already."""

    async def session(self, ctx: ContractContext, bot: str, origin: str | None) -> AsgiSocket:
        return AsgiSocket(ctx.app, f"/api/v1/bots/{bot}/ws", {"origin": origin} if origin else {})

    async def send(
        self, ctx: ContractContext, text: str, *, message_id: str, forged: bool = False, bot: str = "acme/support"
    ) -> Outcome:
        origin = "https://evil.example" if forged else "http://testserver"
        async with await self.session(ctx, bot, origin) as socket:
            if socket.close_code is not None:
                return Outcome(status=CLOSE_TO_STATUS.get(socket.close_code, 400))
            await socket.send(type="hello", conversation_id=ctx.extra.get("conversation"))
            ready = await socket.frame()
            ctx.extra["conversation"] = ready["conversation_id"]
            await socket.send(type="message", id=message_id, text=text)
            frames = await socket.frames_until("done", "error")
        if frames[-1]["type"] == "error":
            return Outcome(status=400)
        return Outcome(status=200, replies=[f["text"] for f in frames if f["type"] == "reply"])

    async def send_malformed(self, ctx: ContractContext) -> Outcome:
        async with await self.session(ctx, "acme/support", None) as socket:
            await socket.send_text('{"type": "message", "id": "m-1", "text": ')
            error = await socket.frame()
        return Outcome(status=400 if error["type"] == "error" else 200)


class TestWebChatChannelContract(ChannelContract):
    @pytest.fixture
    def driver(self) -> ChannelDriver:
        return WebChatDriver()
