"""Every status a conversation, a message or a part of a message can have, in one place.

The domain Structs (:mod:`botloom.core.domain`), the repositories' SQL and the
database's CHECK constraints (migrations ``0001``, ``0003`` and ``0008``) use exactly
these values; ``tests/test_storage.py`` fails when a constraint and a type here
disagree. ``docs/architecture.md`` (Statuses) draws how they follow each other.

They are ``Literal`` types rather than enums: a row from psycopg and a field decoded
by msgspec are already these strings, msgspec validates them on the way in, and
mypy checks every place that writes one.

**Conversations** (``conversations.status``, :data:`ConversationStatus`):

==============  ===================================================  ==========================================
status          means                                                set by
==============  ===================================================  ==========================================
``open``        the bot answers its messages (a new conversation)    creation; an agent's hand-back
                                                                     (``runtime/handover.py``)
``escalated``   with a person: the bot does not answer its           a turn whose graph paused in ``escalate``
                messages, an agent does                              (``runtime/handover.py``)
``closed``      over: the user's next message starts a new           retention, after ``close_after_days`` idle
                conversation; its checkpoints are archived           (``runtime/retention.py``)
==============  ===================================================  ==========================================

**Inbound messages** (``messages.status`` where ``direction = 'inbound'``, :data:`InboundStatus`):
``received`` (stored, waiting for its turn) → ``processing`` (its turn runs; a process that
dies leaves it here, and the next holder of the conversation's lock runs it again) → one
final status: ``answered``, ``refused``, ``failed``, ``rejected``, ``for_agent`` (the
outcomes of a turn, :data:`TurnStatus`) or ``merged`` (answered by the turn of an earlier
message of the same burst). ``rejected`` and ``for_agent`` are set straight from
``received``: no turn runs.

**Outbound messages** (``direction = 'outbound'``, :data:`OutboundStatus`): a reply of a
push channel is stored ``pending``; a delivery job claims it (``sending``), hands its parts
to the provider and settles it ``sent``; after its last retryable attempt, or an error that
is not retryable, it is a dead letter: ``failed``. The provider's status reports move it on
to ``delivered``, ``undelivered`` or ``failed``: the message takes the worst status of its
parts (:data:`DeliveryStatus`). A dead letter (:data:`DEAD_LETTER`) can be queued again
(``pending``) through the API. A reply of a response or socket channel (REST, web chat) is
stored ``sent``: the caller of the turn gets it in the answer.
"""

from __future__ import annotations

from typing import Literal, get_args

ConversationStatus = Literal["open", "escalated", "closed"]
"""Whether the bot answers a conversation (``open``), a person does (``escalated``), or it is over (``closed``)."""

TurnStatus = Literal["answered", "refused", "rejected", "for_agent", "failed"]
"""How a turn ended for the inbound message it answered (and so that message's final status).

``answered``: the graph ran and its replies were stored. ``refused``: a moderation hook
refused the message (its refusal's reply, or the bot's fallback, answers). ``rejected``: a
turn of the conversation was running under the ``reject`` burst policy (the busy reply
answers). ``for_agent``: the conversation is with a person, no turn ran. ``failed``: the
graph raised or timed out (the bot's fallback reply answers).
"""

InboundStatus = Literal["received", "processing", "answered", "refused", "rejected", "for_agent", "failed", "merged"]
"""An inbound message's status: ``received`` → ``processing`` → a :data:`TurnStatus`, or ``merged``.

``received``: stored by the inbound path (``runtime/inbound.py``), waiting for its turn.
``processing``: claimed by the turn that runs it (``runtime/turns.py``). ``merged``: a later
message of a burst answered by the turn of the first (``runtime/bursts.py``).
"""

OutboundStatus = Literal["pending", "sending", "sent", "delivered", "undelivered", "failed"]
"""A reply's status: ``pending`` → ``sending`` → ``sent`` → ``delivered`` | ``undelivered`` | ``failed``.

``pending``: stored by a turn, due for delivery (push channels). ``sending``: a delivery job
(``runtime/delivery.py``) claimed it and hands its parts to the provider; a job that dies
leaves it here and the recovery sweep sends the missing parts. ``sent``: every part was
handed over (or it was answered in a response, or on a socket). ``delivered``,
``undelivered``, ``failed``: the worst status the provider reported of its parts; ``failed``
is also a dead letter after the last attempt. A dead letter may be queued again (``pending``).
"""

MessageStatus = Literal[InboundStatus, OutboundStatus]
"""Any message's status (``failed`` is both an inbound and an outbound status)."""

DeliveryStatus = Literal["sent", "delivered", "undelivered", "failed"]
"""A part's status (``message_parts.status``), and what a provider's report says of a part.

``sent``: handed to the provider; ``delivered``: the provider says the user has it;
``undelivered``: the provider gave up (an unreachable number, a full mailbox); ``failed``:
the provider refused or bounced it. Reports never move a part back (:data:`DELIVERY_RANKS`).
"""

PartVia = Literal["send", "response"]
"""How a part left: by a delivery job's ``send``, or in the provider's ``response`` to its webhook."""

MessageDirection = Literal["inbound", "outbound"]
"""From the user to the bot (``inbound``) or back (``outbound``)."""

CONVERSATION_STATUSES: tuple[ConversationStatus, ...] = get_args(ConversationStatus)
TURN_STATUSES: tuple[TurnStatus, ...] = get_args(TurnStatus)
INBOUND_STATUSES: tuple[InboundStatus, ...] = get_args(InboundStatus)
OUTBOUND_STATUSES: tuple[OutboundStatus, ...] = get_args(OutboundStatus)
MESSAGE_STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)

UNFINISHED_INBOUND: tuple[InboundStatus, ...] = ("received", "processing")
"""Inbound statuses of a message whose turn has not finished (the runner's and the recovery sweep's)."""
DUE_OUTBOUND: tuple[OutboundStatus, ...] = ("pending", "sending")
"""Outbound statuses of a reply still to be handed to the provider."""
DEAD_LETTER: tuple[OutboundStatus, ...] = ("failed", "undelivered")
"""Outbound statuses of a reply that did not reach its user: listed and re-queued by the dead-letter API."""
DELIVERY_RANKS: tuple[DeliveryStatus, ...] = ("sent", "delivered", "undelivered", "failed")
"""Order of a part's statuses: a report never moves a part back (``sent`` after ``delivered``). A message
takes the worst of its parts' statuses: ``failed``, else ``undelivered``, else ``delivered`` when every part
is, else ``sent``."""

__all__ = [
    "CONVERSATION_STATUSES",
    "DEAD_LETTER",
    "DELIVERY_RANKS",
    "DELIVERY_STATUSES",
    "DUE_OUTBOUND",
    "INBOUND_STATUSES",
    "MESSAGE_STATUSES",
    "OUTBOUND_STATUSES",
    "TURN_STATUSES",
    "UNFINISHED_INBOUND",
    "ConversationStatus",
    "DeliveryStatus",
    "InboundStatus",
    "MessageDirection",
    "MessageStatus",
    "OutboundStatus",
    "PartVia",
    "TurnStatus",
]
