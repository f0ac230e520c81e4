"""Deployment settings, read from ``BOTLOOM_*`` environment variables and validated at start-up.

Every field of :class:`Settings` is read from ``BOTLOOM_<FIELD>`` (upper case),
except the OpenAI client's own ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. A bad
value stops start-up with a message naming the variable and what it expects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from botloom.core.netguard import EndpointPolicy
from botloom.core.pricing import ModelPrice, parse_prices, price_table

Checkpointer = Literal["postgres", "redis", "memory"]
Embedder = Literal["local", "openai"]

OTHER_NAMES = {"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL"}


_SECRET_FIELDS = frozenset({"admin_token", "secret_key", "openai_api_key"})
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """botloom's deployment settings. See ``docs/configuration.md`` for each variable."""

    database_url: str | None = None
    """PostgreSQL URL (``postgresql://user:pass@host/db``); unset starts the embedded server."""
    redis_url: str | None = None
    """Redis or Valkey URL for the cache, rate limits, locks and (optionally) checkpoints and queue."""
    checkpointer: Checkpointer = "postgres"
    encrypt_checkpoints: bool = False
    """Encrypt every checkpoint value at rest with ``secret_key`` (Fernet)."""
    checkpoint_ttl_minutes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """With the Redis checkpointer: expire a thread's checkpoints after this many idle minutes."""
    data_dir: str = ".botloom"
    """Where the embedded PostgreSQL and the generated secret key live."""
    admin_token: str | None = None
    """The operator's bearer token; unset closes the operator routes."""
    secret_key: str | None = None
    """Key for encrypting plugin secrets and checkpoints (a Fernet key, or any passphrase);
    unset uses a key generated once under ``data_dir``."""
    llm_model: str = "gpt-4o-mini"
    """The default chat model when ``OPENAI_API_KEY`` is set."""
    embedder: Embedder = "local"
    embedding_model: str = "text-embedding-3-small"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    plugins: str | None = None
    """Comma-separated allow-list of plugins to load; unset loads every installed plugin."""
    block_plugins: str = ""
    """Comma-separated plugins never to load."""
    trace_plugins: bool = False
    """Log every hook call at INFO level: each implementation's (plugin, hook, time taken, outcome) and each
    call's (hook, its arguments summarized, plugins in call order, time taken, result)."""
    public_url: str | None = None
    """The URL end users and providers reach this server at (behind a proxy); used for webhook
    signatures and links."""
    db_pool_size: Annotated[int, msgspec.Meta(ge=1, le=500)] = 10
    webhook_inbox: bool = True
    """A push channel's webhook acknowledges once its message is stored in one row of the inbox; the workers turn
    it into its conversation, message and turn job milliseconds later (#16 goal 3; docs/deployment.md). On by
    default; ``false`` while workers of a release before the inbox still run."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    turn_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Seconds a whole turn may take before the end user gets the fallback."""
    tool_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds each part of a request's body may take to arrive before the request is answered 408."""
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 600
    """Requests a minute per API key (or per client address without one)."""
    desk_away_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 90.0
    """Seconds without a desk heartbeat after which an agent counts as away (docs/desk.md#routing)."""
    allowed_endpoints: str = ""
    """Comma-separated hosts, addresses or networks (each with an optional ``:port``) that endpoints a tenant
    configures (an SMTP host, an API base URL) may reach even when they are not public addresses."""
    allow_private_endpoints: bool = False
    """Let tenant-configured endpoints reach any address, private and loopback ones included."""
    model_prices: str = ""
    """Model prices for the debugger's cost of each model call: comma-separated ``model=input/output`` in US dollars
    per million tokens (``model=unknown`` removes a default); added to ``botloom.core.pricing.DEFAULT_PRICES``."""
    budget_refresh_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """Seconds a process trusts its in-memory copy of a tenant's budget and month-to-date spend before reading them
    again (docs/cost-control.md: how far a budget can overshoot)."""
    audit_retention_days: Annotated[int, msgspec.Meta(ge=1)] = 400
    """Days the audit log keeps a row (``GET /api/v1/audit``, docs/audit.md); the hourly retention pass prunes it."""

    def __repr__(self) -> str:
        """The settings with secrets masked: tokens, keys, and passwords inside URLs."""
        shown = []
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            if field.name in _SECRET_FIELDS and value:
                value = "********"
            elif isinstance(value, str) and "://" in value:
                value = _URL_PASSWORD.sub(r"\1********@", value)
            shown.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def __post_init__(self) -> None:
        if self.checkpointer == "redis" and not self.redis_url:
            raise SettingsError("BOTLOOM_CHECKPOINTER=redis needs BOTLOOM_REDIS_URL")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError("BOTLOOM_DATABASE_URL must start with postgresql:// (e.g. postgresql://user@host/db)")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("BOTLOOM_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.embedder == "openai" and not self.openai_api_key:
            raise SettingsError("BOTLOOM_EMBEDDER=openai needs OPENAI_API_KEY")
        try:
            self.endpoint_policy  # noqa: B018 - parsed once here, so a bad entry stops start-up
        except ValueError as exc:
            raise SettingsError(f"BOTLOOM_ALLOWED_ENDPOINTS: {exc}") from None
        try:
            parse_prices(self.model_prices)
        except ValueError as exc:
            raise SettingsError(f"BOTLOOM_MODEL_PRICES: {exc}") from None

    @property
    def llm_enabled(self) -> bool:
        """Whether turns use a language model (``OPENAI_API_KEY`` is set) or the offline engine."""
        return bool(self.openai_api_key)

    @property
    def data_path(self) -> Path:
        """``data_dir`` as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def endpoint_policy(self) -> EndpointPolicy:
        """Where tenant-configured endpoints may connect besides public addresses (see ``core/netguard.py``)."""
        return EndpointPolicy.parse(self.allowed_endpoints, allow_private=self.allow_private_endpoints)

    @property
    def model_price_table(self) -> dict[str, ModelPrice]:
        """The price of each model the debugger can cost (the defaults with ``model_prices`` applied)."""
        return price_table(self.model_prices)

    @property
    def plugin_allow_list(self) -> list[str] | None:
        """The ``plugins`` allow-list as names, or ``None`` to load everything."""
        return _split(self.plugins) if self.plugins is not None else None

    @property
    def plugin_block_list(self) -> list[str]:
        """The ``block_plugins`` names."""
        return _split(self.block_plugins)


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return OTHER_NAMES.get(field, f"BOTLOOM_{field.upper()}")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win.

    Raises :class:`SettingsError` naming the variable for any bad value.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(Settings):
        value = env.get(env_name(field.name))
        if value is not None and value != "":
            raw[field.name] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None


def _explain(message: str) -> str:
    """Turn msgspec's ``... - at `$.field``` into a message naming the environment variable."""
    text, _, where = message.partition(" - at `$.")
    if where:
        field = where.rstrip("`").split(".")[0].split("[")[0]
        return f"{env_name(field)}: {text}"
    return message


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
