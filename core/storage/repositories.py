"""Repositories: every read and write of botloom's own tables.

Each method that touches a tenant's data takes ``tenant_id`` and puts it in the
query, so a caller holding tenant A's id can never read or change tenant B's
rows, whatever other ids it passes. Ids are UUID strings; a malformed id simply
finds nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from psycopg import errors as pg_errors

from botloom.core.crypto import Cipher
from botloom.core.domain import (
    ApiKey,
    Bot,
    BotSettings,
    Conversation,
    ConversationStatus,
    PluginSetting,
    StoredMessage,
    Tenant,
    UsageEvent,
)
from botloom.core.messages import InboundMessage
from botloom.core.storage.database import Database

S = TypeVar("S", bound=msgspec.Struct)

API_KEY_PREFIX = "blk_"


class Conflict(Exception):
    """A unique name is taken (a tenant or bot slug)."""


def as_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID, or ``None`` when it is not one (so lookups find nothing)."""
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _struct(cls: type[S], row: Mapping[str, Any]) -> S:
    data = {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in row.items()}
    return msgspec.convert(data, cls, strict=False, from_attributes=False)


def hash_api_key(key: str) -> bytes:
    """The stored form of an API key: SHA-256 (keys are long random strings, so no salt is needed)."""
    return hashlib.sha256(key.encode()).digest()


class Repository:
    """Base for repositories: holds the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any] | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()


class TenantRepository(Repository):
    """Tenants (operator-level: the tenant table itself is not scoped)."""

    async def create(self, slug: str, name: str) -> Tenant:
        """Create a tenant; raises :class:`Conflict` when the slug is taken."""
        try:
            row = await self._one(
                "INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING *", (slug, name)
            )
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"tenant {slug!r} exists") from exc
        assert row is not None
        return _struct(Tenant, row)

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id."""
        row = await self._one("SELECT * FROM tenants WHERE id = %s", (as_uuid(tenant_id),))
        return _struct(Tenant, row) if row else None

    async def get_by_slug(self, slug: str) -> Tenant | None:
        """The tenant with this slug."""
        row = await self._one("SELECT * FROM tenants WHERE slug = %s", (slug,))
        return _struct(Tenant, row) if row else None

    async def list_all(self) -> list[Tenant]:
        """Every tenant, oldest first."""
        return [_struct(Tenant, r) for r in await self._all("SELECT * FROM tenants ORDER BY created_at", ())]

    async def delete(self, tenant_id: str) -> bool:
        """Delete a tenant and everything it owns."""
        row = await self._one("DELETE FROM tenants WHERE id = %s RETURNING id", (as_uuid(tenant_id),))
        return row is not None


class ApiKeyRepository(Repository):
    """Tenants' API keys, stored as hashes."""

    async def create(self, tenant_id: str, name: str = "default") -> tuple[ApiKey, str]:
        """Make a new key; returns the stored record and the key itself, which is never stored."""
        token = secrets.token_urlsafe(32)
        key = f"{API_KEY_PREFIX}{token}"
        row = await self._one(
            "INSERT INTO api_keys (tenant_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s) RETURNING *",
            (as_uuid(tenant_id), name, key[: len(API_KEY_PREFIX) + 6], hash_api_key(key)),
        )
        assert row is not None
        row.pop("key_hash")
        return _struct(ApiKey, row), key

    async def authenticate(self, key: str) -> ApiKey | None:
        """The live (not revoked) key record matching ``key``, noting its use."""
        row = await self._one(
            "UPDATE api_keys SET last_used_at = now() WHERE key_hash = %s AND revoked_at IS NULL "
            "RETURNING id, tenant_id, name, prefix, created_at, revoked_at, last_used_at",
            (hash_api_key(key),),
        )
        return _struct(ApiKey, row) if row else None

    async def list_all(self, tenant_id: str) -> list[ApiKey]:
        """A tenant's keys, revoked ones included."""
        rows = await self._all(
            "SELECT id, tenant_id, name, prefix, created_at, revoked_at, last_used_at FROM api_keys "
            "WHERE tenant_id = %s ORDER BY created_at",
            (as_uuid(tenant_id),),
        )
        return [_struct(ApiKey, r) for r in rows]

    async def revoke(self, tenant_id: str, key_id: str) -> bool:
        """Revoke one of the tenant's keys; ``False`` if it has no such live key."""
        row = await self._one(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = %s AND id = %s AND revoked_at IS NULL "
            "RETURNING id",
            (as_uuid(tenant_id), as_uuid(key_id)),
        )
        return row is not None


