"""The transcript: inbound and outbound messages, their idempotency and their turn's progress."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict, Unpack

import msgspec

from botloom.core.domain import Conversation, StoredMessage
from botloom.core.messages import InboundMessage
from botloom.core.statuses import InboundStatus, MessageDirection, MessageStatus, OutboundStatus
from botloom.core.storage.repositories.base import Repository, as_uuid, to_struct

PENDING_SQL = (
    "WITH c AS (SELECT * FROM conversations WHERE tenant_id = %(tenant)s AND id = %(conversation)s), "
    "p AS (SELECT m.* FROM messages m WHERE m.tenant_id = %(tenant)s AND m.conversation_id = %(conversation)s "
    "AND m.direction = 'inbound' AND m.status IN ('received', 'processing')), "
    "k AS (UPDATE messages SET status = 'processing', updated_at = now() "
    "WHERE tenant_id = %(tenant)s AND id IN (SELECT id FROM p ORDER BY created_at, id LIMIT %(claim)s) "
    "AND EXISTS (SELECT 1 FROM c WHERE c.status IS DISTINCT FROM %(unless)s) RETURNING id) "
    "SELECT (SELECT row_to_json(c) FROM c) AS conversation, "
    "(SELECT json_agg(row_to_json(p) ORDER BY p.created_at, p.id) FROM p) AS pending, "
    "(SELECT count(*) FROM k) AS claimed"
)
"""A conversation, its pending inbound messages as they were, and the claim of the oldest ``claim`` of them."""
WAITING_SQL = (
    "SELECT 1 FROM messages WHERE tenant_id = %(tenant)s AND conversation_id = %(conversation)s "
    "AND direction = 'inbound' AND status IN ('received', 'processing')"
)
"""Whether an inbound message of a conversation waits for a turn (its parameters: :func:`waiting_params`)."""


def waiting_params(tenant_id: str, conversation_id: str) -> dict[str, Any]:
    """The parameters of :data:`WAITING_SQL`."""
    return {"tenant": as_uuid(tenant_id), "conversation": as_uuid(conversation_id)}


def _pending_params(
    tenant_id: str, conversation_id: str, claim: int | Literal["all"], unless_status: str | None
) -> dict[str, Any]:
    return {
        "tenant": as_uuid(tenant_id),
        "conversation": as_uuid(conversation_id),
        "claim": None if claim == "all" else claim,
        "unless": unless_status,
    }


def _pending_of(row: Mapping[str, Any] | None) -> tuple[Conversation | None, list[StoredMessage]]:
    if row is None or row["conversation"] is None:
        return None, []
    pending = [to_struct(StoredMessage, m) for m in row["pending"] or []]
    return to_struct(Conversation, row["conversation"]), pending


STORE_TURN_SQL = (
    "WITH c AS (UPDATE conversations SET updated_at = now() WHERE tenant_id = %(tenant)s "
    "AND id = %(conversation)s RETURNING *), "
    "r AS (INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
    "idempotency_key, metadata, turn_id) SELECT c.tenant_id, c.bot_id, c.id, 'outbound', %(channel)s, "
    "t.text, %(status)s, t.key, '{}'::jsonb, %(turn)s FROM c, "
    "unnest(%(texts)s::text[], %(keys)s::text[]) WITH ORDINALITY AS t(text, key, n) ORDER BY t.n "
    "ON CONFLICT (bot_id, channel, direction, idempotency_key) DO NOTHING RETURNING *), "
    "f AS (UPDATE messages SET status = u.status, turn_id = %(turn)s, "
    "metadata = messages.metadata || jsonb_build_object('outcome', %(outcome)s::jsonb), updated_at = now() "
    "FROM unnest(%(ids)s::uuid[], %(statuses)s::text[]) AS u(id, status), c "
    "WHERE messages.tenant_id = c.tenant_id AND messages.id = u.id RETURNING messages.id), "
    "existing AS (SELECT m.* FROM messages m, c WHERE m.tenant_id = c.tenant_id AND m.bot_id = c.bot_id "
    "AND m.channel = %(channel)s AND m.direction = 'outbound' AND m.idempotency_key = ANY(%(keys)s::text[])) "
    "SELECT (SELECT row_to_json(c) FROM c) AS conversation, "
    "(SELECT json_agg(row_to_json(x) ORDER BY x.idempotency_key) FROM "
    "(SELECT * FROM r UNION ALL SELECT * FROM existing) x) AS replies, "
    "(SELECT json_agg(row_to_json(p) ORDER BY p.created_at, p.id) FROM messages p, c "
    "WHERE p.tenant_id = c.tenant_id AND p.conversation_id = c.id AND p.direction = 'inbound' "
    "AND p.status IN ('received', 'processing') AND p.id <> ALL(%(ids)s::uuid[])) AS pending, "
    "(SELECT count(*) FROM f) AS finished"
)
"""A turn's end (:meth:`MessageRepository.store_turn`): replies stored, messages finished, what still waits."""


