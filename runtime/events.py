"""Events: every transition the agent desk makes (and anything else botloom reports to a tenant).

:meth:`Events.emit` is the one way in::

    await services.events.emit(tenant_id, "handover.claimed", conversation_id=cid, data={"agent_id": aid})

It stores the event in the outbox (``events``, migration 0010) with one delivery
per webhook endpoint of the tenant that wants its kind, in one transaction; then

* **webhooks** -- a job per event (the ``deliveries`` queue, :meth:`Events.jobs`)
  sends the stream's pending events to the endpoint in order, each signed
  (:func:`botloom.core.signing.sign_request`), retried with back-off until it is
  accepted (2xx) or given up; event n+1 of a conversation is never sent before
  event n was accepted or given up. A cron job (``webhooks_recover``) queues again
  any stream whose job was lost. At least once: receivers de-duplicate by the event id;
* **live updates** -- the event's envelope is published on the tenant's live channel
  (:func:`live_channel`): with Redis (``BOTLOOM_REDIS_URL``) a Redis ``PUBLISH``, as
  Litestar's ``RedisChannelsPubSubBackend`` listens; without it a PostgreSQL
  ``NOTIFY`` in the event's own transaction, as its ``PsycoPgChannelsBackend``
  listens. Either way an event emitted in a worker process reaches the desk
  sockets of every server process.

Kinds are dotted lower-case names (``handover.waiting``, ``handover.claimed``,
``message.user``...); ``data`` is any JSON object.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from botloom.core.signing import EVENT_ID_HEADER, sign_request
from botloom.core.storage.repositories import Store
from botloom.core.storage.repositories.events import Event
from botloom.core.storage.repositories.webhooks import PendingDelivery
from botloom.runtime.queue import JobFunction, JobQueue

logger = logging.getLogger(__name__)

KIND_PATTERN = r"^[a-z][a-z0-9_.]{0,63}$"
NOTIFY_LIMIT = 7000
"""Bytes of a live notice at most (PostgreSQL's NOTIFY takes 8000); a larger event's data is left out."""
RECOVER_CRON = "* * * * *"
"""When ``webhooks_recover`` looks for streams whose delivery job was lost (every minute)."""


def live_channel(tenant_id: str) -> str:
    """The pub/sub channel of a tenant's live events (a valid PostgreSQL identifier and Redis channel)."""
    return f"botloom_live_{uuid.UUID(str(tenant_id)).hex}"


@dataclass(frozen=True)
class WebhookPolicy:
    """How webhooks are sent and retried."""

    attempts: int = 8
    """Attempts of one event before it is given up (and the stream's next event is sent)."""
    first_retry: float = 10.0
    """Seconds before the second attempt; each later wait doubles, up to ``max_retry``."""
    max_retry: float = 3600.0
    timeout: float = 10.0
    """Seconds for the endpoint to answer one attempt."""
    lock_wait: float = 60.0
    """Seconds a job waits for the job already sending the same stream."""
    keep_days: int = 30
    """Days events are kept (for polling and for deliveries still being retried)."""

    def retry_in(self, attempts: int) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones; ``None``: give up."""
        if attempts >= self.attempts:
            return None
        return float(min(self.first_retry * 2 ** (attempts - 1), self.max_retry))


@dataclass(frozen=True)
class StoredEvent:
    """An event just stored, with the webhook endpoints that subscribe to it (:meth:`Events.announce`)."""

    event: Event
    endpoints: tuple[str, ...]


class Events:
    """Emits events (stored, published live, sent to webhooks) and delivers webhooks."""

    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        *,
        redis: Any | None = None,
        policy: WebhookPolicy | None = None,
        user_agent: str = "botloom-webhooks",
    ) -> None:
        self.store = store
        self.queue = queue
        self.redis = redis
        self.policy = policy or WebhookPolicy()
        self.user_agent = user_agent
        self._session: Any = None

    async def emit(
        self,
        tenant_id: str,
        kind: str,
        *,
        conversation_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Event | None:
        """Store the event, publish it live and queue its webhooks; the stored event.

        ``None`` (nothing stored) when the tenant or the conversation does not
        exist. The event is stored before this returns; webhook delivery and live
        publishing happen after, and their failures never raise here.
        """
        stored = await self.store_event(tenant_id, kind, conversation_id=conversation_id, data=data)
        if stored is None:
            return None
        await self.announce(stored)
        return stored.event

    async def store_event(
        self,
        tenant_id: str,
        kind: str,
        *,
        conversation_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> StoredEvent | None:
        """Store the event only (``None``: no such tenant or conversation); :meth:`announce` it once committed.

        For a caller that stores the event in its own transaction
        (``services.store.db.transaction()``) with the change it reports: the live
        notice of the PostgreSQL bus goes out at commit; announce after the block.
        """
        import re

        if not re.match(KIND_PATTERN, kind):
            raise ValueError(f"event kind {kind!r} is not a dotted lower-case name")
        payload = dict(data or {})
        notify = None if self.redis is not None else live_channel(tenant_id) if _is_uuid(tenant_id) else None
        stored = await self.store.events.append(
            tenant_id, kind, payload, conversation_id=conversation_id, notify=notify, notice=live_notice
        )
        if stored is None:
            logger.warning("event %s not stored: no such tenant or conversation", kind)
            return None
        event, endpoints = stored
        return StoredEvent(event, tuple(endpoints))

    async def announce(self, stored: StoredEvent) -> None:
        """Publish a stored event live (Redis) and queue its webhooks; failures are logged, never raised."""
        event = stored.event
        if self.redis is not None:
            try:
                await self.redis.publish(live_channel(event.tenant_id), live_notice(event))
            except Exception:  # live updates are best effort; the event is stored
                logger.warning("live publish of event %s failed", event.id, exc_info=True)
        for endpoint_id in stored.endpoints:
            await self._schedule(endpoint_id, _stream(event), key=event.id)

    async def _schedule(self, endpoint_id: str, stream: str, *, key: str, delay: float = 0.0) -> None:
        try:
            await self.queue.enqueue(
                "deliveries",
                "send_webhooks",
                key=f"webhook:{endpoint_id}:{stream}:{key}",
                delay=delay,
                endpoint_id=endpoint_id,
                stream=stream,
            )
        except Exception:  # the recovery cron job queues it again
            logger.warning("queueing webhooks of endpoint %s failed; recovery will", endpoint_id, exc_info=True)

    # -- delivery ------------------------------------------------------------------

    async def send_webhooks(self, endpoint_id: str, stream: str) -> int:
        """Job: send the stream's pending events to the endpoint, in order; how many were accepted.

        One job at a time per (endpoint, stream) (a PostgreSQL advisory lock held
        while it sends). It stops at an event that failed and is not due yet,
        after queueing itself for when it is.
        """
        sent = 0
        lock_key = f"botloom-webhook:{endpoint_id}:{stream}"
        async with self.store.db.connection() as conn:
            await conn.execute(f"SET lock_timeout = {int(self.policy.lock_wait * 1000)}")
            await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_key,))
            try:
                while True:
                    pending = await self.store.webhooks.next_pending(endpoint_id, stream)
                    if pending is None:
                        return sent
                    wait = pending.next_attempt_at.timestamp() - time.time()
                    if wait > 0.05:
                        await self._schedule(
                            endpoint_id, stream, key=f"{pending.event_id}:{pending.attempts}", delay=wait
                        )
                        return sent
                    error = await self._send(pending)
                    if error is None:
                        await self.store.webhooks.delivered(endpoint_id, pending.event_id)
                        sent += 1
                        continue
                    retry_in = self.policy.retry_in(pending.attempts + 1)
                    await self.store.webhooks.failed(endpoint_id, pending.event_id, error, retry_in=retry_in)
                    if retry_in is None:
                        logger.warning(
                            "webhook event %s to endpoint %s given up after %d attempts: %s",
                            pending.event_id,
                            endpoint_id,
                            pending.attempts + 1,
                            error,
                        )
                        continue
                    await self._schedule(
                        endpoint_id, stream, key=f"{pending.event_id}:{pending.attempts + 1}", delay=retry_in
                    )
                    return sent
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock_key,))
                with contextlib.suppress(Exception):
                    await conn.execute("RESET lock_timeout")

    async def _send(self, pending: PendingDelivery) -> str | None:
        """POST one event; ``None`` when accepted, else why not (never the remote server's body)."""
        import aiohttp

        from botloom.core.netguard import EndpointRefused, aiohttp_session

        body = msgspec.json.encode(pending.envelope)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            EVENT_ID_HEADER: pending.event_id,
            **sign_request(pending.secret, body),
        }
        if self._session is None or self._session.closed:
            self._session = aiohttp_session()
        try:
            async with self._session.post(
                pending.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except EndpointRefused as exc:
            return f"refused: {exc}"
        except TimeoutError:
            return f"no answer within {self.policy.timeout:g} s"
        except aiohttp.ClientError as exc:
            return f"connection failed ({type(exc).__name__})"

    async def recover(self) -> int:
        """Cron job: queue again every stream with a delivery overdue by a minute (its job was lost); prune old events.

        Events older than :attr:`WebhookPolicy.keep_days` are deleted (with their deliveries).
        """
        await self.store.events.prune(self.policy.keep_days)
        streams = await self.store.webhooks.overdue(60.0)
        minute = int(time.time() // 60)
        for endpoint_id, stream in streams:
            await self._schedule(endpoint_id, stream, key=f"recover:{minute}")
        return len(streams)

    def jobs(self) -> dict[str, JobFunction]:
        """The job functions of the deliveries queue, by name."""
        return {"send_webhooks": self.send_webhooks, "webhooks_recover": self.recover}

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def live_notice(event: Event) -> str:
    """The event as published on the live channel: its envelope as JSON, without its data when too large."""
    text = msgspec.json.encode(event.envelope()).decode()
    if len(text.encode()) <= NOTIFY_LIMIT:
        return text
    return msgspec.json.encode({**event.envelope(), "data": {}, "data_omitted": True}).decode()


def _stream(event: Event) -> str:
    return event.conversation_id or ""


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


__all__ = ["KIND_PATTERN", "RECOVER_CRON", "Events", "WebhookPolicy", "live_channel", "live_notice"]
