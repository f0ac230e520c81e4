"""A push channel's message stored and its turn queued in one statement (the webhook's acknowledgement path)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import msgspec
from psycopg import sql

from botloom.core.domain import StoredMessage
from botloom.core.messages import Attachment, InboundMessage
from botloom.core.storage.repositories.base import Repository
from botloom.core.storage.repositories.messages import RECEIVE_CTES, receive_params

# The conversation and message parts are MessageRepository.receive's (RECEIVE_CTES: the same rows,
# tests/test_inbound_store.py compares them); the job is the queue's own row (JobQueue.job_row), keyed by
# the new message's id and naming its conversation, inserted only when the message is new; pg_notify wakes
# the workers when the transaction commits.
_RECEIVE_AND_QUEUE = ", ".join(
    (
        RECEIVE_CTES,
        "job AS (INSERT INTO {jobs} (key, job, queue, status, priority, scheduled) "
        "SELECT %(job_key)s || m.id::text, convert_to(jsonb_set(jsonb_set(convert_from(%(job)s, 'UTF8')::jsonb, "
        "'{{key}}', to_jsonb(%(job_key)s || m.id::text)), '{{kwargs,conversation_id}}', "
        "to_jsonb(m.conversation_id::text))::text, 'UTF8'), %(queue)s, %(status)s, %(priority)s, %(scheduled)s "
        "FROM message m ON CONFLICT (key) DO NOTHING RETURNING 1), "
        "notified AS (SELECT pg_notify(%(notify_channel)s, %(notify_event)s) FROM job) "
        "SELECT m.id, m.conversation_id, (SELECT count(*) FROM notified) AS queued FROM message m",
    )
)


@functools.cache
def _statement(jobs_table: str) -> bytes:
    """The statement for the queue's jobs table (``jobs_table`` quoted already: ``JobQueue.job_row``'s).

    As bytes, composed once: psycopg converts a ``Composed`` again on every execution (3% of a
    webhook's server CPU), a ``bytes`` query once per connection's cache.
    """
    return sql.SQL(_RECEIVE_AND_QUEUE).format(jobs=sql.SQL(jobs_table)).as_bytes()  # quoted by JobQueue.job_row


def _stored(
    tenant_id: str, bot_id: str, message: InboundMessage, params: Mapping[str, Any], row: Mapping[str, Any]
) -> StoredMessage:
    """The row the statement inserted, from what it was given and the id and conversation it returned.

    What ``row_to_json`` of the row would give (the JSON columns as they were stored, decoded again),
    without PostgreSQL encoding the whole row and the server decoding it again on every webhook.
    """
    return StoredMessage(
        id=str(row["id"]),
        tenant_id=tenant_id,
        bot_id=bot_id,
        conversation_id=str(row["conversation_id"]),
        direction="inbound",
        channel=params["channel"],
        text=params["text"],
        status="received",
        idempotency_key=params["idempotency"],
        attachments=msgspec.json.decode(params["attachments"], type=tuple[Attachment, ...]),
        metadata=msgspec.json.decode(params["metadata"]),
        created_at=message.received_at,
    )


class InboundRepository(Repository):
    """Stores a push channel's new message together with its turn's job (PostgreSQL queue only)."""

    async def receive_and_queue(
        self, tenant_id: str, bot_id: str, message: InboundMessage, *, state_version: int, job: Mapping[str, Any]
    ) -> tuple[StoredMessage, bool] | None:
        """Store ``message`` as ``MessageRepository.receive`` does and, when it is new, queue ``job`` with it.

        ``job`` is :meth:`~botloom.runtime.queue.JobQueue.job_row`'s row with an empty key
        (its key prefix) and an empty ``conversation_id`` argument: the statement keys it
        by the new message's id and names the message's conversation. Both commit
        together, or neither. Returns the stored message and whether its job was queued,
        or ``None`` when the message was not new (its idempotency key was seen before) or
        the bot does not exist: the caller takes the general path then.
        """
        params = receive_params(tenant_id, bot_id, message, state_version)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                _statement(job["table"]),
                {
                    **params,
                    "job_key": job["key"],
                    "job": job["job"],
                    "queue": job["queue"],
                    "status": job["status"],
                    "priority": job["priority"],
                    "scheduled": job["scheduled"],
                    "notify_channel": job["channel"],
                    "notify_event": job["event"],
                },
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return _stored(tenant_id, bot_id, message, params, row), bool(row["queued"])
