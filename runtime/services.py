"""The composition root: everything a botloom process needs to run turns, opened and closed together.

The server, the worker, ``botloom chat`` and the tests all start from
:func:`open_services`, so they run turns the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from botloom.core.crypto import Cipher, load_cipher
from botloom.core.embeddings import Embedder, LocalEmbedder, OpenAIEmbedder
from botloom.core.host import PluginHost
from botloom.core.netguard import EndpointPolicy, install_policy
from botloom.core.settings import Settings
from botloom.core.storage.database import Database, database_url
from botloom.core.storage.repositories import ChannelRouteRepository, Store
from botloom.graphs.engines import Engine, OfflineEngine, offline_part
from botloom.graphs.registry import GraphRegistry
from botloom.runtime.budgets import Budgets
from botloom.runtime.checkpointers import open_checkpointer
from botloom.runtime.delivery import Deliveries
from botloom.runtime.desk import Desk
from botloom.runtime.events import Events
from botloom.runtime.inbound import ChannelBindings, Inbound
from botloom.runtime.locks import ConversationLocks, PostgresLocks, RedisLocks
from botloom.runtime.polling import ChannelPolling
from botloom.runtime.queue import JobQueue
from botloom.runtime.runner import TurnRunner

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """The open services of one process."""

    settings: Settings
    host: PluginHost
    db: Database
    store: Store
    cipher: Cipher
    embedder: Embedder
    knowledge: Any
    graphs: GraphRegistry
    engine: Engine
    runner: TurnRunner
    queue: JobQueue
    """The job queue of turns and deliveries (connects on first use)."""
    deliveries: Deliveries
    """Replies out through push channels, with retries."""
    inbound: Inbound
    """The one inbound path: every channel's messages stored and turned into turns."""
    polling: ChannelPolling
    """Polls of channels that fetch their messages (IMAP mailboxes)."""
    events: Events
    """Events (stored, published live, sent to webhooks): ``await services.events.emit(...)``."""
    desk: Desk
    """The agent desk: handovers routed, answered through their channels and handed back (``runtime/desk.py``)."""
    budgets: Budgets | None = None
    """Cost control: tenants' budgets and month-to-date spend in memory, enforced on turns (``runtime/budgets.py``)."""
    redis: Any | None = None


def make_engine(settings: Settings) -> Engine:
    """The language-model engine when ``OPENAI_API_KEY`` is set, else the offline engine."""
    if settings.llm_enabled:
        from botloom.graphs.llm import LLMEngine

        return LLMEngine(settings)
    return OfflineEngine()


def make_embedder(settings: Settings) -> Embedder:
    """The configured embedder (``BOTLOOM_EMBEDDER``)."""
    if settings.embedder == "openai":
        assert settings.openai_api_key is not None
        return OpenAIEmbedder(
            model=settings.embedding_model, api_key=settings.openai_api_key, base_url=settings.openai_base_url
        )
    return LocalEmbedder()


async def _restore_policy(previous: EndpointPolicy | None) -> None:
    install_policy(previous)


def _redis_client(settings: Settings) -> Any:
    """The process's Redis client when ``BOTLOOM_REDIS_URL`` is set (locks, live events), else ``None``."""
    if not settings.redis_url:
        return None
    from redis.asyncio import BlockingConnectionPool, Redis

    return Redis(connection_pool=BlockingConnectionPool.from_url(settings.redis_url, max_connections=50))


async def _open_locks(
    settings: Settings, url: str, redis_client: Any, closeables: list[Callable[[], Any]]
) -> ConversationLocks:
    """Conversation locks: Redis leases with Redis, else PostgreSQL advisory locks on a pool of their own."""
    if redis_client is not None:
        return RedisLocks(redis_client, expire=settings.turn_timeout * 2)
    # Locks get their own pool: a turn holds its lock's connection while its queries use the
    # main pool, so the two can never starve each other.
    lock_db = await Database.open(url, max_size=settings.db_pool_size, migrate=False)
    closeables.append(lock_db.close)
    return PostgresLocks(lock_db)


def _open_engine(settings: Settings, store: Store, closeables: list[Callable[[], Any]]) -> Engine:
    """The configured engine; its offline part reads what tenants taught their bots (#17)."""
    engine = make_engine(settings)
    offline = offline_part(engine)
    if offline is not None:
        offline.teaching = store.teaching.load
    if hasattr(engine, "aclose"):
        closeables.append(engine.aclose)
    return engine


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    host: PluginHost | None = None,
    url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> AsyncIterator[Services]:
    """Open the database (migrating it), the plugins, the checkpointer and the turn runner."""
    from botloom.core.knowledge.base import KnowledgeBase

    if url is None:
        url = await asyncio.to_thread(database_url, settings)
    db = await Database.open(url, max_size=settings.db_pool_size, progress=progress)
    redis_client: Any = None
    closeables: list[Callable[[], Any]] = []
    previous_policy = install_policy(settings.endpoint_policy)  # where tenants' endpoints may connect
    closeables.append(lambda: _restore_policy(previous_policy))
    try:
        if host is None:
            host = PluginHost.discover(
                allow=settings.plugin_allow_list, block=settings.plugin_block_list, trace=settings.trace_plugins
            )
        await host.collect()
        closeables.append(host.close_channels)  # channels' open connections (ChannelAdapter.aclose)
        cipher = load_cipher(settings.secret_key, settings.data_path)
        store = Store(db, cipher)
        embedder = make_embedder(settings)
        if hasattr(embedder, "aclose"):
            closeables.append(embedder.aclose)
        knowledge = KnowledgeBase(db, embedder)
        redis_client = _redis_client(settings)
        locks = await _open_locks(settings, url, redis_client, closeables)
        async with open_checkpointer(settings, url, cipher=cipher) as checkpointer:
            graphs = GraphRegistry(host, checkpointer)
            engine = _open_engine(settings, store, closeables)
            runner = TurnRunner(
                host=host,
                store=store,
                graphs=graphs,
                engine=engine,
                locks=locks,
                settings=settings,
                knowledge=knowledge,
            )
            queue = JobQueue.for_settings(settings, url)
            bindings = ChannelBindings(host, ChannelRouteRepository(db, store.plugin_settings))
            deliveries = Deliveries(
                store=store, host=host, bindings=bindings, locks=locks, queue=queue, settings=settings
            )
            inbound = Inbound(
                store=store, host=host, runner=runner, queue=queue, deliveries=deliveries, bindings=bindings
            )
            inbound.inbox = settings.webhook_inbox  # #16 goal 3: acknowledge after one inbox row
            events = Events(store, queue, redis=redis_client)
            closeables += [inbound.close, queue.close, events.close]
            desk = Desk(store=store, host=host, runner=runner, deliveries=deliveries, events=events, engine=engine)
            runner.handovers.desk = desk  # told of each pause and each message held for a person
            budgets = Budgets(store, settings, events=events)  # cost control: docs/cost-control.md
            runner.contexts.budgets = budgets
            yield Services(
                settings=settings,
                host=host,
                db=db,
                store=store,
                cipher=cipher,
                embedder=embedder,
                knowledge=knowledge,
                graphs=graphs,
                engine=engine,
                runner=runner,
                queue=queue,
                deliveries=deliveries,
                inbound=inbound,
                polling=ChannelPolling(inbound),
                redis=redis_client,
                events=events,
                desk=desk,
                budgets=budgets,
            )
    finally:
        for closeable in reversed(closeables):
            await closeable()
        if redis_client is not None:
            await redis_client.aclose()
            await redis_client.connection_pool.disconnect()
        await db.close()
