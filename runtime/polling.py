"""Polling channels: the host fetches messages for channels that have no webhook (an IMAP mailbox).

A cron job (``poll_channels``, once a minute on the deliveries queue) queues one
``poll`` job per bot and polling channel the bot enabled; the job holds a lock
so one bot's mailbox is never read twice at once, hands each fetched message to
the one inbound path (:meth:`~botloom.runtime.inbound.Inbound.accept`: stored,
turn queued) before the channel marks it fetched, and stores the channel's
cursor and the poll's error, if any, in ``channel_polls``. A channel polls when it
declares ``Capabilities(polls=True)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from botloom.core.channels import ChannelAdapter, ChannelRejected, DeliveryReport
from botloom.core.messages import InboundMessage
from botloom.core.storage.repositories import ChannelPollRepository
from botloom.runtime.inbound import ChannelBinding, Inbound
from botloom.runtime.queue import JobFunction

logger = logging.getLogger(__name__)

POLL_CRON = "* * * * *"
POLL_TIMEOUT = 300.0
"""Seconds one poll of one bot may take before it is cancelled (and retried at the next tick)."""
ROUNDS = 10
ROUNDS_SECONDS = 45.0
"""A poll job polls again while the channel's cursor moves (a mailbox with more than one batch of new
mail), at most ``ROUNDS`` times and no longer than this; the next tick goes on from there."""


class ChannelPolling:
    """Queues and runs the polls of every bot's polling channels."""

    def __init__(self, inbound: Inbound) -> None:
        self.inbound = inbound
        self.polls = ChannelPollRepository(inbound.store.db)

    def pollers(self) -> dict[str, tuple[ChannelAdapter[Any], str]]:
        """Channels that poll (they declare ``Capabilities(polls=True)``), with the plugin that owns each."""
        registry = self.inbound.host.registry
        found = {}
        for name, adapter in registry.channels.items():
            owner = registry.owner("channel", name)
            if owner is not None and adapter.capabilities.polls:
                found[name] = (adapter, owner)
        return found

    async def _binding(self, tenant_id: str, bot_id: str, channel: str) -> ChannelBinding | None:
        """The bot's enabled polling channel with its config, when that config has something to poll."""
        try:
            binding = await self.inbound.bindings.find(bot_id, channel)
        except ChannelRejected:
            return None
        if binding.bot.tenant_id != tenant_id or not binding.adapter.polls(binding.config):
            return None
        return binding

    async def sweep(self) -> int:
        """Cron job: queue a poll of each bot's polling channels that have something to poll (once a minute)."""
        minute = int(time.time() // 60)
        queued = 0
        for name, (_, owner) in self.pollers().items():
            for tenant_id, bot_id in await self.polls.enabled_bots(owner):
                if await self._binding(tenant_id, bot_id, name) is None:
                    continue
                await self.inbound.queue.enqueue(
                    "deliveries",
                    "poll",
                    key=f"poll:{bot_id}:{name}:{minute}",
                    tenant_id=tenant_id,
                    bot_id=bot_id,
                    channel=name,
                )
                queued += 1
        return queued

    async def poll(self, tenant_id: str, bot_id: str, channel: str) -> int:
        """Job: poll one bot's channel now; returns how many new messages it stored.

        Does nothing when the channel is not enabled, its config asks for no
        polling, or another process is polling the same bot and channel.
        """
        if channel not in self.pollers():
            return 0
        binding = await self._binding(tenant_id, bot_id, channel)
        if binding is None:
            return 0
        adapter, bot, config = binding.adapter, binding.bot, binding.config
        stored = 0

        async def accept(message: InboundMessage) -> None:
            nonlocal stored
            if message.channel != channel:
                message = msgspec.structs.replace(message, channel=channel)
            _, new = await self.inbound.accept(bot, message)
            stored += int(new)

        async def report(found: DeliveryReport) -> bool:
            if not isinstance(found, DeliveryReport):
                logger.warning("the %s channel reported %r, not a DeliveryReport", channel, found)
                return False
            return await self.inbound.deliveries.record(bot, channel, found)

        async with self.inbound.runner.locks.try_hold(f"poll:{bot_id}:{channel}") as free:
            if not free:
                return 0
            cursor = await self.polls.cursor(tenant_id, bot_id, channel)
            began = time.monotonic()
            for _ in range(ROUNDS):  # a channel fetches a batch a poll: go on while its cursor moves
                try:
                    moved = await asyncio.wait_for(adapter.poll(config, cursor, accept, report), POLL_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - a failed poll is recorded and tried again at the next tick
                    error = f"{type(exc).__name__}: {exc}"[:1000]
                    logger.warning("polling the %s channel of bot %s failed: %s", channel, bot_id, error)
                    await self.polls.save(tenant_id, bot_id, channel, None, error)
                    return stored
                await self.polls.save(tenant_id, bot_id, channel, moved)
                if moved == cursor or time.monotonic() - began > ROUNDS_SECONDS:
                    break
                cursor = moved
        return stored

    def jobs(self) -> dict[str, JobFunction]:
        """The job functions of the deliveries queue, by name."""
        return {"poll": self.poll, "poll_channels": self.sweep}
