"""Dead letters: replies a push channel could not deliver, listed per bot and sent again on request.

``GET /api/v1/bots/{bot}/dead-letters`` lists them (status ``failed`` after the
last attempt, or ``undelivered``/``failed`` as the provider reported), with the
error and the number of attempts; ``POST /api/v1/messages/{id}/retry`` queues one
for delivery again (202), from its first part not yet delivered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import get, post
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from botloom.core.statuses import DEAD_LETTER
from botloom.core.storage.repositories import OutboundState
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, BotRef, ConflictException, IdRef
from botloom.server.auth import visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep

DEAD = DEAD_LETTER


class DeadLetterOut(msgspec.Struct, frozen=True, kw_only=True):
    """An outbound message that was not delivered, and why."""

    id: str
    conversation_id: str
    channel: str
    text: str
    status: str
    """``failed`` (botloom gave up, or the provider did) or ``undelivered`` (the provider could not deliver it);
    ``pending`` again once retried."""
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, state: OutboundState) -> DeadLetterOut:
        """The answer for a message's delivery state."""
        message = state.message
        return cls(
            id=message.id,
            conversation_id=message.conversation_id,
            channel=message.channel,
            text=message.text,
            status=message.status,
            error=state.error,
            attempts=state.attempts,
            created_at=message.created_at,
            updated_at=state.updated_at,
        )


@get(
    "/bots/{bot:str}/dead-letters", summary="List a bot's undelivered replies", tags=["deliveries"], raises=READ_ERRORS
)
async def list_dead_letters(
    bot: BotRef,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, QueryParameter(ge=1, le=500, description="How many at most")] = 50,
) -> list[DeadLetterOut]:
    """The bot's replies that could not be delivered, most recently failed first."""
    found = await visible_bot(services, principal, bot)
    rows = await services.deliveries.parts.dead_letters(found.tenant_id, found.id, limit=limit)
    return [DeadLetterOut.of(r) for r in rows]


@post(
    "/messages/{message_id:str}/retry",
    summary="Deliver an undelivered reply again",
    tags=["deliveries"],
    status_code=HTTP_202_ACCEPTED,
    raises=[*WRITE_ERRORS, ConflictException],
)
async def retry_message(message_id: IdRef, principal: PrincipalDep, services: ServicesDep) -> DeadLetterOut:
    """Queue a dead letter for delivery again (attempts start over); 409 when the message is not a dead letter."""
    parts = services.deliveries.parts
    tenant_id = principal.tenant_id or await parts.tenant_of(message_id)
    state = await parts.state(tenant_id, message_id) if tenant_id else None
    if state is None:
        raise NotFoundException(f"no outbound message {message_id!r}")
    if state.message.status not in DEAD:
        raise ConflictException(f"message {message_id} is not a dead letter (its status is {state.message.status!r})")
    retried = await services.deliveries.retry(state.message.tenant_id, message_id)
    if retried is None:  # delivered or retried by someone else meanwhile
        raise ConflictException(f"message {message_id} is not a dead letter any more")
    return DeadLetterOut.of(retried)


DELIVERY_HANDLERS = [list_dead_letters, retry_message]
