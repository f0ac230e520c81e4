"""Bots, the plugins each bot enabled (with encrypted secrets), and a webhook's bot-and-setting lookup."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from psycopg import errors as pg_errors

from botloom.core.crypto import Cipher
from botloom.core.domain import Bot, BotSettings, PluginSetting
from botloom.core.storage.database import Database
from botloom.core.storage.repositories.base import Conflict, Repository, as_uuid, to_struct
from botloom.core.storage.repositories.contacts import RECORD_THREADS_SQL, thread_params


class BotRepository(Repository):
    """A tenant's bots."""

    @staticmethod
    def _bot(row: Mapping[str, Any]) -> Bot:
        data = dict(row)
        data["settings"] = msgspec.convert(data["settings"] or {}, BotSettings, strict=False)
        return to_struct(Bot, data)

    async def create(
        self, tenant_id: str, slug: str, name: str, settings: BotSettings | None = None, graph: str = "turn"
    ) -> Bot:
        """Create a bot; raises :class:`Conflict` when the tenant has a bot with this slug."""
        payload = msgspec.json.encode(settings or BotSettings()).decode()
        try:
            row = await self._one(
                "INSERT INTO bots (tenant_id, slug, name, settings, graph) VALUES (%s, %s, %s, %s, %s) RETURNING *",
                (as_uuid(tenant_id), slug, name, payload, graph),
            )
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"bot {slug!r} exists") from exc
        assert row is not None
        return self._bot(row)

    async def get(self, tenant_id: str, bot_id: str) -> Bot | None:
        """The tenant's bot with this id."""
        row = await self._one(
            "SELECT * FROM bots WHERE tenant_id = %s AND id = %s", (as_uuid(tenant_id), as_uuid(bot_id))
        )
        return self._bot(row) if row else None

    async def get_by_slug(self, tenant_id: str, slug: str) -> Bot | None:
        """The tenant's bot with this slug."""
        row = await self._one("SELECT * FROM bots WHERE tenant_id = %s AND slug = %s", (as_uuid(tenant_id), slug))
        return self._bot(row) if row else None

    async def find(self, ref: str) -> Bot | None:
        """Resolve a bot reference, an id or ``tenant-slug/bot-slug``, across tenants.

        For routing only: the caller must still check the bot belongs to the
        authenticated tenant.
        """
        if "/" in ref:
            tenant_slug, _, bot_slug = ref.partition("/")
            row = await self._one(
                "SELECT b.* FROM bots b JOIN tenants t ON t.id = b.tenant_id WHERE t.slug = %s AND b.slug = %s",
                (tenant_slug, bot_slug),
            )
        else:
            row = await self._one("SELECT * FROM bots WHERE id = %s", (as_uuid(ref),))
        return self._bot(row) if row else None

    async def list_all(self, tenant_id: str) -> list[Bot]:
        """The tenant's bots."""
        rows = await self._all("SELECT * FROM bots WHERE tenant_id = %s ORDER BY created_at", (as_uuid(tenant_id),))
        return [self._bot(r) for r in rows]

    async def update(
        self, tenant_id: str, bot_id: str, *, name: str | None = None, settings: BotSettings | None = None
    ) -> Bot | None:
        """Change a bot's name and/or settings."""
        row = await self._one(
            "UPDATE bots SET name = coalesce(%s, name), settings = coalesce(%s::jsonb, settings), updated_at = now() "
            "WHERE tenant_id = %s AND id = %s RETURNING *",
            (
                name,
                msgspec.json.encode(settings).decode() if settings is not None else None,
                as_uuid(tenant_id),
                as_uuid(bot_id),
            ),
        )
        return self._bot(row) if row else None

    async def all_tenants_bots(self) -> list[Bot]:
        """Every bot of every tenant (operator-level jobs only)."""
        return [self._bot(r) for r in await self._all("SELECT * FROM bots ORDER BY created_at", ())]

    async def delete(self, tenant_id: str, bot_id: str) -> bool:
        """Delete a bot with its plugin settings, conversations and messages.

        Its conversations' checkpoint threads (and their debug forks') are recorded in
        ``checkpoint_erasures`` in the same transaction, for ``runtime/erasure.py`` to
        delete: the bot's row is locked first, so no conversation or fork of it can be
        added meanwhile (their foreign keys wait for the lock), and every thread the
        deletion orphans is listed.
        """
        tenant, bot = as_uuid(tenant_id), as_uuid(bot_id)
        if tenant is None or bot is None:
            return False
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT id FROM bots WHERE tenant_id = %s AND id = %s FOR UPDATE", (tenant, bot))
            if await cur.fetchone() is None:
                return False
            await conn.execute(RECORD_THREADS_SQL, thread_params(tenant_id, "bot", bot_id=bot_id))
            await conn.execute("DELETE FROM bots WHERE tenant_id = %s AND id = %s", (tenant, bot))
        return True


