"""Repositories: every read and write of botloom's own tables, one module per aggregate.

Each method that touches a tenant's data takes ``tenant_id`` and puts it in the
query, so a caller holding tenant A's id can never read or change tenant B's
rows, whatever other ids it passes. Ids are UUID strings; a malformed id simply
finds nothing.

=====================  ==========================================================
module                 repositories
=====================  ==========================================================
``base``               :class:`Repository`, :class:`Conflict`, ``as_uuid``, ``to_struct``
``tenants``            :class:`TenantRepository`, :class:`ApiKeyRepository`
``bots``               :class:`BotRepository`, :class:`PluginSettingRepository`,
                       :class:`ChannelRouteRepository`
``conversations``      :class:`ConversationRepository`
``messages``           :class:`MessageRepository`
``deliveries``         :class:`DeliveryRepository`, :class:`OutboundState`
``polls``              :class:`ChannelPollRepository`
``usage``              :class:`UsageRepository`
``budgets``            :class:`BudgetRepository` (tenants' monthly budgets, spend, alerts)
``events``             :class:`EventRepository` (the events outbox)
``webhooks``           :class:`WebhookRepository`
``agents``             :class:`AgentRepository`, :class:`TeamRepository`, :class:`CannedResponseRepository`
``handovers``          :class:`HandoverRepository`
``inspection``         :class:`InspectionRepository` (the debugger's reads)
``forks``              :class:`ForkRepository` (the debugger's forks)
``teaching``           :class:`TeachingRepository` (synonyms, taught examples, fallbacks)
``contacts``           :class:`ContactRepository` (one end user's rows: export, erasure),
                       :class:`CheckpointErasureRepository` (checkpoint threads still to erase)
``audit``              :class:`AuditRepository` (the audit log, append-only)
=====================  ==========================================================

:class:`Store` holds one of each over one database. Every name is importable from
``botloom.core.storage.repositories`` itself.
"""

from __future__ import annotations

from botloom.core.crypto import Cipher
from botloom.core.storage.database import Database
from botloom.core.storage.repositories.agents import AgentRepository, CannedResponseRepository, TeamRepository
from botloom.core.storage.repositories.audit import AuditEntry, AuditRepository
from botloom.core.storage.repositories.base import (
    API_KEY_PREFIX,
    COLUMN_FIELDS,
    Conflict,
    Repository,
    as_uuid,
    hash_api_key,
    to_struct,
)
from botloom.core.storage.repositories.bots import BotRepository, ChannelRouteRepository, PluginSettingRepository
from botloom.core.storage.repositories.budgets import BudgetRepository
from botloom.core.storage.repositories.contacts import CheckpointErasureRepository, ContactRepository
from botloom.core.storage.repositories.conversations import ConversationRepository
from botloom.core.storage.repositories.deliveries import DeliveryRepository, OutboundState
from botloom.core.storage.repositories.events import EventRepository
from botloom.core.storage.repositories.forks import ForkRepository
from botloom.core.storage.repositories.handovers import HandoverRepository
from botloom.core.storage.repositories.inbound import InboundRepository
from botloom.core.storage.repositories.inspection import InspectionRepository
from botloom.core.storage.repositories.messages import MessageRepository
from botloom.core.storage.repositories.polls import ChannelPollRepository
from botloom.core.storage.repositories.teaching import TeachingRepository
from botloom.core.storage.repositories.tenants import ApiKeyRepository, TenantRepository
from botloom.core.storage.repositories.usage import UsageRepository
from botloom.core.storage.repositories.webhooks import WebhookRepository


class Store:
    """Every repository over one database (and the cipher of plugin secrets)."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.tenants = TenantRepository(db)
        self.api_keys = ApiKeyRepository(db)
        self.bots = BotRepository(db)
        self.plugin_settings = PluginSettingRepository(db, cipher)
        self.channel_routes = ChannelRouteRepository(db, self.plugin_settings)
        self.conversations = ConversationRepository(db)
        self.messages = MessageRepository(db)
        self.deliveries = DeliveryRepository(db)
        self.channel_polls = ChannelPollRepository(db)
        self.usage = UsageRepository(db)
        self.budgets = BudgetRepository(db)
        self.events = EventRepository(db)
        self.webhooks = WebhookRepository(db, cipher)
        self.teaching = TeachingRepository(db)
        self.inspection = InspectionRepository(db)
        self.inbound = InboundRepository(db)
        self.forks = ForkRepository(db)
        self.agents = AgentRepository(db)
        self.teams = TeamRepository(db)
        self.canned = CannedResponseRepository(db)
        self.handovers = HandoverRepository(db)
        self.contacts = ContactRepository(db)
        self.checkpoint_erasures = CheckpointErasureRepository(db)
        self.audit = AuditRepository(db)


__all__ = [
    "API_KEY_PREFIX",
    "COLUMN_FIELDS",
    "AgentRepository",
    "ApiKeyRepository",
    "AuditEntry",
    "AuditRepository",
    "BotRepository",
    "BudgetRepository",
    "CannedResponseRepository",
    "ChannelPollRepository",
    "ChannelRouteRepository",
    "CheckpointErasureRepository",
    "Conflict",
    "ContactRepository",
    "ConversationRepository",
    "DeliveryRepository",
    "EventRepository",
    "ForkRepository",
    "HandoverRepository",
    "InboundRepository",
    "InspectionRepository",
    "MessageRepository",
    "OutboundState",
    "PluginSettingRepository",
    "Repository",
    "Store",
    "TeachingRepository",
    "TeamRepository",
    "TenantRepository",
    "UsageRepository",
    "WebhookRepository",
    "as_uuid",
    "hash_api_key",
    "to_struct",
]
