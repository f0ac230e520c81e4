"""What a turn did: its id, its status and its result, as the runner, the channels and the tests see them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from botloom.core.domain import ConversationStatus, StoredMessage
from botloom.core.statuses import InboundStatus, TurnStatus

TURN_NAMESPACE = uuid.UUID("6f0b7a52-4b8e-4a39-9a57-3c1f7f0e2b11")


def turn_id_for(message_id: str) -> str:
    """The id of the turn that answers the inbound message ``message_id`` (stable across re-runs)."""
    return str(uuid.uuid5(TURN_NAMESPACE, message_id))


class TurnOutage(Exception):
    """A turn could not run because PostgreSQL or Redis went away: run it again, do not answer it."""


@dataclass
class TurnResult:
    """What a turn did: the replies stored for delivery and how the turn ended."""

    conversation_id: str
    message_id: str | None
    turn_id: str | None
    replies: list[StoredMessage] = field(default_factory=list)
    intent: str | None = None
    confidence: float = 0.0
    duplicate: bool = False
    errors: list[str] = field(default_factory=list)
    status: InboundStatus = "answered"
    """A :data:`TurnStatus` (a stored result may carry any inbound status)."""
    conversation_status: ConversationStatus = "open"
    """The conversation's status when the turn ended (see :mod:`botloom.runtime.handover`)."""

    @property
    def escalated(self) -> bool:
        """Whether the conversation was with a person when the turn ended (derived from its status)."""
        return self.conversation_status == "escalated"

    def outcome(self) -> dict[str, Any]:
        """What is recorded with the inbound messages the turn answered."""
        return {
            "intent": self.intent,
            "confidence": self.confidence,
            "escalated": self.escalated,
            "errors": self.errors,
        }


__all__ = ["TURN_NAMESPACE", "TurnOutage", "TurnResult", "TurnStatus", "turn_id_for"]
