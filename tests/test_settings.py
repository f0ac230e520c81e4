"""Deployment settings from ``BOTLOOM_*`` variables: parsing, defaults, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from botloom.core.settings import Settings, SettingsError, env_name, load_settings


def test_defaults_with_an_empty_environment() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.database_url is None
    assert settings.checkpointer == "postgres"
    assert settings.plugin_allow_list is None
    assert settings.plugin_block_list == []
    assert not settings.llm_enabled


def test_every_field_is_read_from_its_variable() -> None:
    environ = {
        "BOTLOOM_DATABASE_URL": "postgresql://bot:pw@db.internal:5432/botloom",
        "BOTLOOM_REDIS_URL": "redis://cache:6379/1",
        "BOTLOOM_CHECKPOINTER": "redis",
        "BOTLOOM_CHECKPOINT_TTL_MINUTES": "90",
        "BOTLOOM_DATA_DIR": "/var/lib/botloom",
        "BOTLOOM_ADMIN_TOKEN": "admin",
        "BOTLOOM_SECRET_KEY": "passphrase",
        "BOTLOOM_LLM_MODEL": "gpt-4.1",
        "BOTLOOM_EMBEDDER": "openai",
        "BOTLOOM_EMBEDDING_MODEL": "text-embedding-3-large",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://llm.internal/v1",
        "BOTLOOM_PLUGINS": "smalltalk",
        "BOTLOOM_BLOCK_PLUGINS": "demo_shop",
        "BOTLOOM_PUBLIC_URL": "https://bots.example.com",
        "BOTLOOM_DB_POOL_SIZE": "25",
        "BOTLOOM_LOG_LEVEL": "DEBUG",
        "BOTLOOM_LOG_FORMAT": "json",
        "BOTLOOM_TURN_TIMEOUT": "30.5",
        "BOTLOOM_TOOL_TIMEOUT": "4",
        "BOTLOOM_UNRELATED": "ignored",
    }
    settings = load_settings(environ=environ)
    assert settings.database_url == environ["BOTLOOM_DATABASE_URL"]
    assert (settings.checkpointer, settings.checkpoint_ttl_minutes) == ("redis", 90)
    assert (settings.db_pool_size, settings.turn_timeout, settings.tool_timeout) == (25, 30.5, 4.0)
    assert (settings.openai_api_key, settings.openai_base_url) == ("sk-test", "http://llm.internal/v1")
    assert (settings.log_level, settings.log_format, settings.embedder) == ("DEBUG", "json", "openai")
    assert settings.llm_enabled
    assert settings.data_path == Path("/var/lib/botloom")


def test_empty_variables_count_as_unset() -> None:
    settings = load_settings(environ={"BOTLOOM_DATABASE_URL": "", "BOTLOOM_DB_POOL_SIZE": ""})
    assert settings.database_url is None
    assert settings.db_pool_size == 10


def test_overrides_win_over_the_environment() -> None:
    settings = load_settings(environ={"BOTLOOM_DB_POOL_SIZE": "5"}, db_pool_size=7, admin_token=None)
    assert settings.db_pool_size == 7


@pytest.mark.parametrize(
    ("value", "allow"),
    [("smalltalk", ["smalltalk"]), (" a, b,,c ", ["a", "b", "c"]), (",", [])],
)
def test_the_plugin_allow_list_is_split_on_commas(value: str, allow: list[str]) -> None:
    settings = load_settings(environ={"BOTLOOM_PLUGINS": value, "BOTLOOM_BLOCK_PLUGINS": value})
    assert settings.plugin_allow_list == allow
    assert settings.plugin_block_list == allow


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"BOTLOOM_CHECKPOINTER": "mysql"}, "BOTLOOM_CHECKPOINTER"),
        ({"BOTLOOM_CHECKPOINTER": "redis"}, "BOTLOOM_REDIS_URL"),
        ({"BOTLOOM_DB_POOL_SIZE": "ten"}, "BOTLOOM_DB_POOL_SIZE"),
        ({"BOTLOOM_DB_POOL_SIZE": "0"}, "BOTLOOM_DB_POOL_SIZE"),
        ({"BOTLOOM_DB_POOL_SIZE": "2.5"}, "BOTLOOM_DB_POOL_SIZE"),
        ({"BOTLOOM_DATABASE_URL": "mysql://db/botloom"}, "BOTLOOM_DATABASE_URL"),
        ({"BOTLOOM_DATABASE_URL": "db.internal:5432"}, "BOTLOOM_DATABASE_URL"),
        ({"BOTLOOM_REDIS_URL": "http://cache:6379"}, "BOTLOOM_REDIS_URL"),
        ({"BOTLOOM_CHECKPOINT_TTL_MINUTES": "0"}, "BOTLOOM_CHECKPOINT_TTL_MINUTES"),
        ({"BOTLOOM_TURN_TIMEOUT": "-1"}, "BOTLOOM_TURN_TIMEOUT"),
        ({"BOTLOOM_TOOL_TIMEOUT": "soon"}, "BOTLOOM_TOOL_TIMEOUT"),
        ({"BOTLOOM_LOG_LEVEL": "loud"}, "BOTLOOM_LOG_LEVEL"),
        ({"BOTLOOM_EMBEDDER": "openai"}, "OPENAI_API_KEY"),
    ],
)
def test_a_bad_value_names_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ)
    assert variable in str(caught.value)
    assert "$." not in str(caught.value)  # msgspec's path was turned into the variable's name


def test_the_error_of_a_bad_value_says_what_is_expected() -> None:
    with pytest.raises(SettingsError, match=r"BOTLOOM_DB_POOL_SIZE: Expected `int`"):
        load_settings(environ={"BOTLOOM_DB_POOL_SIZE": "ten"})
    with pytest.raises(SettingsError, match=r"BOTLOOM_CHECKPOINTER: Invalid enum value 'mysql'"):
        load_settings(environ={"BOTLOOM_CHECKPOINTER": "mysql"})


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://cache:6380", "unix:///run/redis.sock"])
def test_the_redis_checkpointer_with_a_redis_url(url: str) -> None:
    settings = load_settings(environ={"BOTLOOM_CHECKPOINTER": "redis", "BOTLOOM_REDIS_URL": url})
    assert (settings.checkpointer, settings.redis_url) == ("redis", url)


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u:p@h:5433/db?sslmode=require"])
def test_both_postgres_schemes_are_accepted(url: str) -> None:
    assert load_settings(environ={"BOTLOOM_DATABASE_URL": url}).database_url == url


def test_env_names() -> None:
    assert env_name("database_url") == "BOTLOOM_DATABASE_URL"
    assert env_name("openai_api_key") == "OPENAI_API_KEY"
    assert env_name("openai_base_url") == "OPENAI_BASE_URL"


def test_the_settings_repr_masks_every_secret() -> None:
    settings = Settings(
        admin_token="admin-tok-123",
        secret_key="secret-key-456",
        openai_api_key="sk-live-789",
        database_url="postgresql://bot:db-pass-000@db.internal/botloom",
        redis_url="redis://:redis-pass-111@cache:6379/0",
    )
    shown = repr(settings)
    for secret in ("admin-tok-123", "secret-key-456", "sk-live-789", "db-pass-000", "redis-pass-111"):
        assert secret not in shown
    assert "db.internal/botloom" in shown and "cache:6379/0" in shown, "what is not secret still shows"
