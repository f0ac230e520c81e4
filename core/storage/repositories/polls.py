"""Bookmarks of polling channels (an IMAP mailbox): where each bot's last poll left off."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botloom.core.storage.repositories.base import Repository, as_uuid


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
