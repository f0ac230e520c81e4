"""The API schema at ``/schema`` says what the server does: schemathesis, with every check, over every operation.

Schemathesis reads the app's own OpenAPI schema and, for each operation, sends
the examples, the coverage cases (boundaries, each constraint broken once,
methods the path does not declare, ``OPTIONS``) and generated requests, valid
and invalid, with the operator's token, to the real app on a real PostgreSQL
seeded with the demo tenant. Every response is checked by all of schemathesis'
checks: no 5xx; status codes, content types, headers and bodies as documented;
valid requests accepted and invalid ones refused; 405 with ``Allow`` for an
undeclared method and an ``Allow`` that names every declared one; 401 without
the token. Each case is sent twice: as generated, and with its path pointing at
the demo's real tenant, bot, plugin, conversation and document, so bodies and
queries reach the handlers and not only the 404s.

What the test tolerates, each for a reason the schema cannot state
(:data:`CONFIG`): a schema-valid request may be refused with 400 where the
server checks what no JSON schema can say (a document must read in its format,
a plugin's config must match that plugin's schema, a setting must not be given
twice). Nothing is excluded: the channels' webhooks are fuzzed too, though
without a provider's signature they only ever answer 403 or 404.

Schemathesis' pytest integration runs one test per operation
(``@SCHEMA.parametrize()``); ``from_fixture`` does not run on pytest 9, so the
schema is built at import from an app with the same plugins, and each test
points it (:data:`APP`) at an app on its own database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from litestar.types import Receive, Scope, Send
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings, load_settings
from botloom.runtime.services import open_services
from botloom.server.app import create_app
from botloom.server.demo import ensure_demo
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES = int(os.environ.get("BOTLOOM_FUZZ_EXAMPLES", "8"))
"""Generated cases per operation and mode, besides the coverage cases; more with ``BOTLOOM_FUZZ_EXAMPLES``."""

SEMANTIC_400 = {
    "POST /api/v1/bots/{bot}/knowledge": "the document must read in its format: a CSV needs question/answer rows, "
    "HTML needs text, the name's extension (or content_type) must be a supported one",
    "POST /api/v1/bots/{bot}/knowledge/files": "the file must read in its format: its name's extension decides "
    "(a .png is refused), and it must be text (not binary, not empty)",
    "PUT /api/v1/bots/{bot}/plugins/{plugin}": "config is checked against the schema of the plugin the path names "
    "(GET shows it as config_schema), and endpoints against the operator's policy",
    "PATCH /api/v1/bots/{bot}": "a setting may be given at the top level or under settings, not both",
}
"""Operations that may answer 400 to a request the schema allows, and why no JSON schema can say it."""

CONFIG = SchemathesisConfig.from_dict(
    {
        "base-url": "http://testserver",
        "operations": [
            {
                "include-name": name,
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404"]}},
            }
            for name in SEMANTIC_400
        ],
    }
)


class AppUnderTest:
    """The ASGI app schemathesis calls: the current test's app (the schema is loaded before any test runs)."""

    app: Litestar | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call, lifespan included, to the current test's app."""
        assert self.app is not None, "no app: use the fuzzed_app fixture"
        await self.app(scope, receive, send)


def schema_document(settings: Settings) -> dict[str, Any]:
    """``/schema/openapi.json`` of an app built with ``settings``, as a client reads it."""
    app = create_app(settings, workers=False)
    document: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(app.openapi_schema.to_schema()))
    return document


APP = AppUnderTest()
DOCUMENT = schema_document(load_settings(environ={}))
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
SCHEMA.app = APP


@pytest.fixture
def demo_refs(settings: Settings, database_url: str) -> dict[str, str]:
    """Seed the demo (tenant ``acme``, bot ``support``, knowledge) and one conversation; their path values."""

    async def seed() -> dict[str, str]:
        async with open_services(settings, url=database_url) as services:
            demo = await ensure_demo(services)
            conversation = await services.store.conversations.create(demo.tenant.id, demo.bot.id, "rest")
            message = InboundMessage(channel="rest", text="where is my order 1234?", sender="fuzz")
            await services.inbound.answer(demo.bot, message, conversation_id=conversation.id)
        return {
            "tenant": demo.tenant.slug,
            "bot": demo.bot.id,
            "plugin": "smalltalk",
            "document": "returns.md",
            "conversation_id": conversation.id,
        }

    return asyncio.run(seed())


@pytest.fixture
def fuzzed_app(settings: Settings, database_url: str, demo_refs: dict[str, str], data_dir: Path) -> Iterator[Litestar]:
    """The app on the test's database, opening its own services; no rate limit (thousands of requests a minute)."""
    fuzz_settings = msgspec.structs.replace(settings, database_url=database_url, rate_limit_per_minute=1_000_000)
    app = create_app(fuzz_settings, workers=False)
    assert schema_document(fuzz_settings) == DOCUMENT, "the app under test serves another schema than the one fuzzed"
    APP.app = app
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()
        APP.app = None


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_api_does_what_its_schema_says(case: Case[Any], fuzzed_app: Litestar, demo_refs: dict[str, str]) -> None:
    case.call_and_validate(headers=AUTH)
    if case.method.upper() != "DELETE" and case.path_parameters:  # the demo's data stays for the next cases
        case.path_parameters = {name: demo_refs.get(name, value) for name, value in case.path_parameters.items()}
        case.call_and_validate(headers=AUTH)
