"""The audit log (docs/audit.md): the recorder, its transaction, retention, ``GET /api/v1/audit``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import psycopg
import pytest

from botloom.core.settings import Settings
from botloom.core.storage.repositories import Store
from botloom.runtime import audit, retention
from botloom.runtime.audit import SYSTEM, Actor, record
from botloom.runtime.services import Services
from tests.test_api_resources import api_client


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def _rows(services: Services, action: str | None = None) -> list[audit.AuditEntry]:
    return await services.store.audit.page(None, action=action, limit=100)


# -- the recorder and its transaction ----------------------------------------------------


async def test_record_in_a_transaction_commits_with_the_change(services: Services) -> None:
    store = services.store
    async with store.db.transaction():
        tenant = await store.tenants.create("audited", "Audited")
        await record(
            services,
            Actor("operator", request_id="r-1"),
            "tenant.created",
            tenant_id=tenant.id,
            target=("tenant", tenant.id),
            details={"slug": "audited"},
        )
    [row] = await _rows(services, "tenant.created")
    assert (row.tenant_id, row.principal_kind, row.principal_id, row.request_id) == (tenant.id, "operator", None, "r-1")
    assert (row.target_kind, row.target_id, row.details) == ("tenant", tenant.id, {"slug": "audited"})


async def test_a_failing_change_leaves_no_audit_row(services: Services) -> None:
    store = services.store

    async def change() -> None:
        async with store.db.transaction():
            tenant = await store.tenants.create("doomed", "Doomed")
            await record(services, SYSTEM, "tenant.created", tenant_id=tenant.id, target=("tenant", tenant.id))
            raise RuntimeError("the change fails after its row was written")

    with pytest.raises(RuntimeError):
        await change()
    assert await _rows(services) == []
    assert await store.tenants.get_by_slug("doomed") is None


async def test_a_failing_audit_row_aborts_the_change(services: Services) -> None:
    store = services.store

    async def change() -> None:
        async with store.db.transaction():
            await store.tenants.create("unrecorded", "Unrecorded")
            # A NUL character in a text column: refused, so the row cannot be written.
            await record(services, SYSTEM, "tenant.created\x00", tenant_id=None, target=("tenant", None))

    with pytest.raises(psycopg.Error):
        await change()
    assert await store.tenants.get_by_slug("unrecorded") is None
    assert await _rows(services) == []


async def test_rows_cannot_be_updated(services: Services, database_url: str) -> None:
    await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", None))
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("UPDATE audit_log SET action = 'bot.deleted'")


async def test_retention_prunes_old_rows_only(services: Services, database_url: str, store: Store) -> None:
    old = await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", "old"))
    new = await record(services, SYSTEM, "bot.created", tenant_id=None, target=("bot", "new"))
    days = services.settings.audit_retention_days
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # The trigger refuses UPDATE (as the application must never): a database owner ages the rows here.
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        await conn.execute("UPDATE audit_log SET at = now() - %s WHERE id = %s", (timedelta(days=days, hours=1), old))
        await conn.execute("UPDATE audit_log SET at = now() - %s WHERE id = %s", (timedelta(days=days - 1), new))
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    assert (await retention.prune(services)).audit == 1  # the hourly pass prunes the audit log
    assert [r.id for r in await _rows(services)] == [new]