class PluginSettingRepository(Repository):
    """Which plugins each bot enabled, with their config; secret fields are encrypted."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        super().__init__(db)
        self.cipher = cipher

    def _setting(self, row: Mapping[str, Any]) -> PluginSetting:
        config = dict(row["config"] or {})
        if row["secrets"]:
            config.update(json.loads(self.cipher.decrypt(bytes(row["secrets"]))))
        return PluginSetting(plugin=row["plugin"], enabled=row["enabled"], config=config)

    async def put(
        self,
        tenant_id: str,
        bot_id: str,
        plugin: str,
        *,
        enabled: bool,
        config: Mapping[str, Any],
        secrets: Mapping[str, Any],
    ) -> PluginSetting | None:
        """Store a bot's setting of one plugin; ``None`` if the tenant has no such bot."""
        sealed = self.cipher.encrypt(json.dumps(dict(secrets)).encode()) if secrets else None
        row = await self._one(
            "INSERT INTO bot_plugins (tenant_id, bot_id, plugin, enabled, config, secrets) "
            "SELECT b.tenant_id, b.id, %(plugin)s, %(enabled)s, %(config)s, %(secrets)s FROM bots b "
            "WHERE b.tenant_id = %(tenant)s AND b.id = %(bot)s "
            "ON CONFLICT (bot_id, plugin) DO UPDATE SET enabled = excluded.enabled, config = excluded.config, "
            "secrets = excluded.secrets, updated_at = now() RETURNING *",
            {
                "tenant": as_uuid(tenant_id),
                "bot": as_uuid(bot_id),
                "plugin": plugin,
                "enabled": enabled,
                "config": json.dumps(dict(config)),
                "secrets": sealed,
            },
        )
        return self._setting(row) if row else None

    async def get(self, tenant_id: str, bot_id: str, plugin: str) -> PluginSetting | None:
        """A bot's setting of one plugin, secrets decrypted."""
        row = await self._one(
            "SELECT * FROM bot_plugins WHERE tenant_id = %s AND bot_id = %s AND plugin = %s",
            (as_uuid(tenant_id), as_uuid(bot_id), plugin),
        )
        return self._setting(row) if row else None

    async def list_all(self, tenant_id: str, bot_id: str) -> list[PluginSetting]:
        """Every plugin setting of a bot, secrets decrypted."""
        rows = await self._all(
            "SELECT * FROM bot_plugins WHERE tenant_id = %s AND bot_id = %s ORDER BY plugin",
            (as_uuid(tenant_id), as_uuid(bot_id)),
        )
        return [self._setting(r) for r in rows]

    async def queue_list_all(
        self, conn: Any, tenant_id: str, bot_id: str
    ) -> Callable[[], Awaitable[list[PluginSetting]]]:
        """:meth:`list_all` sent on ``conn`` in pipeline mode; returns how to read it once synced.

        So it goes out with the statements queued around it (the conversation's lock) in one round trip.
        """
        cur = await conn.execute(
            "SELECT * FROM bot_plugins WHERE tenant_id = %s AND bot_id = %s ORDER BY plugin",
            (as_uuid(tenant_id), as_uuid(bot_id)),
        )

        async def read() -> list[PluginSetting]:
            return [self._setting(r) for r in await cur.fetchall()]

        return read


class ChannelRouteRepository(Repository):
    """What a channel webhook needs first: the bot it names and the bot's setting of one plugin, in one query."""

    def __init__(self, db: Database, settings: PluginSettingRepository) -> None:
        super().__init__(db)
        self.settings = settings
        self._open = functools.lru_cache(maxsize=256)(self._open_secrets)
        self._recent: dict[tuple[str, str], tuple[float, tuple[Bot, PluginSetting | None] | None]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[tuple[Bot, PluginSetting | None] | None]] = {}

    def _open_secrets(self, sealed: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = json.loads(self.settings.cipher.decrypt(sealed))
        return opened

    async def find(self, ref: str, plugin: str, *, max_age: float = 0.0) -> tuple[Bot, PluginSetting | None] | None:
        """The bot ``ref`` names (an id or ``tenant-slug/bot-slug``) and its setting of ``plugin``, if any.

        For public routes: the caller authenticates the request itself (a signature).
        With ``max_age``, an answer this process read at most that many seconds ago
        is given again without a query (a busy webhook's bot changes rarely).
        """
        key = (ref, plugin)
        recent = self._recent.get(key)
        if recent is not None and time.monotonic() - recent[0] <= max_age:
            return recent[1]
        if max_age <= 0:
            return await self._read(key)
        # one query for all the requests that find the answer too old at once (a busy webhook's every second)
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self._read(key))
            reading.add_done_callback(functools.partial(self._read_done, key))
        return await asyncio.shield(reading)

    def _read_done(self, key: tuple[str, str], reading: asyncio.Future[Any]) -> None:
        self._reading.pop(key, None)
        if not reading.cancelled():
            reading.exception()  # retrieved: each waiter gets it raised, even if none is left

    async def _read(self, key: tuple[str, str]) -> tuple[Bot, PluginSetting | None] | None:
        began = time.monotonic()
        found = await self._find(*key)
        if len(self._recent) >= 10_000:
            self._recent.clear()
        self._recent[key] = (began, found)
        return found

    async def _find(self, ref: str, plugin: str) -> tuple[Bot, PluginSetting | None] | None:
        columns = "b.*, p.enabled AS p_enabled, p.config AS p_config, p.secrets AS p_secrets"
        joined = "LEFT JOIN bot_plugins p ON p.tenant_id = b.tenant_id AND p.bot_id = b.id AND p.plugin = %s"
        if "/" in ref:
            tenant_slug, _, bot_slug = ref.partition("/")
            row = await self._one(
                f"SELECT {columns} FROM bots b JOIN tenants t ON t.id = b.tenant_id {joined} "  # noqa: S608 - constants
                "WHERE t.slug = %s AND b.slug = %s",
                (plugin, tenant_slug, bot_slug),
            )
        else:
            row = await self._one(
                f"SELECT {columns} FROM bots b {joined} WHERE b.id = %s",  # noqa: S608 - constants
                (plugin, as_uuid(ref)),
            )
        if row is None:
            return None
        enabled, config, sealed = row.pop("p_enabled"), row.pop("p_config"), row.pop("p_secrets")
        setting = None
        if enabled is not None:  # secrets decrypted once per stored version (a webhook's hot path)
            secrets = self._open(bytes(sealed)) if sealed else {}
            setting = PluginSetting(plugin=plugin, enabled=enabled, config={**(config or {}), **secrets})
        return BotRepository._bot(row), setting
