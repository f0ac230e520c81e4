"""Request and response bodies of the ``/api/v1`` JSON API.

Requests forbid unknown fields and bound every string; responses never carry a
secret except the one place an API key is shown, once, on creation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

import msgspec
from msgspec import UNSET, UnsetType

from botloom.core.domain import (
    ApiKey,
    BotSettings,
    BurstPolicy,
    ConversationStatus,
    MessageDirection,
    Slug,
    StoredMessage,
)

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text and JSON cannot hold NUL characters: strings with one are a 400, not a 500."""
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
"""A name or an identifier: no control character at all (a 400 naming the field)."""
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"
"""Free text: tabs and line breaks, but no other control character (a 400 naming the field)."""
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=ONE_LINE)]
"""A display name (tenant, bot, API key)."""
LongText = Annotated[str, msgspec.Meta(max_length=20_000, pattern=MULTI_LINE)]
"""Free text of a bot's settings (persona, fallback reply)."""
Reply = Annotated[str, msgspec.Meta(min_length=1, max_length=20_000, pattern=MULTI_LINE)]
"""A canned reply of a bot (fallback, busy)."""
Origin = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=ONE_LINE)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=ONE_LINE)]


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error, not silently dropped."""


class Shown(msgspec.Struct, frozen=True, kw_only=True):
    """Base of response bodies that show a stored record: :meth:`of` copies the record's fields of the same names."""

    @classmethod
    def of(cls, stored: object) -> Self:
        """The answer for a stored record (a domain Struct whose attributes include every field of this body)."""
        return msgspec.convert(stored, cls, from_attributes=True)


# -- tenants and keys -------------------------------------------------------------------


class TenantCreate(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new tenant."""

    slug: Slug
    """Lowercase letters, digits and inner dashes (``acme``); unique in the deployment."""
    name: Name


class TenantOut(Shown, frozen=True, kw_only=True):
    """A tenant."""

    id: str
    slug: str
    name: str
    created_at: datetime


class KeyCreate(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new API key of a tenant."""

    name: Name = "default"


class KeyOut(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as listed: its prefix for recognising it, never the key itself."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked: bool
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        """The answer for a stored key."""
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            revoked=key.revoked_at is not None,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
        )


class KeyCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new API key, with the key itself: shown this once, store it now."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    key: str
    """Send as ``Authorization: Bearer <key>``; botloom keeps only its hash."""

    @classmethod
    def of(cls, key: ApiKey, secret: str) -> KeyCreated:
        """The answer for a key just made."""
        return cls(id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at, key=secret)


class TenantCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new tenant and its first API key (shown once)."""

    tenant: TenantOut
    api_key: KeyCreated


# -- bots -------------------------------------------------------------------------------


class ModelSettingsPatch(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Changes to a bot's model settings; fields left out keep their value."""

    model: ModelName | UnsetType | None = UNSET
    """The chat model name; ``null`` uses ``BOTLOOM_LLM_MODEL``."""
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | UnsetType = UNSET
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32_000)] | UnsetType = UNSET
    max_tool_steps: Annotated[int, msgspec.Meta(ge=0, le=10)] | UnsetType = UNSET


class BotSettingsPatch(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Changes to a bot's settings (see ``BotSettings``); fields left out keep their value."""

    persona: LongText | UnsetType = UNSET
    """The system prompt's voice; the offline engine ignores it."""
    model: ModelSettingsPatch | UnsetType = UNSET
    escalation_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | UnsetType = UNSET
    """Below this intent confidence, after a fallback, the conversation goes to a person."""
    max_failures_before_escalation: Annotated[int, msgspec.Meta(ge=1, le=20)] | UnsetType = UNSET
    fallback_reply: Reply | UnsetType = UNSET
    burst_policy: BurstPolicy | UnsetType = UNSET
    """What happens to messages that arrive while a turn of the same conversation runs."""
    burst_window_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] | UnsetType = UNSET
    """With ``merge``: messages arriving within this window of the previous one join its turn."""
    busy_reply: Reply | UnsetType = UNSET
    """With ``reject``: the answer to a message that arrives while a turn runs."""
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | UnsetType | None = UNSET
    """Prune checkpoints older than this many days; ``null`` keeps all."""
    close_after_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | UnsetType | None = UNSET
    """Close (and archive) open conversations idle longer than this many days; ``null`` never closes them."""
    knowledge_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | UnsetType = UNSET
    allowed_origins: Annotated[list[Origin], msgspec.Meta(max_length=100)] | UnsetType = UNSET
    """Web origins allowed to embed the chat page (``https://shop.example``)."""
    redact_personal_data: bool | UnsetType = UNSET