class BotRepository(Repository):
    """A tenant's bots."""

    @staticmethod
    def _bot(row: Mapping[str, Any]) -> Bot:
        data = dict(row)
        data["settings"] = msgspec.convert(data["settings"] or {}, BotSettings, strict=False)
        return _struct(Bot, data)

    async def create(
        self, tenant_id: str, slug: str, name: str, settings: BotSettings | None = None, graph: str = "turn"
    ) -> Bot:
        """Create a bot; raises :class:`Conflict` when the tenant has a bot with this slug."""
        payload = msgspec.json.encode(settings or BotSettings()).decode()
        try:
            row = await self._one(
                "INSERT INTO bots (tenant_id, slug, name, settings, graph) VALUES (%s, %s, %s, %s, %s) RETURNING *",
                (as_uuid(tenant_id), slug, name, payload, graph),
            )
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"bot {slug!r} exists") from exc
        assert row is not None
        return self._bot(row)

    async def get(self, tenant_id: str, bot_id: str) -> Bot | None:
        """The tenant's bot with this id."""
        row = await self._one(
            "SELECT * FROM bots WHERE tenant_id = %s AND id = %s", (as_uuid(tenant_id), as_uuid(bot_id))
        )
        return self._bot(row) if row else None

    async def get_by_slug(self, tenant_id: str, slug: str) -> Bot | None:
        """The tenant's bot with this slug."""
        row = await self._one("SELECT * FROM bots WHERE tenant_id = %s AND slug = %s", (as_uuid(tenant_id), slug))
        return self._bot(row) if row else None

    async def find(self, ref: str) -> Bot | None:
        """Resolve a bot reference, an id or ``tenant-slug/bot-slug``, across tenants.

        For routing only: the caller must still check the bot belongs to the
        authenticated tenant.
        """
        if "/" in ref:
            tenant_slug, _, bot_slug = ref.partition("/")
            row = await self._one(
                "SELECT b.* FROM bots b JOIN tenants t ON t.id = b.tenant_id WHERE t.slug = %s AND b.slug = %s",
                (tenant_slug, bot_slug),
            )
        else:
            row = await self._one("SELECT * FROM bots WHERE id = %s", (as_uuid(ref),))
        return self._bot(row) if row else None

    async def list_all(self, tenant_id: str) -> list[Bot]:
        """The tenant's bots."""
        rows = await self._all("SELECT * FROM bots WHERE tenant_id = %s ORDER BY created_at", (as_uuid(tenant_id),))
        return [self._bot(r) for r in rows]

    async def update(
        self, tenant_id: str, bot_id: str, *, name: str | None = None, settings: BotSettings | None = None
    ) -> Bot | None:
        """Change a bot's name and/or settings."""
        row = await self._one(
            "UPDATE bots SET name = coalesce(%s, name), settings = coalesce(%s::jsonb, settings), updated_at = now() "
            "WHERE tenant_id = %s AND id = %s RETURNING *",
            (
                name,
                msgspec.json.encode(settings).decode() if settings is not None else None,
                as_uuid(tenant_id),
                as_uuid(bot_id),
            ),
        )
        return self._bot(row) if row else None

    async def delete(self, tenant_id: str, bot_id: str) -> bool:
        """Delete a bot with its plugin settings, conversations and messages."""
        row = await self._one(
            "DELETE FROM bots WHERE tenant_id = %s AND id = %s RETURNING id", (as_uuid(tenant_id), as_uuid(bot_id))
        )
        return row is not None


