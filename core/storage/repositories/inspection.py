"""What the graph debugger reads from botloom's tables: conversations found by filters, transcripts in pages.

Both are keyset-paged (newest first): a page is one index range scan however long
the list or the transcript is, and a page's last row is the cursor of the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from botloom.core.domain import Conversation, StoredMessage
from botloom.core.statuses import ConversationStatus, MessageStatus
from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct

CONVERSATION_STATUSES = frozenset(get_args(ConversationStatus))
MESSAGE_STATUSES = frozenset(get_args(MessageStatus))
STATUS_FILTERS = CONVERSATION_STATUSES | MESSAGE_STATUSES
"""A conversation's own status (``open``, ``escalated``, ``closed``), or a status one of its messages has
(``failed``, ``refused``, ...): the conversation has at least one such message."""


@dataclass(frozen=True)
class ConversationRow:
    """A conversation as the debugger lists it: with its message count and its last message."""

    conversation: Conversation
    messages: int
    last_text: str | None


def _like(text: str) -> str:
    """``text`` as an ``ILIKE`` pattern matching it anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class InspectionRepository(Repository):
    """Reads for the debugger; every one scoped by tenant."""

    async def find_conversations(
        self,
        tenant_id: str,
        bot_id: str,
        *,
        channel: str | None = None,
        status: str | None = None,
        text: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[ConversationRow]:
        """The bot's conversations, most recently active first, after the cursor ``(updated_at, id)``.

        ``status`` is a conversation status or a message status (see :data:`STATUS_FILTERS`);
        ``text`` matches the conversation's channel key, its user or any of its messages.
        """
        if as_uuid(bot_id) is None or (status is not None and status not in STATUS_FILTERS):
            return []
        where = ["c.tenant_id = %(tenant)s", "c.bot_id = %(bot)s"]
        params: dict[str, Any] = {"tenant": as_uuid(tenant_id), "bot": as_uuid(bot_id), "limit": limit}
        if channel:
            where.append("c.channel = %(channel)s")
            params["channel"] = channel
        if status in CONVERSATION_STATUSES:
            where.append("c.status = %(status)s")
            params["status"] = status
        elif status is not None:
            where.append(
                "EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id "
                "AND m.status = %(status)s)"
            )
            params["status"] = status
        if text:
            where.append(
                "(c.external_key ILIKE %(text)s OR c.user_ref ILIKE %(text)s OR EXISTS (SELECT 1 FROM messages m "
                "WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.text ILIKE %(text)s))"
            )
            params["text"] = _like(text)
        if after is not None:
            where.append("(c.updated_at, c.id) < (%(after_at)s, %(after_id)s)")
            params["after_at"], params["after_id"] = after[0], as_uuid(after[1])
        sql = (
            "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count, "  # noqa: S608 - fixed fragments
            "(SELECT m.text FROM messages m WHERE m.conversation_id = c.id ORDER BY m.created_at DESC, m.id DESC "
            "LIMIT 1) AS last_text FROM conversations c WHERE "
            + " AND ".join(where)
            + " ORDER BY c.updated_at DESC, c.id DESC LIMIT %(limit)s"
        )
        rows = await self._all(sql, params)
        found = []
        for row in rows:
            count, last = int(row.pop("message_count")), row.pop("last_text")
            found.append(ConversationRow(to_struct(Conversation, row), count, last))
        return found

    async def transcript_page(
        self, tenant_id: str, conversation_id: str, *, before: tuple[datetime, str] | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        """The conversation's messages before the cursor ``(created_at, id)``, newest first."""
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %(tenant)s AND conversation_id = %(conversation)s "
            "AND (%(at)s::timestamptz IS NULL OR (created_at, id) < (%(at)s, %(id)s)) "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
            {
                "tenant": as_uuid(tenant_id),
                "conversation": as_uuid(conversation_id),
                "at": before[0] if before else None,
                "id": as_uuid(before[1]) if before else None,
                "limit": limit,
            },
        )
        return [to_struct(StoredMessage, r) for r in rows]

    async def turn_messages(self, tenant_id: str, conversation_id: str, turn_id: str) -> list[StoredMessage]:
        """The messages of one turn (what the user sent and what the bot answered), in order."""
        if as_uuid(turn_id) is None:
            return []
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s AND turn_id = %s "
            "ORDER BY created_at, id",
            (as_uuid(tenant_id), as_uuid(conversation_id), as_uuid(turn_id)),
        )
        return [to_struct(StoredMessage, r) for r in rows]
