"""botloom: a framework and server for plugin-based chatbots.

The public API a plugin author needs is importable from here::

    from botloom import hookimpl, Tool, Intent, Slot
"""

from __future__ import annotations

from botloom.core.config import Secret
from botloom.core.definitions import (
    ChannelAdapter,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    GraphDefinition,
    Intent,
    Slot,
    Tool,
    ToolContext,
    TurnSummary,
)
from botloom.core.domain import Bot, BotSettings
from botloom.core.markers import hookimpl, hookspec
from botloom.core.messages import Attachment, InboundMessage, OutboundMessage, Refusal

__version__ = "0.1.0"

__all__ = [
    "Attachment",
    "Bot",
    "BotSettings",
    "ChannelAdapter",
    "ChannelRejected",
    "ChannelRequest",
    "ChannelResponse",
    "GraphDefinition",
    "InboundMessage",
    "Intent",
    "OutboundMessage",
    "Refusal",
    "Secret",
    "Slot",
    "Tool",
    "ToolContext",
    "TurnSummary",
    "__version__",
    "hookimpl",
    "hookspec",
]
