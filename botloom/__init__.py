"""botloom: a framework and server for plugin-based chatbots.

The public API a plugin author needs is importable from here::

    from botloom import hookimpl, Tool, Intent, Slot
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botloom.core.config import Secret
from botloom.core.definitions import (
    AcceptMessage,
    Capabilities,
    ChannelAdapter,
    ChannelConversation,
    ChannelHost,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    ChannelRoute,
    ChannelSocket,
    ConversationUpdate,
    DefinitionError,
    DeliveryReport,
    DeliveryStatus,
    GraphDefinition,
    HistoryMessage,
    Intent,
    ReportDelivery,
    SendError,
    Slot,
    SocketClosed,
    StateMigration,
    Tool,
    ToolContext,
    TurnAnswer,
    TurnReply,
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
from botloom.core.signing import sign_request, verify_signature

__version__ = "0.1.0"


if TYPE_CHECKING:
    from botloom.core.knowledge.parsing import html_to_text
    from botloom.core.knowledge.types import Passage
    from botloom.graphs.context import TurnContext
    from botloom.graphs.state import TurnInput, TurnState


def __getattr__(name: str) -> object:
    """Names imported on first use, so ``import botloom`` stays light.

    ``html_to_text`` and ``Passage`` live beside the knowledge base; ``TurnState``,
    ``TurnInput`` and ``TurnContext`` are the ``turn`` graph's state and context,
    for a plugin that registers a graph of its own.
    """
    if name == "html_to_text":
        from botloom.core.knowledge.parsing import html_to_text

        return html_to_text
    if name == "Passage":
        from botloom.core.knowledge.types import Passage

        return Passage
    if name == "TurnContext":
        from botloom.graphs.context import TurnContext

        return TurnContext
    if name in {"TurnInput", "TurnState"}:
        from botloom.graphs.state import TurnInput, TurnState

        return TurnInput if name == "TurnInput" else TurnState
    raise AttributeError(f"module 'botloom' has no attribute {name!r}")


__all__ = [
    "AcceptMessage",
    "Attachment",
    "Bot",
    "BotSettings",
    "Capabilities",
    "ChannelAdapter",
    "ChannelConversation",
    "ChannelHost",
    "ChannelKind",
    "ChannelRejected",
    "ChannelRequest",
    "ChannelResponse",
    "ChannelRoute",
    "ChannelSocket",
    "ConversationUpdate",
    "DefinitionError",
    "DeliveryReport",
    "DeliveryStatus",
    "EndpointRefused",
    "EndpointUrl",
    "GraphDefinition",
    "HistoryMessage",
    "InboundMessage",
    "Intent",
    "OutboundMessage",
    "Passage",
    "Refusal",
    "ReportDelivery",
    "Secret",
    "SendError",
    "Slot",
    "SocketClosed",
    "StateMigration",
    "Tool",
    "ToolContext",
    "TurnAnswer",
    "TurnContext",
    "TurnInput",
    "TurnReply",
    "TurnState",
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
    "sign_request",
    "verify_signature",
]
