"""The domain types: tenants, bots and their settings, conversations, stored messages, usage.

These are plain msgspec Structs shared by storage, graphs, channels and the
server. Ids are UUID strings.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from botloom.core.messages import Attachment
from botloom.core.statuses import ConversationStatus, MessageDirection, MessageStatus

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
"""Slugs are lowercase letters, digits and inner dashes, at most 63 characters."""

Slug = Annotated[str, msgspec.Meta(pattern=SLUG_PATTERN, min_length=1, max_length=63)]

BurstPolicy = Literal["enqueue", "merge", "interrupt", "reject"]


def is_slug(value: str) -> bool:
    """Tell whether ``value`` is a valid tenant or bot slug."""
    return re.fullmatch(SLUG_PATTERN, value) is not None


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a bot uses a language model when one is configured."""

    model: str | None = None
    """The chat model name; ``None`` uses ``BOTLOOM_LLM_MODEL``."""
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.2
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32_000)] = 512
    max_tool_steps: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    """How many rounds of tool calls the model may make in one turn."""


class BotSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bot's behaviour, changed through ``PATCH /api/v1/bots/{bot}``."""

    persona: str = "You are a helpful, concise customer support assistant."
    """The system prompt's voice; the offline engine ignores it."""
    model: ModelSettings = ModelSettings()
    escalation_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.35
    """Below this intent confidence, after a fallback, the conversation goes to a person."""
    max_failures_before_escalation: Annotated[int, msgspec.Meta(ge=1, le=20)] = 2
    """Consecutive turns without an answer before the bot offers a person by itself."""
    fallback_reply: str = 'Sorry, I don\'t know how to help with that yet. Say "agent" to talk to a person.'
    burst_policy: BurstPolicy = "enqueue"
    """What happens to messages that arrive while a turn of the same conversation runs."""
    burst_window_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 1500
    """With ``merge``: messages arriving within this window of the previous one join its turn."""
    busy_reply: str = "One moment please, I'm still answering your previous message."
    """With ``reject``: the answer to a message that arrives while a turn runs."""
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None
    """Prune checkpoints older than this many days (the newest is always kept); ``None`` keeps all."""
    close_after_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None
    """Close open conversations idle longer than this many days (then archived: checkpoints removed,
    transcript kept; the user's next message starts a new one); ``None`` never closes them."""
    knowledge_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    """Minimum fused score a knowledge passage needs to be used; 0 uses the search default."""
    allowed_origins: tuple[str, ...] = ()
    """Web origins allowed to embed the chat page and open its WebSocket (empty: same origin only)."""
    redact_personal_data: bool = False


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    """An organisation: owns bots, API keys and budgets; isolated from every other tenant."""

    id: str
    slug: str
    name: str
    created_at: datetime


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's API key as stored: only a prefix for display and a hash, never the key."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class Bot(msgspec.Struct, frozen=True, kw_only=True):
    """One chatbot of a tenant."""

    id: str
    tenant_id: str
    slug: str
    name: str
    settings: BotSettings
    graph: str = "turn"
    """The name of the registered graph that runs this bot's turns."""
    created_at: datetime
    updated_at: datetime


class PluginSetting(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a bot enabled a plugin, and with which (validated) configuration."""

    plugin: str
    enabled: bool
    config: dict[str, Any] = {}
    """The plugin's config with secrets decrypted; never send this to an API client as it is."""


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    """The turns between one end user and one bot on one channel."""

    id: str
    tenant_id: str
    bot_id: str
    channel: str
    external_key: str
    """The channel's key for this conversation (the sender's address, an e-mail thread root)."""
    user: str | None = None
    status: ConversationStatus = "open"
    """See :data:`botloom.core.statuses.ConversationStatus`."""
    state_version: int = 0
    """The version of its graph state in the checkpoints (0 until its first turn)."""
    created_at: datetime
    updated_at: datetime


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message as the messages table keeps it: the whole transcript of a conversation."""

    id: str
    tenant_id: str
    bot_id: str
    conversation_id: str
    direction: MessageDirection
    channel: str
    text: str
    status: MessageStatus
    """An :data:`~botloom.core.statuses.InboundStatus` or an :data:`~botloom.core.statuses.OutboundStatus`
    (by ``direction``); :mod:`botloom.core.statuses` says what each means and what comes next."""
    idempotency_key: str | None = None
    attachments: tuple[Attachment, ...] = ()
    metadata: dict[str, Any] = {}
    turn_id: str | None = None
    created_at: datetime


class UsageEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One billable call (a chat completion, an embedding batch) recorded per tenant and bot."""

    tenant_id: str
    bot_id: str | None = None
    conversation_id: str | None = None
    kind: Literal["chat", "embedding"]
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


__all__ = [
    "SLUG_PATTERN",
    "ApiKey",
    "Bot",
    "BotSettings",
    "BurstPolicy",
    "Conversation",
    "ConversationStatus",
    "MessageDirection",
    "MessageStatus",
    "ModelSettings",
    "PluginSetting",
    "Slug",
    "StoredMessage",
    "Tenant",
    "UsageEvent",
    "is_slug",
]
"""The domain types; ``ConversationStatus``, ``MessageDirection`` and ``MessageStatus`` are
:mod:`botloom.core.statuses`', re-exported for the callers that import them from here."""
