"""Harnesses: a bot with the plugins under test, spoken to turn by turn, and a channel driven over HTTP.

:class:`BotHarness` opens botloom's real services (installed plugins plus any registered for
the test, the turn runner, the knowledge base) on a database of the test's own, creates a
tenant and a bot with the plugins under test enabled and configured, and runs turns::

    result = await harness.send("what's the weather in Paris?")
    assert result.intent == "weather"
    assert result.tools[0].name == "weather" and result.tools[0].ok
    assert result.path == ["retrieve", "classify", "act", "respond"]

:class:`ChannelHarness` mounts the real HTTP app on the same services and posts to a
channel's routes the way its provider would, signed by the author's ``signer``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from langchain_core.runnables import RunnableConfig

    from botloom.core.domain import Bot, Tenant
    from botloom.core.settings import Settings
    from botloom.runtime.results import TurnResult
    from botloom.runtime.services import Services

__all__ = ["BotHarness", "ChannelHarness", "SigningRequest", "ToolCallRecord", "TurnOutcome", "test_settings"]

LOCAL_ENDPOINTS = "127.0.0.1,localhost"
"""Where a test bot may connect: loopback, where a test's stand-ins of providers listen."""
TEST_ADMIN_TOKEN = "botloom-testing-admin-token"  # noqa: S105 - a test deployment's token
TEST_SECRET_KEY = "botloom-testing-secret-key"  # noqa: S105


