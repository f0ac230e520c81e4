"""A push channel's message stored and its turn queued in one statement (the webhook's acknowledgement path)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from psycopg import sql

from botloom.core.domain import StoredMessage
from botloom.core.errors import is_transient
from botloom.core.messages import Attachment, InboundMessage
from botloom.core.storage.repositories.base import Repository, as_uuid
from botloom.core.storage.repositories.messages import RECEIVE_CTES, receive_params

logger = logging.getLogger(__name__)

INBOX_CHANNEL = "botloom_webhook_inbox"
"""The ``NOTIFY`` channel that wakes the workers' ingest when a webhook stored a message in the inbox."""
INBOX_MAX_ATTEMPTS = 10
"""An inbox row whose ingest failed (not an outage: a bug) this many times is left alone, logged, for an operator."""

# One row, keyed on the channel's message id; the notification wakes a worker's ingest when the row commits.
_TO_INBOX = (
    b"WITH row AS (INSERT INTO webhook_inbox (tenant_id, bot_id, channel, idempotency_key, message, received_at) "
    b"VALUES (%(tenant)s, %(bot)s, %(channel)s, %(key)s, %(message)s, %(at)s) "
    b"ON CONFLICT (bot_id, channel, idempotency_key) DO NOTHING RETURNING 1) "
    b"SELECT pg_notify(%(notify)s, %(channel)s) FROM row"
)
_TAKE_INBOX = (
    "SELECT id, tenant_id, bot_id, message, attempts FROM webhook_inbox WHERE attempts < %(attempts)s "
    "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)


class InboxRow(msgspec.Struct, frozen=True):
    """A message a webhook stored in the inbox, not yet turned into its conversation, message and turn."""

    id: int
    tenant_id: str
    bot_id: str
    message: InboundMessage
    attempts: int


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

    async def to_inbox(self, tenant_id: str, bot_id: str, message: InboundMessage) -> bool:
        """Store ``message`` durably in the webhook inbox, in one row; whether it is new there.

        A message whose channel message id (``idempotency_key``) waits in the inbox
        already is dropped (``False``). One that was ingested already is stored again
        here, and its ingest finds the stored message (a retried delivery). Raises
        ``psycopg.IntegrityError`` when the bot is not the tenant's.
        """
        async with self.db.connection() as conn:
            cur = await conn.execute(
                _TO_INBOX,
                {
                    "tenant": as_uuid(tenant_id),
                    "bot": as_uuid(bot_id),
                    "channel": message.channel,
                    "key": message.idempotency_key,
                    "message": msgspec.json.encode(message),
                    "at": message.received_at,
                    "notify": INBOX_CHANNEL,
                },
            )
            return await cur.fetchone() is not None

    async def ingest_inbox(self, ingest: Callable[[InboxRow], Awaitable[bool]], *, limit: int = 50) -> int:
        """Take up to ``limit`` inbox rows (every tenant's) and ``ingest`` each; how many rows were taken.

        The rows stay locked (``FOR UPDATE SKIP LOCKED``: other workers take others)
        in a transaction until every row was ingested; a row whose ``ingest`` returned
        ``True`` is deleted when it commits. ``ingest`` stores on its own connections
        and is idempotent, so a worker that dies here leaves the rows to the next
        ingest, which finds what was stored already. An ``ingest`` that raises an
        outage (``is_transient``) rolls the batch back; any other error counts an
        attempt on its row (one past :data:`INBOX_MAX_ATTEMPTS` is left alone, logged).
        """
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(_TAKE_INBOX, {"attempts": INBOX_MAX_ATTEMPTS, "limit": limit})
            rows = await cur.fetchall()
            done: list[int] = []
            failed: list[int] = []
            for row in rows:
                try:
                    item = InboxRow(
                        id=row["id"],
                        tenant_id=str(row["tenant_id"]),
                        bot_id=str(row["bot_id"]),
                        message=msgspec.json.decode(row["message"], type=InboundMessage),
                        attempts=row["attempts"],
                    )
                    ingested = await ingest(item)
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    logger.exception("the webhook inbox's row %s could not be ingested", row["id"])
                    if row["attempts"] + 1 >= INBOX_MAX_ATTEMPTS:
                        logger.error("the webhook inbox's row %s is left alone after its last attempt", row["id"])
                    failed.append(row["id"])
                    continue
                (done if ingested else failed).append(row["id"])
            if done:
                await conn.execute("DELETE FROM webhook_inbox WHERE id = ANY(%(ids)s)", {"ids": done})
            if failed:
                await conn.execute(
                    "UPDATE webhook_inbox SET attempts = attempts + 1 WHERE id = ANY(%(ids)s)", {"ids": failed}
                )
        return len(rows)
