"""botloom: a framework and server for plugin-based chatbots.

The public API a plugin author needs is importable from here::

    from botloom import hookimpl, Tool, Intent, Slot
"""

from __future__ import annotations

from botloom.core.config import Secret
from botloom.core.definitions import (
    AcceptMessage,
    ChannelAdapter,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    GraphDefinition,
    Intent,
    ReportDelivery,
    Slot,
    Tool,
    ToolContext,
    TurnSummary,
)
from botloom.core.domain import Bot, BotSettings
from botloom.core.markers import hookimpl, hookspec
from botloom.core.messages import Attachment, InboundMessage, OutboundMessage, Refusal
from botloom.core.netguard import (
    EndpointRefused,
    EndpointUrl,
    aiohttp_session,
    check_url,
    endpoint,
    open_socket,
    resolve_endpoint,
    server_name,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Helpers imported on first use, so ``import botloom`` stays light."""
    if name == "html_to_text":
        from botloom.core.knowledge.parsing import html_to_text

        return html_to_text
    raise AttributeError(f"module 'botloom' has no attribute {name!r}")


__all__ = [
    "AcceptMessage",
    "Attachment",
    "Bot",
    "BotSettings",
    "ChannelAdapter",
    "ChannelRejected",
    "ChannelRequest",
    "ChannelResponse",
    "EndpointRefused",
    "EndpointUrl",
    "GraphDefinition",
    "InboundMessage",
    "Intent",
    "OutboundMessage",
    "Refusal",
    "ReportDelivery",
    "Secret",
    "Slot",
    "Tool",
    "ToolContext",
    "TurnSummary",
    "__version__",
    "aiohttp_session",
    "check_url",
    "endpoint",
    "hookimpl",
    "hookspec",
    "html_to_text",
    "open_socket",
    "resolve_endpoint",
    "server_name",
]
