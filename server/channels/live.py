"""Response and socket channels' routes, and channels' pages (REST chat, web chat, a third party's).

The server knows no channel by name: each route a channel declares
(:class:`~botloom.core.channels.ChannelRoute`) is mounted by
:mod:`botloom.server.channels.routes` and served here through the one inbound
path (:mod:`botloom.runtime.inbound`):

* ``POST`` on a response channel: the bot and its enabled channel are looked up
  (404, 403; with ``auth="api_key"`` the caller must see the bot), the channel
  verifies and parses the request (4xx, nothing stored), each message is stored
  and its turn run now, and the channel renders the answers;
* ``WEBSOCKET`` on a socket channel: the same lookup (a failure closes the socket
  with 4404) and ``verify`` on the opening request (a refusal closes it with
  4000 + the status, 4403 for a foreign origin); then the channel converses on
  the accepted socket;
* ``GET``: the channel's page.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.connection import WebSocket
from litestar.exceptions import WebSocketDisconnect

from botloom.core.channels import ChannelRejected, ChannelRequest, ChannelRoute, ChannelSocket, SocketClosed
from botloom.runtime.inbound import ChannelBinding, channel_call
from botloom.runtime.services import Services
from botloom.server.auth import Principal
from botloom.server.channels.push import channel_request, public_url, rejected
from botloom.server.desk.live import live_host
from botloom.server.paths import bot_ref

logger = logging.getLogger(__name__)


async def binding_for(services: Services, channel: str, bot: str, principal: Principal | None) -> ChannelBinding:
    """The bot's enabled ``channel``; 404 or 403 as an HTTP error (with a principal: only a bot it sees)."""
    try:
        return await services.inbound.bindings.find(
            bot_ref(bot), channel, visible=principal.sees if principal is not None else None
        )
    except ChannelRejected as exc:
        raise rejected(exc) from None


def http_answer(answer: Any) -> Response[bytes]:
    """A channel's :class:`~botloom.core.channels.ChannelResponse` as Litestar's response."""
    return Response(
        content=answer.body, status_code=answer.status, media_type=answer.media_type, headers=dict(answer.headers)
    )


async def handle_response(
    request: Request[Any, Any, Any],
    services: Services,
    *,
    channel: str,
    route: ChannelRoute,
    bot: str,
    subpath: str,
    principal: Principal | None,
) -> Response[bytes]:
    """A response channel's request: the one inbound path runs the turns; the channel renders the answer."""
    binding = await binding_for(services, channel, bot, principal)
    incoming = await channel_request(request, request.app.state.settings, route, bot_ref(bot), subpath, bot=binding.bot)
    try:
        return http_answer(await services.inbound.respond(binding, incoming))
    except ChannelRejected as exc:
        raise rejected(exc) from None


async def handle_page(
    request: Request[Any, Any, Any],
    services: Services,
    *,
    channel: str,
    route: ChannelRoute,
    bot: str,
    subpath: str,
    principal: Principal | None = None,
) -> Response[bytes]:
    """A channel's page (``GET``); with a ``principal`` (an ``api_key`` route), only of a bot it sees."""
    binding = await binding_for(services, channel, bot, principal)
    incoming = await channel_request(request, request.app.state.settings, route, bot_ref(bot), subpath, bot=binding.bot)
    try:
        return http_answer(channel_call(binding.adapter, binding.adapter.page, incoming, binding.config))
    except ChannelRejected as exc:
        raise rejected(exc) from None


class _Socket(ChannelSocket):
    """Litestar's WebSocket as a channel sees it."""

    def __init__(self, socket: WebSocket[Any, Any, Any], request: ChannelRequest) -> None:
        self.socket = socket
        self.request = request

    async def receive(self) -> str:
        try:
            return await self.socket.receive_text()
        except WebSocketDisconnect:
            raise SocketClosed from None

    async def send(self, text: str) -> None:
        try:
            await self.socket.send_text(text)
        except WebSocketDisconnect:
            raise SocketClosed from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.socket.close(code=code, reason=reason)


async def handle_socket(
    socket: WebSocket[Any, Any, Any],
    services: Services,
    *,
    channel: str,
    route: ChannelRoute,
    bot: str,
    subpath: str,
    principal: Principal | None = None,
) -> None:
    """A socket channel's WebSocket: look up, verify the opening request, accept, converse.

    With a ``principal`` (an ``api_key`` route) only a bot the caller sees is found.
    """
    ref = bot_ref(bot)
    try:
        visible = principal.sees if principal is not None else None
        binding = await services.inbound.bindings.find(ref, channel, visible=visible)
    except ChannelRejected as exc:
        await socket.close(code=4404, reason=exc.detail[:120])
        return
    settings = socket.app.state.settings
    incoming = ChannelRequest(
        method="WEBSOCKET",
        url=public_url(socket, settings, route, ref, subpath),
        headers={name.lower(): value for name, value in socket.headers.items()},
        body=b"",
        subpath=subpath,
        bot=binding.bot,
        bot_ref=ref,
    )
    adapter = binding.adapter
    try:
        channel_call(adapter, adapter.verify, incoming, binding.config)
    except ChannelRejected as exc:
        await socket.close(code=4000 + exc.status, reason=exc.detail[:120])
        return
    await socket.accept()
    try:
        host = live_host(socket, services.inbound.channel_host(binding))  # with live updates (server/desk/live.py)
        await adapter.converse(_Socket(socket, incoming), host, binding.config)
    except (SocketClosed, WebSocketDisconnect):
        return