class PluginSettingRepository(Repository):
    """Which plugins each bot enabled, with their config; secret fields are encrypted."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        super().__init__(db)
        self.cipher = cipher

    def _setting(self, row: Mapping[str, Any]) -> PluginSetting:
        config = dict(row["config"] or {})
        if row["secrets"]:
            config.update(json.loads(self.cipher.decrypt(bytes(row["secrets"]))))
        return PluginSetting(plugin=row["plugin"], enabled=row["enabled"], config=config)

    async def put(
        self,
        tenant_id: str,
        bot_id: str,
        plugin: str,
        *,
        enabled: bool,
        config: Mapping[str, Any],
        secrets: Mapping[str, Any],
    ) -> PluginSetting | None:
        """Store a bot's setting of one plugin; ``None`` if the tenant has no such bot."""
        sealed = self.cipher.encrypt(json.dumps(dict(secrets)).encode()) if secrets else None
        row = await self._one(
            "INSERT INTO bot_plugins (tenant_id, bot_id, plugin, enabled, config, secrets) "
            "SELECT b.tenant_id, b.id, %(plugin)s, %(enabled)s, %(config)s, %(secrets)s FROM bots b "
            "WHERE b.tenant_id = %(tenant)s AND b.id = %(bot)s "
            "ON CONFLICT (bot_id, plugin) DO UPDATE SET enabled = excluded.enabled, config = excluded.config, "
            "secrets = excluded.secrets, updated_at = now() RETURNING *",
            {
                "tenant": as_uuid(tenant_id),
                "bot": as_uuid(bot_id),
                "plugin": plugin,
                "enabled": enabled,
                "config": json.dumps(dict(config)),
                "secrets": sealed,
            },
        )
        return self._setting(row) if row else None

    async def get(self, tenant_id: str, bot_id: str, plugin: str) -> PluginSetting | None:
        """A bot's setting of one plugin, secrets decrypted."""
        row = await self._one(
            "SELECT * FROM bot_plugins WHERE tenant_id = %s AND bot_id = %s AND plugin = %s",
            (as_uuid(tenant_id), as_uuid(bot_id), plugin),
        )
        return self._setting(row) if row else None

    async def list_all(self, tenant_id: str, bot_id: str) -> list[PluginSetting]:
        """Every plugin setting of a bot, secrets decrypted."""
        rows = await self._all(
            "SELECT * FROM bot_plugins WHERE tenant_id = %s AND bot_id = %s ORDER BY plugin",
            (as_uuid(tenant_id), as_uuid(bot_id)),
        )
        return [self._setting(r) for r in rows]


