"""Debug forks: which tenant, bot and conversation each fork thread belongs to (``docs/debugger-actions.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct


class Fork(msgspec.Struct, frozen=True, kw_only=True):
    """A fork of one turn of a conversation: its checkpoint thread and the breakpoints it pauses at."""

    id: str
    tenant_id: str
    bot_id: str
    conversation_id: str
    checkpoint_id: str
    """The original turn's checkpoint the fork re-runs."""
    thread_id: str
    """The fork's own LangGraph thread (never the conversation's)."""
    break_before: list[str] = []
    break_after: list[str] = []
    edited: bool = False
    """Whether its state was edited (before the turn or at a breakpoint)."""
    created_at: datetime
    updated_at: datetime


class ForkRepository(Repository):
    """Debug forks, always read and written within one tenant."""

    async def create(  # noqa: PLR0913 - one keyword per column
        self,
        tenant_id: str,
        *,
        fork_id: str,
        bot_id: str,
        conversation_id: str,
        checkpoint_id: str,
        thread_id: str,
        break_before: Sequence[str],
        break_after: Sequence[str],
        edited: bool = False,
    ) -> Fork:
        """Record a new fork of a conversation of ``tenant_id``."""
        row = await self._one(
            "INSERT INTO debug_forks (id, tenant_id, bot_id, conversation_id, checkpoint_id, thread_id, "
            "break_before, break_after, edited) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (
                as_uuid(fork_id),
                as_uuid(tenant_id),
                as_uuid(bot_id),
                as_uuid(conversation_id),
                checkpoint_id,
                thread_id,
                list(break_before),
                list(break_after),
                edited,
            ),
        )
        assert row is not None
        return to_struct(Fork, row)

    async def get(self, tenant_id: str, fork_id: str) -> Fork | None:
        """The fork ``fork_id`` of ``tenant_id``; ``None`` for another tenant's fork or a malformed id."""
        if as_uuid(fork_id) is None:
            return None
        row = await self._one(
            "SELECT * FROM debug_forks WHERE tenant_id = %s AND id = %s", (as_uuid(tenant_id), as_uuid(fork_id))
        )
        return to_struct(Fork, row) if row else None

    async def tenant_of(self, fork_id: str) -> str | None:
        """The tenant a fork belongs to (for the operator, who sees every tenant)."""
        if as_uuid(fork_id) is None:
            return None
        row = await self._one("SELECT tenant_id FROM debug_forks WHERE id = %s", (as_uuid(fork_id),))
        return str(row["tenant_id"]) if row else None

    async def touch(self, tenant_id: str, fork_id: str, *, edited: bool = False) -> None:
        """Note that the fork ran again (``edited``: with its state edited)."""
        await self._one(
            "UPDATE debug_forks SET updated_at = now(), edited = edited OR %s WHERE tenant_id = %s AND id = %s "
            "RETURNING id",
            (edited, as_uuid(tenant_id), as_uuid(fork_id)),
        )

    async def delete(self, tenant_id: str, fork_id: str) -> bool:
        """Forget the fork (its thread's checkpoints are the caller's to delete)."""
        if as_uuid(fork_id) is None:
            return False
        row = await self._one(
            "DELETE FROM debug_forks WHERE tenant_id = %s AND id = %s RETURNING id",
            (as_uuid(tenant_id), as_uuid(fork_id)),
        )
        return row is not None

    async def of_conversation(self, tenant_id: str, conversation_id: str, limit: int = 50) -> list[Fork]:
        """A conversation's forks, newest first."""
        rows = await self._all(
            "SELECT * FROM debug_forks WHERE tenant_id = %s AND conversation_id = %s ORDER BY created_at DESC LIMIT %s",
            (as_uuid(tenant_id), as_uuid(conversation_id), limit),
        )
        return [to_struct(Fork, r) for r in rows]
