"""A push channel's message and its turn's job stored in one statement; the binding read once for a burst."""

from __future__ import annotations

import asyncio
from typing import Any

from botloom.core.messages import Attachment, InboundMessage
from botloom.core.storage.repositories import ChannelRouteRepository
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo

# columns that differ between two messages of one conversation whatever stores them
OWN = {"id", "idempotency_key", "created_at", "updated_at"}


def message(sid: str, sender: str = "+15550001111") -> InboundMessage:
    return InboundMessage(channel="twilio", text="hello", sender=sender, idempotency_key=sid, metadata={"to": "+1555"})


async def rows(services: Services, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with services.db.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def test_a_new_message_is_stored_with_its_turn_job_as_receive_stores_it(
    services: Services, demo: DemoInfo
) -> None:
    bot = demo.bot
    stored, new = await services.inbound.accept(bot, message("SM1"))
    assert new and stored.status == "received"
    _, other, _ = await services.store.messages.receive(bot.tenant_id, bot.id, message("SM2"))
    both = "SELECT * FROM messages WHERE id IN (%s, %s)"
    first, second = await rows(services, both, stored.id, other.id)
    assert {k: v for k, v in first.items() if k not in OWN} == {k: v for k, v in second.items() if k not in OWN}
    assert first["conversation_id"] == second["conversation_id"]

    job = await services.queue.queues["turns"].job(f"turns:{stored.id}")
    assert job is not None and job.function == "turn" and job.status == "queued"
    assert job.kwargs == {"tenant_id": bot.tenant_id, "bot_id": bot.id, "conversation_id": stored.conversation_id}
    assert job.heartbeat == services.queue.options.heartbeat and job.retries == services.queue.options.retries


async def test_the_message_accept_returns_is_the_row_as_read_back(services: Services, demo: DemoInfo) -> None:
    bot = demo.bot
    sent = InboundMessage(
        channel="twilio",
        text="a photo",
        sender="+15550002222",
        idempotency_key="SM-photo",
        attachments=(Attachment(url="https://example.org/p.jpg", content_type="image/jpeg"),),
        metadata={"to": "+1555", "nested": {"n": 1, "list": [1, "two"]}},
    )
    stored, new = await services.inbound.accept(bot, sent)
    assert new
    assert stored == await services.store.messages.get(bot.tenant_id, stored.id)


async def test_a_retried_message_is_stored_once_and_queued_once_and_a_finished_one_not_again(
    services: Services, demo: DemoInfo
) -> None:
    bot = demo.bot
    stored, _ = await services.inbound.accept(bot, message("SM3"))
    again, new = await services.inbound.accept(bot, message("SM3"))
    assert not new and again.id == stored.id
    assert len(await rows(services, "SELECT 1 FROM messages WHERE idempotency_key = 'SM3'")) == 1
    assert len(await rows(services, "SELECT 1 FROM botloom_jobs WHERE key LIKE 'turns:%%'")) == 1
    await services.store.messages.set_status(bot.tenant_id, stored.id, "answered")
    async with services.db.connection() as conn:
        await conn.execute("DELETE FROM botloom_jobs WHERE key = %s", (f"turns:{stored.id}",))
    await services.inbound.accept(bot, message("SM3"))
    assert await services.queue.queues["turns"].job(f"turns:{stored.id}") is None, "an answered message: no turn"


async def test_a_held_turn_is_scheduled_after_the_response_window(services: Services, demo: DemoInfo) -> None:
    stored, _ = await services.inbound.accept(demo.bot, message("SM4"), hold=10.0)
    job = await services.queue.queues["turns"].job(f"turns:{stored.id}")
    (row,) = await rows(services, "SELECT extract(epoch FROM now())::bigint AS now")
    assert job is not None and job.scheduled >= row["now"] + 10


async def test_requests_finding_the_binding_old_at_once_share_one_query(services: Services, demo: DemoInfo) -> None:
    routes = ChannelRouteRepository(services.db, services.store.plugin_settings)
    reads = 0
    find = routes._find

    async def counted(ref: str, plugin: str) -> Any:
        nonlocal reads
        reads += 1
        return await find(ref, plugin)

    routes._find = counted  # type: ignore[method-assign]
    found = await asyncio.gather(*(routes.find("acme/support", "twilio", max_age=1.0) for _ in range(16)))
    assert reads == 1 and all(f is not None and f[0].id == demo.bot.id for f in found)
    assert await routes.find("acme/support", "twilio") is not None and reads == 2, "max_age 0 always reads"
