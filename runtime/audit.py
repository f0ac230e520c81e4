"""The audit log's recorder: every administrative change, with who made it, in the change's own transaction.

How to record an action (``docs/audit.md`` lists them)::

    from botloom.runtime.audit import Actor, record

    async with services.store.db.transaction():       # the change and its row commit together
        budget = await services.store.budgets.put(...)  # any repository call joins the transaction
        await record(services, actor, "budget.updated", tenant_id=tenant.id,
                     target=("tenant", tenant.id), details={"fields": ["monthly_usd"]})

``actor`` is who asked: in an API handler ``botloom.server.api.audit.actor_of(principal)``
(the operator, a tenant's API key by id, or an agent by id, with the request's id);
:data:`SYSTEM` for botloom's own jobs. A failing :func:`record` raises, so the change
rolls back with it; a change that fails leaves no row. Where a change spans several
transactions (a contact's erasure goes conversation by conversation), record it in the
first one that changes something, or before it, and say so in ``docs/audit.md``.

``details`` names what changed (field names, counts, a slug), never a value that is a
secret (a plugin's API key, a password, a token), an end user's address or a message's
text: the rows outlive a contact's erasure and are kept ``BOTLOOM_AUDIT_RETENTION_DAYS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from botloom.core.storage.database import Connection
from botloom.core.storage.repositories.audit import AuditEntry
from botloom.runtime.services import Services

PrincipalKind = Literal["operator", "api_key", "agent", "system"]

ACTIONS = (
    "tenant.created",
    "tenant.deleted",
    "api_key.created",
    "api_key.revoked",
    "bot.created",
    "bot.updated",
    "bot.deleted",
    "plugin.configured",
    "agent.created",
    "agent.updated",
    "agent.deleted",
    "team.updated",
    "team.deleted",
    "canned_response.created",
    "canned_response.updated",
    "canned_response.deleted",
    "contact.exported",
    "contact.erased",
    "conversation.erased",
    "synonyms.updated",
    "intent_example.created",
    "intent_example.deleted",
    "knowledge.ingested",
    "knowledge.deleted",
    "budget.updated",
    "budget.deleted",
    "webhook.created",
    "webhook.deleted",
)
"""The actions botloom records so far (other modules may record more: a name is ``noun.verb``)."""

AUDIT_RETENTION_DEFAULT = 400
"""Days an audit row is kept by default (``BOTLOOM_AUDIT_RETENTION_DAYS``)."""


@dataclass(frozen=True)
class Actor:
    """Who made a change: never a secret, only a kind and an id."""

    kind: PrincipalKind
    id: str | None = None
    """The API key's or the agent's id; ``None`` for the operator and for botloom itself."""
    request_id: str | None = None
    """The id of the HTTP request that made the change (``X-Request-ID``), if any."""


SYSTEM = Actor("system")
"""botloom itself (a scheduled job)."""


async def record(
    services: Services,
    actor: Actor,
    action: str,
    *,
    tenant_id: str | None,
    target: tuple[str, str | None],
    details: Mapping[str, Any] | None = None,
    conn: Connection | None = None,
) -> int:
    """Append one audit row; its id. Call it inside the change's ``services.store.db.transaction()`` block.

    ``target``: what was changed, as (kind, id), e.g. ``("bot", bot.id)``. ``conn``: a
    connection whose transaction to write in, for a change made on a connection of its
    own (otherwise the joined ``Database.transaction()``, or a connection of its own).
    """
    return await services.store.audit.append(
        tenant_id=tenant_id,
        principal_kind=actor.kind,
        principal_id=actor.id,
        action=action,
        target_kind=target[0],
        target_id=target[1],
        request_id=actor.request_id,
        details=dict(details or {}),
        conn=conn,
    )


def retention_days(services: Services) -> int:
    """Days audit rows are kept (``BOTLOOM_AUDIT_RETENTION_DAYS``)."""
    return services.settings.audit_retention_days


async def prune(services: Services, batch: int = 5000) -> int:
    """Delete the audit rows older than the retention setting, a batch at a time; how many."""
    days, total = retention_days(services), 0
    while True:
        gone = await services.store.audit.prune(days, batch)
        total += gone
        if gone < batch:
            return total


__all__ = ["ACTIONS", "AUDIT_RETENTION_DEFAULT", "SYSTEM", "Actor", "AuditEntry", "PrincipalKind", "prune", "record"]