class TurnEnd(TypedDict):
    """A turn's end as :meth:`MessageRepository.store_turn` and its pipeline and statement forms take it."""

    channel: str
    turn_id: str
    replies: Sequence[str]
    """The replies' texts, in order; keyed ``{turn_id}:{index:03d}``."""
    status: OutboundStatus
    """The replies' status as stored."""
    finished: Sequence[tuple[str, InboundStatus]]
    """``(message id, status)`` of each inbound message the turn finished."""
    outcome: Mapping[str, Any]


def _store_turn_params(tenant_id: str, conversation_id: str, end: TurnEnd) -> dict[str, Any]:
    turn = end["turn_id"]
    keys = [f"{turn}:{index:03d}" for index in range(len(end["replies"]))]
    return {
        "tenant": as_uuid(tenant_id),
        "conversation": as_uuid(conversation_id),
        "channel": end["channel"],
        "status": end["status"],
        "turn": as_uuid(turn),
        "texts": list(end["replies"]),
        "keys": keys,
        "ids": [as_uuid(message_id) for message_id, _ in end["finished"]],
        "statuses": [finished_status for _, finished_status in end["finished"]],
        "outcome": json.dumps(dict(end["outcome"])),
    }


def store_turn_statement(tenant_id: str, conversation_id: str, **end: Unpack[TurnEnd]) -> tuple[str, dict[str, Any]]:
    """:meth:`MessageRepository.store_turn`'s statement and parameters, for a caller that sends it with others.

    Read its row with :func:`stored_turn`.
    """
    return STORE_TURN_SQL, _store_turn_params(tenant_id, conversation_id, end)


def stored_turn(
    row: Mapping[str, Any] | None, conversation_id: str
) -> tuple[list[StoredMessage], Conversation, list[StoredMessage]]:
    """The replies, the conversation and what still waits, from the row of :func:`store_turn_statement`."""
    return _store_turn_of(row, conversation_id)


def _store_turn_of(
    row: Mapping[str, Any] | None, conversation_id: str
) -> tuple[list[StoredMessage], Conversation, list[StoredMessage]]:
    if row is None or row["conversation"] is None:
        raise LookupError(f"conversation {conversation_id} not found")
    stored = [to_struct(StoredMessage, m) for m in row["replies"] or []]
    pending = [to_struct(StoredMessage, m) for m in row["pending"] or []]
    return stored, to_struct(Conversation, row["conversation"]), pending


