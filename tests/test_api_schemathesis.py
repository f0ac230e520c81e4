"""Property-based tests of ``/api/v1`` from the app's own OpenAPI schema: no input makes it answer 5xx.

Schemathesis generates valid and invalid requests for every operation and sends
them, with the operator's token, to the real app on a real PostgreSQL (seeded
with the demo tenant). Each case is sent twice: as generated, and with its
path pointing at the demo's real tenant, bot, conversation and document, so
the fuzzed bodies and queries reach the handlers and not only the 404s.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.schemas import APIOperation, BaseSchema

from botloom.core.messages import InboundMessage
from botloom.core.settings import Settings
from botloom.runtime.services import open_services
from botloom.server.app import create_app
from botloom.server.demo import ensure_demo
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES = 10
"""Generated cases per operation: enough to find crashes, few enough to stay well under a minute."""


@pytest.fixture
async def demo_refs(settings: Settings, database_url: str) -> dict[str, str]:
    """Seed the demo (tenant ``acme``, bot ``support``, knowledge) and one conversation; their path values."""
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


@pytest.fixture
def api_schema(settings: Settings, database_url: str, demo_refs: dict[str, str]) -> Iterator[BaseSchema]:
    """The app's schema; the app opens its own services (in schemathesis' event loop) on the test database."""
    app = create_app(msgspec.structs.replace(settings, database_url=database_url), workers=False)
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    try:
        yield schema.include(path_regex="^/api/v1/")
    finally:
        asgi.shutdown_lifespans()


def fuzz(operation: APIOperation, refs: dict[str, str]) -> None:
    """Send generated requests, valid and invalid, to one operation; fail on any 5xx."""
    cases = st.one_of(operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Case) -> None:
        case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
        if case.method.upper() != "DELETE" and case.path_parameters:
            case.path_parameters = {name: refs.get(name, value) for name, value in case.path_parameters.items()}
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

    check()


def test_api_never_answers_5xx(api_schema: BaseSchema, demo_refs: dict[str, str]) -> None:
    # schemathesis' own pytest integration (``from_fixture``) does not run on pytest 9, so this drives it
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        try:
            fuzz(operation, demo_refs)
        except Exception as exc:  # noqa: BLE001 - report every failing operation, not just the first
            failures[operation.label] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{label}\n{error}" for label, error in failures.items())
