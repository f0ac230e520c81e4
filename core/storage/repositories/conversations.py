"""Conversations between end users and bots: creation, status, state version, retention marks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from botloom.core.domain import Conversation
from botloom.core.statuses import ConversationStatus
from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct


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
                    return to_struct(Conversation, row)
                cur = await conn.execute(
                    "INSERT INTO conversations (tenant_id, bot_id, channel, external_key, user_ref, state_version) "
                    "SELECT b.tenant_id, b.id, %s, %s, %s, %s FROM bots b WHERE b.tenant_id = %s AND b.id = %s "
                    "ON CONFLICT DO NOTHING RETURNING *",
                    (channel, external_key, user, state_version, *params[:2]),
                )
                row = await cur.fetchone()
                if row:
                    return to_struct(Conversation, row)
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
        return to_struct(Conversation, row)

    async def get(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        """The tenant's conversation with this id."""
        row = await self._one(
            "SELECT * FROM conversations WHERE tenant_id = %s AND id = %s",
            (as_uuid(tenant_id), as_uuid(conversation_id)),
        )
        return to_struct(Conversation, row) if row else None

    async def list_all(self, tenant_id: str, bot_id: str | None = None, limit: int = 50) -> list[Conversation]:
        """The tenant's conversations, most recently active first."""
        if bot_id is not None and as_uuid(bot_id) is None:
            return []
        rows = await self._all(
            "SELECT * FROM conversations WHERE tenant_id = %s AND (%s::uuid IS NULL OR bot_id = %s) "
            "ORDER BY updated_at DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(bot_id), as_uuid(bot_id), limit),
        )
        return [to_struct(Conversation, r) for r in rows]

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

    async def mark(self, tenant_id: str, conversation_ids: Sequence[str], what: Literal["pruned", "archived"]) -> None:
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