RECEIVE_CTES = (
    "WITH conversation AS (INSERT INTO conversations (tenant_id, bot_id, channel, external_key, user_ref, "
    "state_version) SELECT b.tenant_id, b.id, %(channel)s, %(key)s, %(user)s, %(version)s FROM bots b "
    "WHERE b.tenant_id = %(tenant)s AND b.id = %(bot)s "
    "ON CONFLICT (bot_id, channel, external_key) WHERE status <> 'closed' "
    "DO UPDATE SET updated_at = now() RETURNING *), "
    "message AS (INSERT INTO messages (tenant_id, bot_id, conversation_id, direction, channel, text, status, "
    "idempotency_key, attachments, metadata, created_at) SELECT c.tenant_id, c.bot_id, c.id, 'inbound', "
    "%(channel)s, %(text)s, 'received', %(idempotency)s, %(attachments)s, %(metadata)s, %(at)s "
    "FROM conversation c ON CONFLICT (bot_id, channel, direction, idempotency_key) DO NOTHING RETURNING *)"
)
"""The conversation (created, or touched) and the new message of :meth:`MessageRepository.receive`.

``InboundRepository.receive_and_queue`` adds the turn's job to the same statement.
"""


def receive_params(tenant_id: str, bot_id: str, message: InboundMessage, state_version: int) -> dict[str, Any]:
    """The parameters of :data:`RECEIVE_CTES`."""
    return {
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
    }


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
            return to_struct(StoredMessage, row), True
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
        status: OutboundStatus = "pending",
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
            return to_struct(StoredMessage, row), True
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
        self, tenant_id: str, bot_id: str, channel: str, direction: MessageDirection, idempotency_key: str
    ) -> StoredMessage | None:
        """The message with this idempotency key."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND bot_id = %s AND channel = %s AND direction = %s "
            "AND idempotency_key = %s",
            (as_uuid(tenant_id), as_uuid(bot_id), channel, direction, idempotency_key),
        )
        return to_struct(StoredMessage, row) if row else None

    async def get(self, tenant_id: str, message_id: str) -> StoredMessage | None:
        """One message of the tenant."""
        row = await self._one(
            "SELECT * FROM messages WHERE tenant_id = %s AND id = %s", (as_uuid(tenant_id), as_uuid(message_id))
        )
        return to_struct(StoredMessage, row) if row else None

    async def list_all(self, tenant_id: str, conversation_id: str, limit: int = 500) -> list[StoredMessage]:
        """A conversation's messages in the order they were stored."""
        rows = await self._all(
            "SELECT * FROM messages WHERE tenant_id = %s AND conversation_id = %s ORDER BY created_at, id LIMIT %s",
            (as_uuid(tenant_id), as_uuid(conversation_id), limit),
        )
        return [to_struct(StoredMessage, r) for r in rows]

    async def set_status(
        self,
        tenant_id: str,
        message_id: str,
        status: MessageStatus,
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
        return [to_struct(StoredMessage, r) for r in rows]

    async def claim(
        self, tenant_id: str, message_id: str, status: MessageStatus, *, expected: Sequence[MessageStatus]
    ) -> bool:
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
        self, tenant_id: str, message_id: str, status: InboundStatus, *, turn_id: str | None, outcome: Mapping[str, Any]
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
        return [to_struct(StoredMessage, r) for r in rows]

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
            RECEIVE_CTES + " "  # noqa: S608 - constant SQL, values are parameters
            "SELECT (SELECT row_to_json(c) FROM conversation c) AS conversation, "
            "(SELECT row_to_json(m) FROM message m) AS message",
            receive_params(tenant_id, bot_id, message, state_version),
        )
        if row is None or row["conversation"] is None:
            raise LookupError(f"bot {bot_id} not found")
        conversation = to_struct(Conversation, row["conversation"])
        if row["message"] is not None:
            return conversation, to_struct(StoredMessage, row["message"]), True
        assert message.idempotency_key is not None  # without a key, every message is new
        existing = await self.find(tenant_id, bot_id, message.channel, "inbound", message.idempotency_key)
        if existing is None:  # pragma: no cover - the message that conflicted was deleted meanwhile
            raise LookupError(f"message {message.idempotency_key!r} not found")
        return conversation, existing, False

    async def pending_with_conversation(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        claim: int | Literal["all"] = 0,
        unless_status: str | None = None,
    ) -> tuple[Conversation | None, list[StoredMessage]]:
        """The conversation and its pending inbound messages (as :meth:`pending_inbound`), in one round trip.

        With ``claim`` (a number, or ``"all"``), the same statement also marks that many
        of the oldest pending messages ``processing`` (what a turn does before its graph
        runs), unless the conversation's status is ``unless_status``. The messages are
        returned as they were before the claim: a ``processing`` one was claimed by a
        turn that did not finish (its process died), which the caller runs again.
        """
        row = await self._one(PENDING_SQL, _pending_params(tenant_id, conversation_id, claim, unless_status))
        return _pending_of(row)

    async def queue_pending_with_conversation(
        self,
        conn: Any,
        tenant_id: str,
        conversation_id: str,
        *,
        claim: int | Literal["all"] = 0,
        unless_status: str | None = None,
    ) -> Callable[[], Awaitable[tuple[Conversation | None, list[StoredMessage]]]]:
        """:meth:`pending_with_conversation` sent on ``conn`` in pipeline mode; returns how to read it once synced.

        So a statement queued before it on the same connection (the conversation's
        lock) goes out with it in one round trip, and runs first.
        """
        cur = await conn.execute(PENDING_SQL, _pending_params(tenant_id, conversation_id, claim, unless_status))

        async def read() -> tuple[Conversation | None, list[StoredMessage]]:
            row: dict[str, Any] | None = await cur.fetchone()
            return _pending_of(row)

        return read

    async def release_held(self, tenant_id: str, conversation_id: str, since: datetime) -> int:
        """Inbound messages held for a person (``for_agent``) after ``since`` are the bot's to run again; how many.

        For a conversation whose handover closed at ``since`` but whose bot took it back
        only later: what the user wrote meanwhile was held for nobody.
        """
        rows = await self._all(
            "UPDATE messages SET status = 'received' WHERE tenant_id = %s AND conversation_id = %s "
            "AND direction = 'inbound' AND status = 'for_agent' AND created_at > %s RETURNING id",
            (as_uuid(tenant_id), as_uuid(conversation_id), since),
        )
        return len(rows)

    async def store_turn(
        self, tenant_id: str, conversation_id: str, **end: Unpack[TurnEnd]
    ) -> tuple[list[StoredMessage], Conversation, list[StoredMessage]]:
        """A turn's end in one statement: its replies stored, its inbound messages finished, what waits next.

        The replies are keyed ``{turn_id}:{index:03d}`` and idempotent as
        :meth:`add_outbound` (a re-run of the turn gets the stored ones back); each
        ``(message id, status)`` of ``finished`` is finished as :meth:`finish` does,
        with ``outcome``; the conversation is touched. Returns the replies in order,
        the conversation, and its inbound messages still pending after this turn
        (:meth:`pending_inbound` but for ``finished``). All of it commits together.
        Raises ``LookupError`` when the tenant has no such conversation.
        """
        row = await self._one(
            STORE_TURN_SQL,
            _store_turn_params(tenant_id, conversation_id, end),
        )
        return _store_turn_of(row, conversation_id)

    async def queue_store_turn(
        self, conn: Any, tenant_id: str, conversation_id: str, **end: Unpack[TurnEnd]
    ) -> Callable[[], Awaitable[tuple[list[StoredMessage], Conversation, list[StoredMessage]]]]:
        """:meth:`store_turn` sent on ``conn`` in pipeline mode; returns how to read it once synced.

        So the statements queued around it on the same connection (the turn's checkpoint
        write, in one transaction with it) go out with it in one round trip.
        """
        cur = await conn.execute(
            STORE_TURN_SQL,
            _store_turn_params(tenant_id, conversation_id, end),
        )

        async def read() -> tuple[list[StoredMessage], Conversation, list[StoredMessage]]:
            row: dict[str, Any] | None = await cur.fetchone()
            return _store_turn_of(row, conversation_id)

        return read