def test_settings(data_dir: str, **overrides: object) -> Settings:
    """Settings of a test deployment: the offline engine, PostgreSQL checkpoints, loopback endpoints allowed.

    The environment is not read (a developer's ``OPENAI_API_KEY`` never reaches a test);
    ``overrides`` are :class:`botloom.core.settings.Settings` fields.
    """
    from botloom.core.settings import load_settings

    values: dict[str, object] = {
        "data_dir": data_dir,
        "admin_token": TEST_ADMIN_TOKEN,
        "secret_key": TEST_SECRET_KEY,
        "checkpointer": "postgres",
        "allowed_endpoints": LOCAL_ENDPOINTS,
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call of a turn: what was asked and what came back."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    result: Any = None
    """The tool's result as the turn stored it (plain JSON values); ``None`` when it failed."""
    error: str | None = None
    """Why the call failed (bad arguments, an exception, a timeout); ``None`` when it succeeded."""


@dataclass(frozen=True)
class TurnOutcome:
    """What one turn did, as a test asserts it."""

    replies: list[str]
    """The texts the bot answered, in order."""
    intent: str | None
    confidence: float
    slots: dict[str, str]
    tools: list[ToolCallRecord]
    """The tool calls of the turn, in order."""
    path: list[str]
    """The graph nodes the turn went through, in order (``retrieve``, ``classify``, ``act``, ``respond``...)."""
    errors: list[str]
    """Plugin and model failures of the turn (the user got the fallback)."""
    status: str
    """How the turn ended (``answered``, ``escalated``...)."""
    escalated: bool
    conversation_id: str
    duplicate: bool = False
    """The message was a retry of one already answered: no turn ran."""
    raw: Any = field(default=None, repr=False)
    """botloom's own ``TurnResult`` (internal: its shape may change between versions)."""

    @property
    def reply(self) -> str:
        """The bot's replies joined by newlines (most turns have one)."""
        return "\n".join(self.replies)

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools called, in order."""
        return [call.name for call in self.tools]


class BotHarness:
    """A bot with the plugins under test, on botloom's real services; opened on first use.

    Register plugin objects with :meth:`register` before the first :meth:`send` (or
    :meth:`start`); they exist for this harness only. Closed by the fixture that made it.
    """

    __test__ = False

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        plugins: Mapping[str, Mapping[str, Any] | None] | None = None,
        tenant: str = "test",
        bot: str = "bot",
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.plugins: dict[str, dict[str, Any]] = {name: dict(config or {}) for name, config in (plugins or {}).items()}
        self.tenant_slug = tenant
        self.bot_slug = bot
        self._registered: list[tuple[str, object]] = []
        self._stack: contextlib.AsyncExitStack | None = None
        self._services: Services | None = None
        self._tenant: Tenant | None = None
        self._bot: Bot | None = None
        self._api_key: str | None = None
        self._conversations: dict[tuple[str, str], str] = {}

    # -- set-up ---------------------------------------------------------------------------

    def register(self, plugin: object, name: str, *, config: Mapping[str, Any] | None = None) -> None:
        """Register a plugin object as plugin ``name`` for this test, enabled for the bot with ``config``.

        ``plugin`` is what an entry point would name: a module, a class instance or a
        namespace of ``@hookimpl`` functions. Call it before the first turn.
        """
        if self._stack is not None:
            raise RuntimeError("register plugins before the harness starts (before the first send)")
        self._registered.append((name, plugin))
        self.plugins[name] = dict(config or {})

    async def start(self) -> BotHarness:
        """Open the services, create the tenant and the bot, enable the plugins; idempotent."""
        if self._stack is not None:
            return self
        from botloom.core.host import PluginHost
        from botloom.runtime.services import open_services

        host = PluginHost.discover()
        for name, plugin in self._registered:
            if not host.register(plugin, name):
                problems = "; ".join(p.message for p in host.problems if p.plugin == name)
                raise RuntimeError(f"plugin {name!r} could not be registered: {problems}")
        stack = contextlib.AsyncExitStack()
        try:
            self._services = await stack.enter_async_context(
                open_services(self.settings, url=self.database_url, host=host)
            )
            for name in self.plugins:
                if name not in host.infos:
                    problems = "; ".join(p.message for p in host.problems if p.plugin == name) or "not installed"
                    raise RuntimeError(
                        f"plugin {name!r} is not loaded ({problems}); installed: {', '.join(sorted(host.infos))}"
                    )
            store = self._services.store
            self._tenant = await store.tenants.create(self.tenant_slug, self.tenant_slug.title())
            self._bot = await store.bots.create(self._tenant.id, self.bot_slug, self.bot_slug.title())
            _, self._api_key = await store.api_keys.create(self._tenant.id, "tests")
            for name, config in self.plugins.items():
                await self.configure(name, config)
        except BaseException:
            await stack.aclose()
            self._services = None
            raise
        self._stack = stack
        return self

    async def close(self) -> None:
        """Close the services (the fixture does it after the test)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def __aenter__(self) -> BotHarness:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def configure(self, plugin: str, config: Mapping[str, Any] | None = None, *, enabled: bool = True) -> None:
        """Enable (or disable) ``plugin`` for the bot with ``config``, validated by the plugin's schema.

        Secrets (``botloom.Secret`` fields) are stored encrypted, as the API stores them.
        """
        from botloom.core.config import split_secrets, validate_config

        services, bot = self.services, self.bot
        schema = services.host.config_schema(plugin)
        checked = validate_config(plugin, schema, dict(config or {}))
        public, secret = split_secrets(schema, checked)
        await services.store.plugin_settings.put(
            bot.tenant_id, bot.id, plugin, enabled=enabled, config=public, secrets=secret
        )
        if enabled:
            self.plugins[plugin] = dict(config or {})
        else:
            self.plugins.pop(plugin, None)

    # -- what a test reads ----------------------------------------------------------------

    @property
    def services(self) -> Services:
        """The services of botloom (internal API: the store, the host, the runner)."""
        if self._services is None:
            raise RuntimeError("the harness has not started: await harness.start() or send a message first")
        return self._services

    @property
    def bot(self) -> Bot:
        """The test bot."""
        if self._bot is None:
            raise RuntimeError("the harness has not started: await harness.start() or send a message first")
        return self._bot

    @property
    def tenant(self) -> Tenant:
        """The test bot's tenant."""
        if self._tenant is None:
            raise RuntimeError("the harness has not started: await harness.start() or send a message first")
        return self._tenant

    @property
    def api_key(self) -> str:
        """An API key of the tenant (``Authorization: Bearer ...`` on botloom's API)."""
        if self._api_key is None:
            raise RuntimeError("the harness has not started: await harness.start() or send a message first")
        return self._api_key

    @property
    def bot_path(self) -> str:
        """``tenant/bot``, as botloom's URLs name the bot."""
        return f"{self.tenant_slug}/{self.bot_slug}"

    # -- turns ----------------------------------------------------------------------------

    async def send(
        self, text: str, *, user: str = "user-1", channel: str = "test", message_id: str | None = None
    ) -> TurnOutcome:
        """Send ``text`` as ``user`` and run its turn now; what the turn did.

        The same ``user`` on the same ``channel`` continues one conversation; ``message_id``
        is the channel's id of the message (a repeated one runs no second turn).
        """
        from botloom.core.messages import InboundMessage

        await self.start()
        message = InboundMessage(channel=channel, text=text, sender=user, idempotency_key=message_id)
        conversation = self._conversations.get((channel, user))
        result = await self.services.inbound.answer(self.bot, message, conversation_id=conversation)
        self._conversations[(channel, user)] = result.conversation_id
        return await self._outcome(result)

    def new_conversation(self, *, user: str = "user-1", channel: str = "test") -> None:
        """The next :meth:`send` of ``user`` on ``channel`` starts a new conversation."""
        self._conversations.pop((channel, user), None)

    async def state(self, *, user: str = "user-1", channel: str = "test") -> dict[str, Any]:
        """The latest checkpointed graph state of ``user``'s conversation (internal: its shape may change)."""
        conversation = self._conversations.get((channel, user))
        if conversation is None:
            return {}
        return await self._state(conversation)

    async def _state(self, conversation_id: str) -> dict[str, Any]:
        from botloom.runtime.runner import thread_id

        graph = self.services.graphs.get(self.bot.graph)
        config: RunnableConfig = {
            "configurable": {"thread_id": thread_id(self.bot.tenant_id, self.bot.id, conversation_id)}
        }
        snapshot = await graph.aget_state(config)
        return dict(snapshot.values or {})

    async def _outcome(self, result: TurnResult) -> TurnOutcome:
        state = {} if result.duplicate else await self._state(result.conversation_id)
        tools = [
            ToolCallRecord(
                name=str(call.get("tool", "")),
                arguments=dict(call.get("arguments") or {}),
                ok=bool(call.get("ok")),
                result=call.get("result"),
                error=call.get("error"),
            )
            for call in state.get("tool_results") or []
        ]
        return TurnOutcome(
            replies=[reply.text for reply in result.replies],
            intent=result.intent,
            confidence=result.confidence,
            slots=dict(state.get("slots") or {}),
            tools=tools,
            path=[str(step.get("node")) for step in state.get("trace") or []],
            errors=list(result.errors),
            status=str(result.status),
            escalated=result.escalated,
            conversation_id=result.conversation_id,
            duplicate=result.duplicate,
            raw=result,
        )


@dataclass(frozen=True)
class SigningRequest:
    """What a channel's signer signs: the request as its provider would send it."""

    method: str
    url: str
    """The full URL (``http://testserver/api/v1/bots/test/bot/telegram``), as signatures over URLs need."""
    body: bytes
    headers: Mapping[str, str]
    form: Mapping[str, str] | None
    """The form fields, when the body is a form (Twilio signs them, not the body)."""
    config: Mapping[str, Any]
    """The bot's config of the channel's plugin, secrets included."""


Signer = Callable[[SigningRequest], Mapping[str, str]]
"""Returns the headers that authenticate a request (a signature, a secret token)."""


class ChannelHarness:
    """The real HTTP app on the harness's services, with a client that posts to a channel's routes.

    ``plugin`` is the plugin whose channel is under test (enabled for the bot with
    ``config``); ``signer`` adds the headers that authenticate a request, as the
    provider would; a ``forged`` request gets them from a config whose every
    string is replaced, so a channel that checks them refuses it.
    """

    __test__ = False
    base_url = "http://testserver"

    def __init__(self, harness: BotHarness, plugin: str | None = None, signer: Signer | None = None) -> None:
        self.harness = harness
        self.plugin = plugin
        self.signer = signer
        self._client: httpx.AsyncClient | None = None
        self.app: Any = None

    async def start(self) -> ChannelHarness:
        """Start the bot harness and the app; idempotent."""
        if self._client is not None:
            return self
        import httpx

        from botloom.runtime.delivery import RetryPolicy
        from botloom.runtime.queue import QueueOptions
        from botloom.server.app import create_app

        services = (await self.harness.start()).services
        services.queue.options = QueueOptions(heartbeat=2, sweep_every=1, grace=1.0)
        services.deliveries.policy = RetryPolicy(attempts=3, first_delay=0.2, max_delay=1.0, send_timeout=5.0)
        self.app = create_app(self.harness.settings, services=services)
        # httpx's ASGI transport runs the app in the test's own event loop, where botloom's connection
        # pools live (Litestar's AsyncTestClient runs it on another loop, in a thread).
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=self.base_url)
        return self

    async def close(self) -> None:
        """Close the client (the fixture does it after the test)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        """An HTTP client of the app (no signing)."""
        if self._client is None:
            raise RuntimeError("the channel harness has not started: await channel.start() first")
        return self._client

    def url(self, route: str, bot: str | None = None) -> str:
        """``route`` (a channel route's path, ``/api/v1/bots/{bot}/telegram``) for the test bot (or ``bot``)."""
        return route.replace("{bot}", bot or self.harness.bot_path)

    async def request(  # noqa: PLR0913 - one keyword per part of a request
        self,
        method: str,
        route: str,
        *,
        content: bytes | str | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        bot: str | None = None,
        signed: bool = True,
        forged: bool = False,
    ) -> httpx.Response:
        """Send a request to ``route`` as the channel's provider would; the response.

        It is signed by :attr:`signer` unless ``signed`` is false; ``forged`` signs it with
        wrong credentials. The body is ``content``, ``json`` or the form ``data``.
        """
        import json as jsonlib
        from urllib.parse import urlencode

        await self.start()
        path = self.url(route, bot)
        all_headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers.setdefault("content-type", "application/json")
        elif data is not None:
            body = urlencode(dict(data)).encode()
            all_headers.setdefault("content-type", "application/x-www-form-urlencoded")
        else:
            body = content.encode() if isinstance(content, str) else (content or b"")
        if signed and self.signer is not None:
            config = await self.config()
            if forged:
                config = {k: (f"forged-{uuid.uuid4().hex}" if isinstance(v, str) else v) for k, v in config.items()}
            signing = SigningRequest(
                method=method.upper(),
                url=self.base_url + path,
                body=body,
                headers=all_headers,
                form=dict(data) if data is not None else None,
                config=config,
            )
            all_headers.update(self.signer(signing))
        return await self.client.request(method, path, content=body, headers=all_headers)

    async def post(self, route: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``POST``."""
        return await self.request("POST", route, **kwargs)

    async def config(self) -> dict[str, Any]:
        """The bot's config of :attr:`plugin` as the channel gets it, secrets decrypted."""
        if self.plugin is None:
            return {}
        bot = self.harness.bot
        setting = await self.harness.services.store.plugin_settings.get(bot.tenant_id, bot.id, self.plugin)
        return dict(setting.config) if setting is not None else {}

    @contextlib.asynccontextmanager
    async def workers(self) -> AsyncIterator[None]:
        """Run botloom's job workers (queued turns, deliveries of push channels) while the block runs."""
        from botloom.server.worker import workers

        await self.start()
        async with workers(self.harness.services):
            yield

    async def transcript(self) -> list[tuple[str, str, str]]:
        """``(direction, text, status)`` of every stored message of the bot, oldest first.

        Messages a webhook acknowledged into the webhook inbox (on by default) are
        ingested first, as a worker does within milliseconds, so they show here too.
        """
        bot = self.harness.bot
        return await bot_transcript(self.harness.services, bot.tenant_id, bot.id)


async def bot_transcript(services: Services, tenant_id: str, bot_id: str) -> list[tuple[str, str, str]]:
    """``(direction, text, status)`` of every stored message of a bot, oldest first.

    Messages a webhook acknowledged into the webhook inbox (``BOTLOOM_WEBHOOK_INBOX``,
    on by default) are ingested first, as a worker does within milliseconds: a message
    is stored once it is in the inbox or among the messages, and this shows both.
    """
    await services.inbound.ingest_inbox()
    rows = []
    for conversation in await services.store.conversations.list_all(tenant_id, bot_id):
        rows += await services.store.messages.list_all(tenant_id, conversation.id)
    rows.sort(key=lambda m: (m.created_at, m.id))
    return [(m.direction, m.text, m.status) for m in rows]
