"""The ``/api/v1`` JSON API: tenants, keys, bots, plugins, knowledge and conversations.

``create_app`` mounts :data:`API_HANDLERS` on a router that provides the
authenticated ``principal`` to every handler; each handler asks for it, so no
route answers without a valid ``Authorization: Bearer`` token.
"""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from botloom.server.api.agents import AGENT_HANDLERS
from botloom.server.api.audit import AUDIT_HANDLERS
from botloom.server.api.bots import BotController, TenantBotController
from botloom.server.api.contacts import CONTACT_HANDLERS
from botloom.server.api.conversations import BotConversationController, ConversationController
from botloom.server.api.debug import DEBUG_HANDLERS
from botloom.server.api.debug_actions import DEBUG_ACTION_HANDLERS
from botloom.server.api.desk import DESK_HANDLERS
from botloom.server.api.keys import KeyController
from botloom.server.api.knowledge import KnowledgeController
from botloom.server.api.plugins import PluginController
from botloom.server.api.teaching import TEACHING_HANDLERS
from botloom.server.api.tenants import TenantController
from botloom.server.api.webhooks import WEBHOOK_HANDLERS

API_HANDLERS: list[ControllerRouterHandler] = [
    TenantController,
    KeyController,
    TenantBotController,
    BotController,
    PluginController,
    KnowledgeController,
    BotConversationController,
    ConversationController,
    *WEBHOOK_HANDLERS,
    *AGENT_HANDLERS,
    *DESK_HANDLERS,
    *DEBUG_HANDLERS,
    *TEACHING_HANDLERS,
    *DEBUG_ACTION_HANDLERS,
    *CONTACT_HANDLERS,
    *AUDIT_HANDLERS,
]

__all__ = ["API_HANDLERS"]