class ConversationRepository(Repository):
    """Conversations between end users and bots."""

    async def get_or_create(
        self, tenant_id: str, bot_id: str, channel: str, external_key: str, user: str | None = None
    ) -> Conversation:
        """The live conversation for this channel key, created when there is none."""
        params = (as_uuid(tenant_id), as_uuid(bot_id), channel, external_key)
        async with self.db.connection() as conn:
            for _ in range(3):
                cur = await conn.execute(
                    "SELECT * FROM conversations WHERE tenant_id = %s AND bot_id = %s AND channel = %s "
                    "AND external_key = %s AND status <> 'closed'",
                    params,
                )
                row = await cur.fetchone()
                if row:
                    return _struct(Conversation, row)
                cur = await conn.execute(
                    "INSERT INTO conversations (tenant_id, bot_id, channel, external_key, user_ref) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING *",
                    (*params, user),
                )
                row = await cur.fetchone()
                if row:
                    return _struct(Conversation, row)
        raise RuntimeError("could not create conversation")  # pragma: no cover - needs three lost races

    async def create(
        self, tenant_id: str, bot_id: str, channel: str, user: str | None = None
    ) -> Conversation:
        """A new conversation whose channel key is its own id (web and REST chat)."""
        new_id = uuid.uuid4()
        row = await self._one(
            "INSERT INTO conversations (id, tenant_id, bot_id, channel, external_key, user_ref) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
            (new_id, as_uuid(tenant_id), as_uuid(bot_id), channel, str(new_id), user),
        )
        assert row is not None
        return _struct(Conversation, row)

    async def get(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        """The tenant's conversation with this id."""
        row = await self._one(
            "SELECT * FROM conversations WHERE tenant_id = %s AND id = %s",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return _struct(Conversation, row) if row else None

    async def list_all(self, tenant_id: str, bot_id: str | None = None, limit: int = 50) -> list[Conversation]:
        """The tenant's conversations, most recently active first."""
        rows = await self._all(
            "SELECT * FROM conversations WHERE tenant_id = %s AND (%s::uuid IS NULL OR bot_id = %s) "
            "ORDER BY updated_at DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(bot_id), as_uuid(bot_id), limit),
        )
        return [_struct(Conversation, r) for r in rows]

    async def set_status(self, tenant_id: str, conversation_id: str, status: ConversationStatus) -> bool:
        """Mark a conversation open, escalated or closed."""
        row = await self._one(
            "UPDATE conversations SET status = %s, updated_at = now() WHERE tenant_id = %s AND id = %s RETURNING id",
            (status, as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return row is not None


class MessageRepository(Repository):
    """The transcript: every inbound and outbound message, with its delivery state."""

    async def add_inbound(
        self, tenant_id: str, bot_id: str, conversation_id: str, message: InboundMessage
    ) -> tuple[StoredMessage, bool]:
        """Store an inbound message; returns it and whether it is new.

        A message whose idempotency key was seen before is not stored again: the
        earlier one is returned with ``False``.
        """
        row = await self._one(
            "INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
            "idempotency_key, attachments, metadata, created_at) "
            "SELECT c.tenant_id, c.bot_id, c.id, 'inbound', %(channel)s, %(text)s, 'received', %(key)s, "
            "%(attachments)s, %(metadata)s, %(at)s FROM conversations c "
            "WHERE c.tenant_id = %(tenant)s AND c.id = %(conversation)s AND c.bot_id = %(bot)s "
            "ON CONFLICT (bot_id, channel, direction, idempotency_key) DO NOTHING RETURNING *",
            {
                "tenant": as_uuid(tenant_id),
                "bot": as_uuid(bot_id),
                "conversation": as_uuid(conversation_id),
                "channel": message.channel,
                "text": message.text,
                "key": message.idempotency_key,
                "attachments": msgspec.json.encode(message.attachments).decode(),
                "metadata": msgspec.json.encode(message.metadata).decode(),
                "at": message.received_at,
            },
        )
        if row is not None:
            await self._touch(tenant_id, conversation_id)
            return _struct(StoredMessage, row), True
        if message.idempotency_key is None:
            raise LookupError(f"conversation {conversation_id} of bot {bot_id} not found")
        existing = await self.find(tenant_id, bot_id, message.channel, "inbound", message.idempotency_key)
        if existing is None:
            raise LookupError(f"conversation {conversation_id} of bot {bot_id} not found")
        return existing, False

    async def add_outbound(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        channel: str,
        text: str,
        turn_id: str | None = None,
        idempotency_key: str | None = None,
        status: str = "pending",
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[StoredMessage, bool]:
        """Store a reply before it is delivered; idempotent on ``idempotency_key`` like inbound."""
        row = await self._one(
            "INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
            "idempotency_key, metadata, turn_id) "
            "SELECT c.tenant_id, c.bot_id, c.id, 'outbound', %s, %s, %s, %s, %s, %s FROM conversations c "
            "WHERE c.tenant_id = %s AND c.id = %s "
            "ON CONFLICT (bot_id, channel, direction, idempotency_key) DO NOTHING RETURNING *",
            (
                channel,
                text,
                status,
                idempotency_key,
                json.dumps(dict(metadata or {})),
                as_uuid(turn_id),
                as_uuid(tenant_id),
                as_uuid(conversation_id),
            ),
        )
        if row is not None:
            await self._touch(tenant_id, conversation_id)
            return _struct(StoredMessage, row), True
        conversation = await self._one(
            "SELECT bot_id FROM conversations WHERE tenant_id = %s AND id = %s",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        if conversation is None or idempotency_key is None:
            raise LookupError(f"conversation {conversation_id} not found")
        existing = await self.find(tenant_id, str(conversation["bot_id"]), channel, "outbound", idempotency_key)
        assert existing is not None
        return existing, False

    async def _touch(self, tenant_id: str, conversation_id: str) -> None:
        await self._one(
            "UPDATE conversations SET updated_at = now() WHERE tenant_id = %s AND id = %s RETURNING id",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )

    async def find(
        self, tenant_id: str, bot_id: str, channel: str, direction: str, idempotency_key: str
    ) -> StoredMessage | None:
        """The message with this idempotency key."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND bot_id = %s AND channel = %s AND direction = %s "
            "AND idempotency_key = %s",
            (as_uuid(tenant_id), as_uuid(bot_id), channel, direction, idempotency_key),
        )
        return _struct(StoredMessage, row) if row else None

    async def get(self, tenant_id: str, message_id: str) -> StoredMessage | None:
        """One message of the tenant."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND id = %s", (as_uuid(tenant_id), as_uuid(message_id))
        )
        return _struct(StoredMessage, row) if row else None

    async def list_all(self, tenant_id: str, conversation_id: str, limit: int = 500) -> list[StoredMessage]:
        """A conversation's messages in the order they were stored."""
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s "
            "ORDER BY created_at, id LIMIT %s",
            (as_uuid(tenant_id), as_uuid(conversation_id), limit),
        )
        return [_struct(StoredMessage, r) for r in rows]

    async def set_status(
        self,
        tenant_id: str,
        message_id: str,
        status: str,
        *,
        turn_id: str | None = None,
        provider_id: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Record what happened to a message (answered, sent, delivered, failed, ...)."""
        row = await self._one(
            "UPDATE messages SET status = %s, turn_id = coalesce(%s, turn_id), "
            "provider_id = coalesce(%s, provider_id), error = %s, updated_at = now() "
            "WHERE tenant_id = %s AND id = %s RETURNING id",
            (status, as_uuid(turn_id), provider_id, error, as_uuid(tenant_id), as_uuid(message_id)),
        )
        return row is not None


    async def pending_inbound(self, tenant_id: str, conversation_id: str) -> list[StoredMessage]:
        """Inbound messages of a conversation that no turn has finished, oldest first.

        ``processing`` ones are included: whoever holds the conversation's lock
        and finds one is looking at a turn whose process died, and runs it again.
        """
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s AND direction = 'inbound' "
            "AND status IN ('received', 'processing') ORDER BY created_at, id",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return [_struct(StoredMessage, r) for r in rows]

    async def finish(
        self, tenant_id: str, message_id: str, status: str, *, turn_id: str | None, outcome: Mapping[str, Any]
    ) -> bool:
        """Mark an inbound message done and keep the turn's outcome (intent, escalation) with it."""
        row = await self._one(
            "UPDATE messages SET status = %s, turn_id = coalesce(%s, turn_id), "
            "metadata = metadata || jsonb_build_object('outcome', %s::jsonb), updated_at = now() "
            "WHERE tenant_id = %s AND id = %s RETURNING id",
            (status, as_uuid(turn_id), json.dumps(dict(outcome)), as_uuid(tenant_id), as_uuid(message_id)),
        )
        return row is not None

    async def replies_of_turn(self, tenant_id: str, turn_id: str) -> list[StoredMessage]:
        """The outbound messages a turn produced, in order."""
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND turn_id = %s AND direction = 'outbound' "
            "ORDER BY created_at, idempotency_key",
            (as_uuid(tenant_id), as_uuid(turn_id)),
        )
        return [_struct(StoredMessage, r) for r in rows]


class UsageRepository(Repository):
    """Token usage of language-model and embedding calls, per tenant and bot."""

    async def record(self, event: UsageEvent) -> None:
        """Store one usage event."""
        await self._one(
            "INSERT INTO usage_events (tenant_id, bot_id, conversation_id, kind, model, prompt_tokens, "
            "completion_tokens, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                as_uuid(event.tenant_id),
                as_uuid(event.bot_id),
                as_uuid(event.conversation_id),
                event.kind,
                event.model,
                event.prompt_tokens,
                event.completion_tokens,
                event.latency_ms,
            ),
        )

    async def totals(self, tenant_id: str, bot_id: str | None = None) -> dict[str, int]:
        """Summed tokens of a tenant (or one of its bots)."""
        row = await self._one(
            "SELECT count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS prompt_tokens, "
            "coalesce(sum(completion_tokens), 0) AS completion_tokens FROM usage_events "
            "WHERE tenant_id = %s AND (%s::uuid IS NULL OR bot_id = %s)",
            (as_uuid(tenant_id), as_uuid(bot_id), as_uuid(bot_id)),
        )
        assert row is not None
        return {k: int(v) for k, v in row.items()}


class Store:
    """All repositories over one database."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.tenants = TenantRepository(db)
        self.api_keys = ApiKeyRepository(db)
        self.bots = BotRepository(db)
        self.plugin_settings = PluginSettingRepository(db, cipher)
        self.conversations = ConversationRepository(db)
        self.messages = MessageRepository(db)
        self.usage = UsageRepository(db)
