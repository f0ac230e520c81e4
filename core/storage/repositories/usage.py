"""Token usage of language-model and embedding calls, per tenant and bot."""

from __future__ import annotations

from botloom.core.domain import UsageEvent
from botloom.core.storage.repositories.base import Repository, as_uuid


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