class BotCreate(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new bot of a tenant."""

    slug: Slug
    """Unique within the tenant; the bot is then also ``tenant-slug/bot-slug`` in URLs."""
    name: Name
    settings: BotSettingsPatch = BotSettingsPatch()
    """Settings that differ from the defaults."""


class BotPatch(BotSettingsPatch, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Changes to a bot: its name, and any setting, either at the top level or under ``settings``."""

    name: Name | UnsetType = UNSET
    settings: BotSettingsPatch | UnsetType = UNSET


class BotOut(Shown, frozen=True, kw_only=True):
    """A bot with its settings."""

    id: str
    tenant_id: str
    slug: str
    name: str
    graph: str
    settings: BotSettings
    created_at: datetime
    updated_at: datetime


# -- plugins ----------------------------------------------------------------------------


class PluginPut(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Whether a bot uses a plugin, and its config.

    Secret fields are write-only: leave one out, or send ``"********"``, to
    keep the stored value. Leave ``config`` out to keep the whole stored config.
    """

    enabled: bool = True
    config: dict[str, Any] | None = None


class PluginOut(msgspec.Struct, frozen=True, kw_only=True):
    """An installed plugin as one bot sees it."""

    name: str
    version: str | None
    source: str
    enabled: bool
    """Whether this bot enabled the plugin."""
    kinds: list[str]
    channels: list[str]
    tools: list[str]
    intents: list[str]
    graphs: list[str]
    configurable: bool
    """Whether the plugin takes a per-bot config."""
    config_schema: dict[str, Any] | None
    """The JSON schema of the plugin's config; ``null`` when it takes none."""
    config: dict[str, Any]
    """The stored config, secrets masked as ``"********"``."""


# -- knowledge --------------------------------------------------------------------------

DocumentName = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=ONE_LINE)]
ContentType = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=ONE_LINE)]


VISIBLE_TEXT = r"^[\s\x01-\x1f\x7f\ufeff]*[^\s\x00-\x1f\x7f\ufeff][^\x00]*$"
"""No NUL (that is a binary file), and a visible character: blank, control characters and a BOM are empty."""
DocumentText = Annotated[str, msgspec.Meta(min_length=1, pattern=VISIBLE_TEXT)]
"""A document's text, as the knowledge base reads it (see :data:`VISIBLE_TEXT`)."""


class DocumentIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A knowledge document sent as JSON; a document of the same name is replaced."""

    name: DocumentName
    """The document's name; its extension (``.md``, ``.txt``, ``.html``, ``.csv``) tells its format."""
    content: DocumentText
    content_type: ContentType | None = None
    """``text/markdown``, ``text/plain``, ``text/html`` or ``text/csv``; overrides the extension."""


class DocumentOut(msgspec.Struct, frozen=True, kw_only=True):
    """A document of a bot's knowledge base."""

    id: str
    name: str
    content_type: str
    content_hash: str
    chunks: int
    created_at: datetime
    updated_at: datetime


class IngestOut(msgspec.Struct, frozen=True, kw_only=True):
    """What storing a document did."""

    document_id: str
    name: str
    status: Literal["created", "updated", "unchanged"]
    chunks: int


class PassageOut(msgspec.Struct, frozen=True, kw_only=True):
    """A passage the bot would retrieve."""

    chunk_id: str
    document_id: str
    document: str
    title: str
    text: str
    position: int
    score: float


class SearchOut(msgspec.Struct, frozen=True, kw_only=True):
    """What a knowledge search found, best first."""

    query: str
    threshold: float | None
    passages: list[PassageOut]


# -- conversations ----------------------------------------------------------------------


class ConversationOut(Shown, frozen=True, kw_only=True):
    """A conversation between one end user and a bot."""

    id: str
    bot_id: str
    channel: str
    external_key: str
    user: str | None
    status: ConversationStatus
    created_at: datetime
    updated_at: datetime


class MessageOut(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a transcript."""

    id: str
    direction: MessageDirection
    channel: str
    text: str
    status: str
    turn_id: str | None
    intent: str | None
    """The intent the turn answering this (inbound) message chose."""
    outcome: dict[str, Any] | None
    """How the turn ended: intent, confidence, escalated, errors."""
    created_at: datetime

    @classmethod
    def of(cls, message: StoredMessage) -> MessageOut:
        """The answer for a stored message."""
        outcome = message.metadata.get("outcome")
        outcome = outcome if isinstance(outcome, dict) else None
        intent = (outcome or {}).get("intent") or message.metadata.get("intent")
        return cls(
            id=message.id,
            direction=message.direction,
            channel=message.channel,
            text=message.text,
            status=message.status,
            turn_id=message.turn_id,
            intent=intent if isinstance(intent, str) else None,
            outcome=outcome,
            created_at=message.created_at,
        )


class ConversationDetail(ConversationOut, frozen=True, kw_only=True):
    """A conversation with its messages in order."""

    messages: list[MessageOut]


class InterruptOut(msgspec.Struct, frozen=True, kw_only=True):
    """A pending interrupt: the graph waits for a person (a handover)."""

    id: str | None
    value: Any


class CheckpointOut(msgspec.Struct, frozen=True, kw_only=True):
    """One LangGraph checkpoint of a conversation's thread."""

    checkpoint_id: str | None
    parent_id: str | None
    created_at: str | None
    step: int | None
    source: str | None
    """``input``, ``loop``, ``update`` or ``fork``."""
    next: list[str]
    """The nodes that run next from this checkpoint."""
    interrupts: list[InterruptOut]
    values: dict[str, Any]
    """The graph state: messages window, intent, confidence, slots, passages, tool_results, replies, trace..."""
