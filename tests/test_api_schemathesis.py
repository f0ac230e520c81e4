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
points it (:data:`APP`) at an app on its own copy of a database seeded once.
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
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python import asgi

from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings, load_settings
from botloom.runtime.services import open_services
from botloom.server.app import create_app
from botloom.server.demo import ensure_demo
from tests.conftest import ADMIN_TOKEN, scratch_database
from tests.helpers import LOCAL_ENDPOINTS

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("BOTLOOM_FUZZ_EXAMPLES", "8"))
"""Generated cases per operation and mode, besides the coverage cases; more with ``BOTLOOM_FUZZ_EXAMPLES``."""
RANDOM = os.environ.get("BOTLOOM_FUZZ_RANDOM")
"""Set, the cases differ from run to run (to explore); unset, every run sends the same ones (CI stays stable)."""

SEMANTIC_400 = {
    "POST /api/v1/bots/{bot}/knowledge": "the document must read in its format: a CSV needs question/answer rows, "
    "HTML needs text, the name's extension (or content_type) must be a supported one",
    "POST /api/v1/bots/{bot}/knowledge/files": "the file must read in its format: its name's extension decides "
    "(a .png is refused), and it must be text (not binary, not empty)",
    "PUT /api/v1/bots/{bot}/plugins/{plugin}": "config is checked against the schema of the plugin the path names "
    "(GET shows it as config_schema), and endpoints against the operator's policy",
    "PATCH /api/v1/bots/{bot}": "a setting may be given at the top level or under settings, not both",
    "PUT /api/v1/tenants/{tenant}/teams/{team}": "timezone must be an IANA time zone the server knows, "
    "and each span of hours must end after it starts (docs/desk.md)",
    "POST /api/v1/tenants/{tenant}/webhooks": "the url must be http(s) with a host that resolves to an address "
    "the operator allows (botloom.core.netguard), without credentials or a fragment",
    **dict.fromkeys(
        (
            "GET /api/v1/bots/{bot}/debug/conversations",
            "GET /api/v1/conversations/{conversation_id}/transcript",
            "GET /api/v1/conversations/{conversation_id}/turns",
        ),
        "cursor must be a next_cursor the route answered (an opaque token; any other is a 400)",
    ),
    "POST /api/v1/conversations/{conversation_id}/forks": "break_before and break_after must name nodes of the "
    "bot's graph, state the fields of its state with their types (docs/debugger-actions.md)",
    "POST /api/v1/handovers/{handover_id}/messages": "the Idempotency-Key header and client_message_id, when both "
    "are given, must be the same key (docs/desk.md)",
    "POST /api/v1/forks/{fork_id}/continue": "state must name fields of the bot's graph's state with their types",
    "GET /api/v1/audit": "cursor must be a next_cursor the route answered, and from must be before to",
    "PUT /api/v1/tenants/{tenant}/budget": "alert_at must be ascending, each fraction once (docs/cost-control.md)",
    "GET /api/v1/tenants/{tenant}/usage": "from must not be after to, and the range is at most 366 days",
    **dict.fromkeys(
        ("GET /api/v1/conversations/{conversation_id}/golden-test", "GET /api/v1/forks/{fork_id}/golden-test"),
        "a fork exported must have run to its end, with its state unedited",
    ),
}
"""Operations that may answer 400 to a request the schema allows, and why no JSON schema can say it."""

CONFIG = SchemathesisConfig.from_dict(
    {
        "base-url": "http://testserver",
        # the operator's token, applied by schemathesis (a case it sends without the token stays without it)
        "auth": {"openapi": {"bearer": {"bearer": ADMIN_TOKEN}}},
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
ANSWERED: set[int] = set()
"""The status codes of the current operation's responses (all 401s would mean the token never went out)."""
DOCUMENT = schema_document(load_settings(environ={}))
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
SCHEMA.app = APP


def fuzz_settings(data_dir: Path, database_url: str) -> Settings:
    """The test deployment's settings (as ``tests/conftest.py``'s), without a rate limit: thousands of requests."""
    return load_settings(
        environ={},
        data_dir=str(data_dir),
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key",
        checkpointer="postgres",
        allowed_endpoints=LOCAL_ENDPOINTS,
        rate_limit_per_minute=1_000_000,
    )


async def seed(settings: Settings) -> dict[str, str]:
    """Seed the demo (tenant ``acme``, bot ``support``, knowledge) and one conversation; their path values."""
    async with open_services(settings) as services:
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


def database_name(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]


@pytest.fixture(scope="module")
def seeded(
    pg_server_url: str, template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A database seeded once, copied for each operation's test: its name, the data directory, the path values."""
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    with scratch_database(pg_server_url, "fuzzseed", database_name(template_database_url)) as url:
        settings = fuzz_settings(data_dir, url)
        refs = asyncio.run(seed(settings))
        assert schema_document(settings) == DOCUMENT, "the app under test would serve another schema than the fuzzed"
        yield database_name(url), data_dir, refs


@pytest.fixture
def demo_refs(seeded: tuple[str, Path, dict[str, str]]) -> dict[str, str]:
    """The seeded tenant, bot, plugin, document and conversation, by path parameter name."""
    return seeded[2]


@pytest.fixture
def fuzzed_app(pg_server_url: str, seeded: tuple[str, Path, dict[str, str]]) -> Iterator[Litestar]:
    """The app on a copy of the seeded database, opening its own services."""
    name, data_dir, _ = seeded
    with scratch_database(pg_server_url, "fuzz", name) as url:
        APP.app = create_app(fuzz_settings(data_dir, url), workers=False)
        ANSWERED.clear()
        try:
            yield APP.app
            assert ANSWERED - {401}, f"every request was refused 401 ({ANSWERED}): the token was not sent"
        finally:
            asgi.shutdown_lifespans()
            APP.app = None


def negates_path(case: Case[Any]) -> bool:
    """Whether the case's invalid part is (or may be) in its path: pointed at the demo, it would be valid."""
    meta = case.meta
    if meta is None:
        return False
    data = meta.phase.data
    targeted = {getattr(data, "parameter_location", None)}
    targeted |= {mutation.parameter_location for mutation in getattr(data, "mutations", ())}
    return meta.is_negative_at(ParameterLocation.PATH) or ParameterLocation.PATH in targeted


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=RANDOM is None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_the_api_does_what_its_schema_says(case: Case[Any], fuzzed_app: Litestar, demo_refs: dict[str, str]) -> None:
    ANSWERED.add(case.call_and_validate().status_code)
    # Again at the demo's bot (or tenant...), so the body and query reach the handler; not for a DELETE (the demo's
    # data stays for the next cases), nor for a case whose path is the invalid part (it would no longer be)
    if case.method.upper() != "DELETE" and case.path_parameters and not negates_path(case):
        case.path_parameters = {name: demo_refs.get(name, value) for name, value in case.path_parameters.items()}
        ANSWERED.add(case.call_and_validate().status_code)
