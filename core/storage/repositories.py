"""Repositories: every read and write of botloom's own tables.

Each method that touches a tenant's data takes ``tenant_id`` and puts it in the
query, so a caller holding tenant A's id can never read or change tenant B's
rows, whatever other ids it passes. Ids are UUID strings; a malformed id simply
finds nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
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


COLUMN_FIELDS = {"user_ref": "user"}
"""Columns whose Struct field has another name (``user`` is a reserved word in SQL)."""


def _struct(cls: type[S], row: Mapping[str, Any]) -> S:
    data = {COLUMN_FIELDS.get(k, k): (str(v) if isinstance(v, uuid.UUID) else v) for k, v in row.items()}
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
            row = await self._one("INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING *", (slug, name))
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

    async def all_tenants_bots(self) -> list[Bot]:
        """Every bot of every tenant (operator-level jobs only)."""
        return [self._bot(r) for r in await self._all("SELECT * FROM bots ORDER BY created_at", ())]

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
        self,
        tenant_id: str,
        bot_id: str,
        channel: str,
        external_key: str,
        user: str | None = None,
        *,
        state_version: int = 0,
    ) -> Conversation:
        """The live conversation for this channel key, created when there is none (with ``state_version``)."""
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
                    "INSERT INTO conversations (tenant_id, bot_id, channel, external_key, user_ref, state_version) "
                    "SELECT b.tenant_id, b.id, %s, %s, %s, %s FROM bots b WHERE b.tenant_id = %s AND b.id = %s "
                    "ON CONFLICT DO NOTHING RETURNING *",
                    (channel, external_key, user, state_version, *params[:2]),
                )
                row = await cur.fetchone()
                if row:
                    return _struct(Conversation, row)
                if await self._one("SELECT 1 AS found FROM bots WHERE tenant_id = %s AND id = %s", params[:2]) is None:
                    raise LookupError(f"bot {bot_id} not found")
        raise RuntimeError("could not create conversation")  # pragma: no cover - needs three lost races

    async def create(
        self, tenant_id: str, bot_id: str, channel: str, user: str | None = None, *, state_version: int = 0
    ) -> Conversation:
        """A new conversation whose channel key is its own id (web and REST chat).

        ``state_version`` is the version of the state its graph will checkpoint (``0``: unknown),
        so its first turn need not look for an older state to migrate.
        """
        new_id = uuid.uuid4()
        row = await self._one(
            "INSERT INTO conversations (id, tenant_id, bot_id, channel, external_key, user_ref, state_version) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (new_id, as_uuid(tenant_id), as_uuid(bot_id), channel, str(new_id), user, state_version),
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
        if bot_id is not None and as_uuid(bot_id) is None:
            return []
        rows = await self._all(
            "SELECT * FROM conversations WHERE tenant_id = %s AND (%s::uuid IS NULL OR bot_id = %s) "
            "ORDER BY updated_at DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(bot_id), as_uuid(bot_id), limit),
        )
        return [_struct(Conversation, r) for r in rows]

    async def idle_unpruned(self, tenant_id: str, bot_id: str, cutoff: datetime) -> list[str]:
        """Ids of the bot's conversations idle since before ``cutoff`` and not pruned since."""
        rows = await self._all(
            "SELECT id FROM conversations WHERE tenant_id = %s AND bot_id = %s AND updated_at < %s "
            "AND archived_at IS NULL AND (pruned_at IS NULL OR pruned_at < updated_at)",
            (as_uuid(tenant_id), as_uuid(bot_id), cutoff),
        )
        return [str(r["id"]) for r in rows]

    async def close_idle(self, tenant_id: str, bot_id: str, cutoff: datetime) -> list[str]:
        """Close the bot's open conversations idle since before ``cutoff``; their ids.

        Last activity (``updated_at``) stays as it was; a message stored meanwhile keeps its conversation open.
        """
        rows = await self._all(
            "UPDATE conversations SET status = 'closed' WHERE tenant_id = %s AND bot_id = %s AND status = 'open' "
            "AND updated_at < %s RETURNING id",
            (as_uuid(tenant_id), as_uuid(bot_id), cutoff),
        )
        return [str(r["id"]) for r in rows]

    async def closed_unarchived(self, tenant_id: str, bot_id: str) -> list[str]:
        """Ids of the bot's closed conversations whose checkpoints are still kept."""
        rows = await self._all(
            "SELECT id FROM conversations WHERE tenant_id = %s AND bot_id = %s AND status = 'closed' "
            "AND archived_at IS NULL",
            (as_uuid(tenant_id), as_uuid(bot_id)),
        )
        return [str(r["id"]) for r in rows]

    async def mark(self, tenant_id: str, conversation_ids: Sequence[str], what: str) -> None:
        """Record that conversations were ``pruned`` or ``archived`` now."""
        column = {"pruned": "pruned_at", "archived": "archived_at"}[what]
        await self._one(
            f"UPDATE conversations SET {column} = now() WHERE tenant_id = %s AND id = ANY(%s) RETURNING 1",  # noqa: S608
            (as_uuid(tenant_id), [as_uuid(c) for c in conversation_ids]),
        )

    async def tenant_of(self, conversation_id: str) -> str | None:
        """The tenant owning a conversation (operator-level lookups only)."""
        row = await self._one("SELECT tenant_id FROM conversations WHERE id = %s", (as_uuid(conversation_id),))
        return str(row["tenant_id"]) if row else None

    async def set_state_version(self, tenant_id: str, conversation_id: str, version: int) -> bool:
        """Record the version of the conversation's checkpointed state."""
        row = await self._one(
            "UPDATE conversations SET state_version = %s WHERE tenant_id = %s AND id = %s RETURNING id",
            (version, as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return row is not None

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
            "WITH c AS (UPDATE conversations SET updated_at = now() WHERE tenant_id = %(tenant)s "
            "AND id = %(conversation)s AND bot_id = %(bot)s RETURNING tenant_id, bot_id, id) "
            "INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
            "idempotency_key, attachments, metadata, created_at) "
            "SELECT c.tenant_id, c.bot_id, c.id, 'inbound', %(channel)s, %(text)s, 'received', %(key)s, "
            "%(attachments)s, %(metadata)s, %(at)s FROM c "
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
        if row is not None:  # the conversation's updated_at moved in the same statement
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
            "WITH c AS (UPDATE conversations SET updated_at = now() WHERE tenant_id = %s AND id = %s "
            "RETURNING tenant_id, bot_id, id) "
            "INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
            "idempotency_key, metadata, turn_id) "
            "SELECT c.tenant_id, c.bot_id, c.id, 'outbound', %s, %s, %s, %s, %s, %s FROM c "
            "ON CONFLICT (bot_id, channel, direction, idempotency_key) DO NOTHING RETURNING *",
            (
                as_uuid(tenant_id),
                as_uuid(conversation_id),
                channel,
                text,
                status,
                idempotency_key,
                json.dumps(dict(metadata or {})),
                as_uuid(turn_id),
            ),
        )
        if row is not None:
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
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s ORDER BY created_at, id LIMIT %s",
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

    async def claim(self, tenant_id: str, message_id: str, status: str, *, expected: Sequence[str]) -> bool:
        """Move a message to ``status`` only if it is in one of the ``expected`` states (compare-and-set)."""
        row = await self._one(
            "UPDATE messages SET status = %s, updated_at = now() WHERE tenant_id = %s AND id = %s "
            "AND status = ANY(%s) RETURNING id",
            (status, as_uuid(tenant_id), as_uuid(message_id), list(expected)),
        )
        return row is not None

    async def received_after(self, tenant_id: str, conversation_id: str, message_id: str) -> bool:
        """Whether an inbound message arrived in the conversation after ``message_id`` and waits."""
        row = await self._one(
            "SELECT 1 AS found FROM messages m WHERE m.tenant_id = %s AND m.conversation_id = %s "
            "AND m.direction = 'inbound' AND m.status = 'received' "
            "AND (m.created_at, m.id) > (SELECT created_at, id FROM messages WHERE tenant_id = %s AND id = %s) LIMIT 1",
            (as_uuid(tenant_id), as_uuid(conversation_id), as_uuid(tenant_id), as_uuid(message_id)),
        )
        return row is not None

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

    async def receive(
        self, tenant_id: str, bot_id: str, message: InboundMessage, *, state_version: int = 0
    ) -> tuple[Conversation, StoredMessage, bool]:
        """Store an inbound message in the live conversation of its key, in one statement.

        The conversation (keyed by ``message.conversation_key`` or the sender) is
        created when there is none and touched when there is. Returns it, the stored
        message, and whether the message is new: one whose idempotency key was seen
        before is not stored again. Raises ``LookupError`` for no such bot.
        """
        row = await self._one(
            "WITH conversation AS (INSERT INTO conversations (tenant_id, bot_id, channel, external_key, user_ref, "
            "state_version) SELECT b.tenant_id, b.id, %(channel)s, %(key)s, %(user)s, %(version)s FROM bots b "
            "WHERE b.tenant_id = %(tenant)s AND b.id = %(bot)s "
            "ON CONFLICT (bot_id, channel, external_key) WHERE status <> 'closed' "
            "DO UPDATE SET updated_at = now() RETURNING *), "
            "message AS (INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
            "idempotency_key, attachments, metadata, created_at) SELECT c.tenant_id, c.bot_id, c.id, 'inbound', "
            "%(channel)s, %(text)s, 'received', %(idempotency)s, %(attachments)s, %(metadata)s, %(at)s "
            "FROM conversation c ON CONFLICT (bot_id, channel, direction, idempotency_key) DO NOTHING RETURNING *) "
            "SELECT (SELECT row_to_json(c) FROM conversation c) AS conversation, "
            "(SELECT row_to_json(m) FROM message m) AS message",
            {
                "tenant": as_uuid(tenant_id),
                "bot": as_uuid(bot_id),
                "channel": message.channel,
                "key": message.conversation_key or message.sender,
                "user": message.sender,
                "version": state_version,
                "text": message.text,
                "idempotency": message.idempotency_key,
                "attachments": msgspec.json.encode(message.attachments).decode(),
                "metadata": msgspec.json.encode(message.metadata).decode(),
                "at": message.received_at,
            },
        )
        if row is None or row["conversation"] is None:
            raise LookupError(f"bot {bot_id} not found")
        conversation = _struct(Conversation, row["conversation"])
        if row["message"] is not None:
            return conversation, _struct(StoredMessage, row["message"]), True
        assert message.idempotency_key is not None  # without a key, every message is new
        existing = await self.find(tenant_id, bot_id, message.channel, "inbound", message.idempotency_key)
        if existing is None:  # pragma: no cover - the message that conflicted was deleted meanwhile
            raise LookupError(f"message {message.idempotency_key!r} not found")
        return conversation, existing, False


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
        if bot_id is not None and as_uuid(bot_id) is None:
            return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
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


class OutboundState(msgspec.Struct, frozen=True, kw_only=True):
    """An outbound message with its delivery state: attempts so far, the last error, when to try again."""

    message: StoredMessage
    attempts: int = 0
    error: str | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None


_DELIVERY_FIELDS = ("attempts", "error", "next_attempt_at", "updated_at")
_RANKS = ["sent", "delivered", "undelivered", "failed"]
"""Order of a part's statuses: a status report never moves a part back (``sent`` after ``delivered``)."""
_SETTLE = (
    "UPDATE messages m SET status = s.status, error = coalesce(s.error, m.error), updated_at = now() FROM ("
    "SELECT CASE WHEN bool_or(status = 'failed') THEN 'failed' WHEN bool_or(status = 'undelivered') "
    "THEN 'undelivered' WHEN bool_and(status = 'delivered') THEN 'delivered' ELSE 'sent' END AS status, "
    "max(error) AS error FROM message_parts WHERE message_id = %(id)s) s "
    "WHERE m.id = %(id)s AND m.tenant_id = %(tenant)s AND m.status = ANY(%(from)s) AND s.status IS NOT NULL "
    "RETURNING m.id"
)
"""Set a message's status from its parts' (the worst of them), if it is in one of the ``from`` states."""


class DeliveryRepository(Repository):
    """Delivery of outbound messages: the parts sent, attempts and back-off, dead letters, status reports."""

    @staticmethod
    def _state(row: Mapping[str, Any]) -> OutboundState:
        data = dict(row)
        extra = {name: data.pop(name, None) for name in _DELIVERY_FIELDS}
        return OutboundState(
            message=_struct(StoredMessage, data),
            attempts=extra["attempts"] or 0,
            error=extra["error"],
            next_attempt_at=extra["next_attempt_at"],
            updated_at=extra["updated_at"],
        )

    async def next_due(self, tenant_id: str, conversation_id: str) -> OutboundState | None:
        """The conversation's oldest outbound message still to be delivered (``pending`` or ``sending``)."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s AND direction = 'outbound' "
            "AND status IN ('pending', 'sending') ORDER BY created_at, idempotency_key, id LIMIT 1",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return self._state(row) if row else None

    async def start(self, tenant_id: str, message_id: str) -> tuple[set[int], dict[str, Any]] | None:
        """Claim a message for sending (``sending``); ``None`` if it is no longer ``pending`` or ``sending``.

        Returns the parts already handed to the provider (a re-run sends only the
        others) and the metadata of the inbound message the reply answers (the last
        one of its conversation stored before it).
        """
        row = await self._one(
            "WITH claimed AS (UPDATE messages SET status = 'sending', updated_at = now() WHERE tenant_id = %(tenant)s "
            "AND id = %(id)s AND direction = 'outbound' AND status IN ('pending', 'sending') "
            "RETURNING id, conversation_id, created_at) "
            "SELECT c.id, (SELECT coalesce(array_agg(p.part), '{}') FROM message_parts p WHERE p.message_id = c.id) "
            "AS parts, (SELECT m.metadata FROM messages m WHERE m.tenant_id = %(tenant)s "
            "AND m.conversation_id = c.conversation_id AND m.direction = 'inbound' AND m.created_at <= c.created_at "
            "ORDER BY m.created_at DESC, m.id DESC LIMIT 1) AS reply_to FROM claimed c",
            {"tenant": as_uuid(tenant_id), "id": as_uuid(message_id)},
        )
        if row is None:
            return None
        return {int(p) for p in row["parts"]}, dict(row["reply_to"] or {})

    async def add_part(
        self, tenant_id: str, message_id: str, part: int, *, channel: str, provider_id: str | None
    ) -> None:
        """Record that one part of a message was handed to the provider, with the provider's id for it."""
        await self._one(
            "INSERT INTO message_parts (message_id, part, tenant_id, channel, via, provider_id, status) "
            "SELECT m.id, %(part)s, m.tenant_id, %(channel)s, 'send', %(provider)s, 'sent' FROM messages m "
            "WHERE m.tenant_id = %(tenant)s AND m.id = %(id)s AND m.direction = 'outbound' "
            "ON CONFLICT (message_id, part) DO UPDATE "
            "SET via = 'send', provider_id = coalesce(message_parts.provider_id, EXCLUDED.provider_id) "
            "WHERE message_parts.tenant_id = EXCLUDED.tenant_id RETURNING part",
            {
                "id": as_uuid(message_id),
                "part": part,
                "tenant": as_uuid(tenant_id),
                "channel": channel,
                "provider": provider_id,
            },
        )

    async def finish(self, tenant_id: str, message_id: str) -> bool:
        """Mark a message whose parts were all handed over ``sent`` (or what status reports already say)."""
        row = await self._one(_SETTLE, {"id": as_uuid(message_id), "tenant": as_uuid(tenant_id), "from": ["sending"]})
        return row is not None

    async def fail(self, tenant_id: str, message_id: str, error: str, *, retry_at: datetime | None) -> int:
        """Count a failed attempt: back to ``pending`` until ``retry_at``, or a dead letter (``failed``) without it.

        Returns the number of attempts made so far.
        """
        row = await self._one(
            "UPDATE messages SET attempts = attempts + 1, error = %(error)s, next_attempt_at = %(at)s, "
            "status = CASE WHEN %(at)s::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, updated_at = now() "
            "WHERE tenant_id = %(tenant)s AND id = %(id)s RETURNING attempts",
            {"error": error[:2000], "at": retry_at, "tenant": as_uuid(tenant_id), "id": as_uuid(message_id)},
        )
        return int(row["attempts"]) if row else 0

    async def claim_for_response(self, tenant_id: str, inbound_ids: Sequence[str]) -> list[StoredMessage]:
        """The replies to these inbound messages that go in the provider's response, in order.

        Pending replies are claimed for it (``sent``, with one part ``via response``)
        unless a delivery job took them first; replies claimed by an earlier response
        (a retried webhook) are included again.
        """
        rows = await self._all(
            "WITH turns AS (SELECT DISTINCT turn_id FROM messages WHERE tenant_id = %(tenant)s "
            "AND id = ANY(%(ids)s) AND turn_id IS NOT NULL), "
            "claimed AS (UPDATE messages m SET status = 'sent', updated_at = now() FROM turns t "
            "WHERE m.tenant_id = %(tenant)s AND m.turn_id = t.turn_id AND m.direction = 'outbound' "
            "AND m.status = 'pending' RETURNING m.*), "
            "parts AS (INSERT INTO message_parts (message_id, part, tenant_id, channel, via, status) "
            "SELECT id, 0, tenant_id, channel, 'response', 'sent' FROM claimed ON CONFLICT DO NOTHING) "
            "SELECT * FROM claimed UNION ALL SELECT m.* FROM messages m JOIN turns t ON m.turn_id = t.turn_id "
            "WHERE m.tenant_id = %(tenant)s AND m.direction = 'outbound' AND EXISTS (SELECT 1 FROM message_parts p "
            "WHERE p.message_id = m.id AND p.via = 'response') ORDER BY created_at, idempotency_key",
            {"tenant": as_uuid(tenant_id), "ids": [as_uuid(i) for i in inbound_ids]},
        )
        return [self._state(r).message for r in rows]

    async def apply_report(
        self,
        tenant_id: str,
        bot_id: str,
        channel: str,
        *,
        status: str,
        provider_id: str | None,
        ref: tuple[str, int] | None = None,
        error: str | None = None,
    ) -> str | None:
        """Apply a provider's status report to the part it names; returns the message's id, if found.

        The part is found by ``ref`` (message id and part, from the callback URL) or
        else by the provider's id. Reports never move a part back (``sent`` after
        ``delivered``); the message then takes the worst status of its parts.
        """
        params = {
            "tenant": as_uuid(tenant_id),
            "bot": as_uuid(bot_id),
            "channel": channel,
            "status": status,
            "provider": provider_id,
            "error": error,
            "id": as_uuid(ref[0]) if ref else None,
            "part": ref[1] if ref else None,
            "ranks": _RANKS,
        }
        if ref is not None:
            sql = (
                "INSERT INTO message_parts (message_id, part, tenant_id, channel, via, provider_id, status, error) "
                "SELECT m.id, %(part)s, m.tenant_id, m.channel, CASE WHEN m.status = 'sending' THEN 'send' "
                "ELSE 'response' END, %(provider)s, %(status)s, %(error)s FROM messages m WHERE m.id = %(id)s "
                "AND m.tenant_id = %(tenant)s AND m.bot_id = %(bot)s AND m.channel = %(channel)s "
                "AND m.direction = 'outbound' ON CONFLICT (message_id, part) DO UPDATE SET status = EXCLUDED.status, "
                "error = EXCLUDED.error, provider_id = coalesce(message_parts.provider_id, EXCLUDED.provider_id), "
                "updated_at = now() WHERE array_position(%(ranks)s, EXCLUDED.status) "
                "> array_position(%(ranks)s, message_parts.status) RETURNING message_id"
            )
        else:
            sql = (
                "UPDATE message_parts SET status = %(status)s, error = %(error)s, updated_at = now() "
                "WHERE tenant_id = %(tenant)s AND channel = %(channel)s AND provider_id = %(provider)s "
                "AND array_position(%(ranks)s, %(status)s::text) > array_position(%(ranks)s, status) "
                "RETURNING message_id"
            )
        row = await self._one(sql, params)
        if row is None:
            return None
        message_id = str(row["message_id"])
        await self._one(_SETTLE, {"id": row["message_id"], "tenant": params["tenant"], "from": ["sent", "delivered"]})
        return message_id

    async def dead_letters(self, tenant_id: str, bot_id: str, limit: int = 50) -> list[OutboundState]:
        """A bot's outbound messages that could not be delivered, most recent first."""
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND bot_id = %s AND direction = 'outbound' "
            "AND status IN ('failed', 'undelivered') ORDER BY updated_at DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(bot_id), limit),
        )
        return [self._state(r) for r in rows]

    async def requeue(self, tenant_id: str, message_id: str) -> OutboundState | None:
        """Make a dead letter ``pending`` again (attempts reset, failed parts forgotten); ``None`` if it is not one."""
        row = await self._one(
            "WITH m AS (UPDATE messages SET status = 'pending', attempts = 0, next_attempt_at = NULL, error = NULL, "
            "updated_at = now() WHERE tenant_id = %(tenant)s AND id = %(id)s AND direction = 'outbound' "
            "AND status IN ('failed', 'undelivered') RETURNING *), "
            "gone AS (DELETE FROM message_parts p USING m WHERE p.message_id = m.id "
            "AND p.status IN ('failed', 'undelivered')) SELECT * FROM m",
            {"tenant": as_uuid(tenant_id), "id": as_uuid(message_id)},
        )
        return self._state(row) if row else None

    async def state(self, tenant_id: str, message_id: str) -> OutboundState | None:
        """One outbound message with its delivery state."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND id = %s AND direction = 'outbound'",
            (as_uuid(tenant_id), as_uuid(message_id)),
        )
        return self._state(row) if row else None

    async def tenant_of(self, message_id: str) -> str | None:
        """The tenant a message belongs to (for the operator, who names messages by id alone)."""
        row = await self._one("SELECT tenant_id FROM messages WHERE id = %s", (as_uuid(message_id),))
        return str(row["tenant_id"]) if row else None

    async def unfinished(self, channels: Sequence[str], older_than: float, limit: int = 500) -> list[dict[str, Any]]:
        """Conversations of these channels with a turn or a delivery that has waited over ``older_than`` seconds.

        Each row has ``tenant_id``, ``bot_id``, ``conversation_id``, ``direction``
        (``inbound``: a turn to run; ``outbound``: replies to deliver) and
        ``message_id``, the conversation's oldest such message. Messages waiting
        for a back-off are left out.
        """
        rows = await self._all(
            "SELECT DISTINCT ON (conversation_id, direction) tenant_id, bot_id, conversation_id, direction, "
            "id AS message_id FROM messages "
            "WHERE status IN ('received', 'processing', 'pending', 'sending') AND channel = ANY(%s) "
            "AND created_at < now() - make_interval(secs => %s) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
            "ORDER BY conversation_id, direction, created_at, id LIMIT %s",
            (list(channels), older_than, limit),
        )
        return [{k: str(v) for k, v in r.items()} for r in rows]


class ChannelRouteRepository(Repository):
    """What a channel webhook needs first: the bot it names and the bot's setting of one plugin, in one query."""

    def __init__(self, db: Database, settings: PluginSettingRepository) -> None:
        super().__init__(db)
        self.settings = settings
        self._open = functools.lru_cache(maxsize=256)(self._open_secrets)
        self._recent: dict[tuple[str, str], tuple[float, tuple[Bot, PluginSetting | None] | None]] = {}

    def _open_secrets(self, sealed: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = json.loads(self.settings.cipher.decrypt(sealed))
        return opened

    async def find(self, ref: str, plugin: str, *, max_age: float = 0.0) -> tuple[Bot, PluginSetting | None] | None:
        """The bot ``ref`` names (an id or ``tenant-slug/bot-slug``) and its setting of ``plugin``, if any.

        For public routes: the caller authenticates the request itself (a signature).
        With ``max_age``, an answer this process read at most that many seconds ago
        is given again without a query (a busy webhook's bot changes rarely).
        """
        key = (ref, plugin)
        recent = self._recent.get(key)
        if recent is not None and time.monotonic() - recent[0] <= max_age:
            return recent[1]
        found = await self._find(ref, plugin)
        if len(self._recent) >= 10_000:
            self._recent.clear()
        self._recent[key] = (time.monotonic(), found)
        return found

    async def _find(self, ref: str, plugin: str) -> tuple[Bot, PluginSetting | None] | None:
        columns = "b.*, p.enabled AS p_enabled, p.config AS p_config, p.secrets AS p_secrets"
        joined = "LEFT JOIN bot_plugins p ON p.tenant_id = b.tenant_id AND p.bot_id = b.id AND p.plugin = %s"
        if "/" in ref:
            tenant_slug, _, bot_slug = ref.partition("/")
            row = await self._one(
                f"SELECT {columns} FROM bots b JOIN tenants t ON t.id = b.tenant_id {joined} "  # noqa: S608 - constants
                "WHERE t.slug = %s AND b.slug = %s",
                (plugin, tenant_slug, bot_slug),
            )
        else:
            row = await self._one(
                f"SELECT {columns} FROM bots b {joined} WHERE b.id = %s",  # noqa: S608 - constants
                (plugin, as_uuid(ref)),
            )
        if row is None:
            return None
        enabled, config, sealed = row.pop("p_enabled"), row.pop("p_config"), row.pop("p_secrets")
        setting = None
        if enabled is not None:  # secrets decrypted once per stored version (a webhook's hot path)
            secrets = self._open(bytes(sealed)) if sealed else {}
            setting = PluginSetting(plugin=plugin, enabled=enabled, config={**(config or {}), **secrets})
        return BotRepository._bot(row), setting


class ChannelPollRepository(Repository):
    """Bookmarks of polling channels (an IMAP mailbox): where each bot's last poll left off."""

    async def enabled_bots(self, plugin: str) -> list[tuple[str, str]]:
        """``(tenant id, bot id)`` of every bot, of every tenant, that enabled ``plugin``."""
        rows = await self._all(
            "SELECT tenant_id, bot_id FROM bot_plugins WHERE plugin = %s AND enabled ORDER BY tenant_id, bot_id",
            (plugin,),
        )
        return [(str(r["tenant_id"]), str(r["bot_id"])) for r in rows]

    async def cursor(self, tenant_id: str, bot_id: str, channel: str) -> dict[str, Any]:
        """The bookmark the bot's last poll of ``channel`` stored; ``{}`` before the first."""
        row = await self._one(
            "SELECT cursor FROM channel_polls WHERE tenant_id = %s AND bot_id = %s AND channel = %s",
            (as_uuid(tenant_id), as_uuid(bot_id), channel),
        )
        return dict(row["cursor"]) if row else {}

    async def save(
        self, tenant_id: str, bot_id: str, channel: str, cursor: Mapping[str, Any] | None, error: str | None = None
    ) -> bool:
        """Record a poll: its new bookmark (``None`` keeps the old one, after a failure) and its error, if any."""
        row = await self._one(
            "INSERT INTO channel_polls (bot_id, channel, tenant_id, cursor, error) "
            "SELECT b.id, %(channel)s, b.tenant_id, coalesce(%(cursor)s::jsonb, '{}'), %(error)s FROM bots b "
            "WHERE b.tenant_id = %(tenant)s AND b.id = %(bot)s "
            "ON CONFLICT (bot_id, channel) DO UPDATE SET cursor = coalesce(%(cursor)s::jsonb, channel_polls.cursor), "
            "polled_at = now(), error = EXCLUDED.error WHERE channel_polls.tenant_id = EXCLUDED.tenant_id "
            "RETURNING bot_id",
            {
                "tenant": as_uuid(tenant_id),
                "bot": as_uuid(bot_id),
                "channel": channel,
                "cursor": None if cursor is None else json.dumps(dict(cursor)),
                "error": error,
            },
        )
        return row is not None
