"""The agent desk's live side: the page ``/desk``, its WebSocket and the channels plugin that feeds it.

``create_app`` mounts :func:`desk_handlers` and :class:`~botloom.server.desk.live.DeskChannels`.
The desk's JSON API (handovers, agents, sign-in) lives in :mod:`botloom.server.api.desk`
and :mod:`botloom.server.api.agents`; the page only calls it.
"""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from botloom.core.settings import Settings
from botloom.server.desk.live import DeskChannels, desk_socket
from botloom.server.desk.page import PAGE_HANDLERS


def desk_handlers() -> list[ControllerRouterHandler]:
    """The page, its assets and the desk's WebSocket (outside ``/api/v1``'s router: it authenticates itself)."""
    return [*PAGE_HANDLERS, desk_socket]


def desk_channels(settings: Settings) -> DeskChannels:
    """The channels plugin carrying each tenant's live events (Redis when configured, else PostgreSQL)."""
    return DeskChannels(settings)


__all__ = ["desk_channels", "desk_handlers"]
