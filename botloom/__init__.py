"""botloom: a framework and server for plugin-based chatbots.

The public API a plugin author needs is importable from here::

    from botloom import hookimpl, Tool, Intent, Slot
"""

from __future__ import annotations

from pathlib import Path as _Path

# In a source checkout, ``botloom`` is this folder and its subpackages are the
# folders beside it (core/, graphs/, ...). Installed, setuptools' package-dir
# mapping puts them inside the package; here, when Python imports the checkout's
# folder directly (``python -m botloom`` run from the repository), point the
# package's search path at the repository so ``botloom.core`` still resolves.
_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "core" / "hookspecs.py").is_file():
    __path__.append(str(_ROOT))

from botloom.core.config import Secret  # noqa: E402
from botloom.core.definitions import (  # noqa: E402
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
from botloom.core.domain import Bot, BotSettings  # noqa: E402
from botloom.core.markers import hookimpl, hookspec  # noqa: E402
from botloom.core.messages import Attachment, InboundMessage, OutboundMessage, Refusal  # noqa: E402

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
    "hookimpl",
    "hookspec",
    "html_to_text",
]
