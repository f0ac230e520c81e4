"""The debugger page and the API docs in real headless Chromium, with the network limited to botloom itself.

Every request the browser makes is routed through :func:`only_botloom`: one to any
other origin (a CDN, a font service) is aborted and fails the test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from botloom.testing.openai import Reply, ScriptedOpenAI, classification
from tests.conftest import scratch_database
from tests.serve_process import Server
from tests.test_chat_page import CHROMIUM, launched_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
ADMIN = {"Authorization": "Bearer admin"}  # tests.serve_process sets BOTLOOM_ADMIN_TOKEN=admin


@pytest.fixture
def server(database_url: str, data_dir: Path) -> Iterator[Server]:
    with Server(database_url, data_dir) as running:
        yield running


@pytest.fixture(scope="module")
def reading_server(
    pg_server_url: str, template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One ``botloom serve --demo`` for the module's tests that write nothing (the API docs, the sign-in form)."""
    data_dir = tmp_path_factory.mktemp("debug-page-data")
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with scratch_database(pg_server_url, "t", template) as database_url, Server(database_url, data_dir) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; each page gets a browser context of its own (no shared storage)."""
    with launched_chromium() as launched:
        yield launched


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Guard:
    """Lets requests to botloom through and aborts (and remembers) every other one."""

    def __init__(self, allowed: str) -> None:
        self.allowed = origin(allowed)
        self.foreign: list[str] = []

    def __call__(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or origin(url) == self.allowed:
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()


@contextmanager
def chromium_page(browser: Any, url: str, height: int | None = 950) -> Iterator[Any]:
    """A page in a new context of ``browser``, limited to ``url``'s origin: a request elsewhere fails the test."""
    context = browser.new_context(viewport={"width": 1500, "height": height}) if height else browser.new_context()
    try:
        guard = Guard(url)
        context.route("**/*", guard)
        yield context.new_page()
    finally:
        context.close()
    assert guard.foreign == [], f"requests to other origins: {guard.foreign}"


def sign_in(page: Any, key: str = "admin") -> None:
    """Sign in on the debugger's page with ``key`` (the serve process's operator token by default)."""
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def keep(page: Any, name: str) -> None:
    """A screenshot in ``BOTLOOM_SCREENSHOTS`` when it is set."""
    folder = os.environ.get("BOTLOOM_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_debug_page_steps_through_a_turn(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    first = httpx.post(
        f"{server.url}/api/v1/bots/acme/support/messages", json={"text": "where is my order 1234?"}, headers=ADMIN
    )
    assert first.status_code == 200, first.text
    cid = first.json()["conversation_id"]
    second = httpx.post(
        f"{server.url}/api/v1/bots/acme/support/messages",
        json={"text": "thanks, bye", "conversation_id": cid},
        headers=ADMIN,
    )
    assert second.status_code == 200, second.text

    with chromium_page(browser, server.url) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/debug")
        sign_in(page)
        expect(page.locator("#bot option", has_text="acme/support")).to_have_count(1, timeout=15_000)
        expect(page.locator("#graph svg g.node")).to_have_count(7)  # start, five nodes, end
        expect(page.locator("#conversations li")).to_have_count(1)
        keep(page, "debug-signed-in.png")

        page.locator("#conversations li").first.click()
        expect(page.locator("#turns li")).to_have_count(2)
        expect(page.locator("#transcript li")).to_have_count(4)
        page.locator("#turns li", has_text="where is my order 1234?").click()
        expect(page.locator("#step-node")).to_have_text("retrieve", timeout=15_000)
        expect(page.locator("#step-position")).to_have_text("step 1 of 4")
        expect(page.locator("#graph svg g.node.on-path")).to_have_count(6)
        expect(page.locator("#transcript li.current")).to_have_count(2)

        page.get_by_role("button", name="Next ▶").click()
        expect(page.locator("#step-node")).to_have_text("classify")
        expect(page.locator("#step-did")).to_contain_text("order_status")
        expect(page.locator("#step-did")).to_contain_text("order_number")
        page.get_by_role("button", name="State diff").click()
        diff = page.get_by_label("State diff")
        expect(diff).to_be_visible()
        expect(diff.get_by_role("cell", name="intent", exact=True)).to_have_count(1)
        expect(diff.get_by_role("cell", name="slots", exact=True)).to_have_count(1)
        expect(diff.get_by_role("cell", name="passages", exact=True)).to_have_count(0)  # retrieve's, not this
        page.get_by_role("button", name="Next ▶").click()
        expect(page.locator("#step-node")).to_have_text("act")
        expect(page.locator("#step-did")).to_contain_text("Tools called")
        page.get_by_role("button", name="Next ▶").click()
        expect(page.locator("#step-node")).to_have_text("respond")
        expect(page.locator("#step-did")).to_contain_text("1234 has shipped")
        expect(page.get_by_role("button", name="Next ▶")).to_be_disabled()
        page.get_by_role("button", name="◀ Previous").click()
        expect(page.locator("#step-node")).to_have_text("act")
        keep(page, "debug-turn.png")

        assert page.url.startswith(f"{server.url}/debug/"), page.url  # the page keeps its place in its address
        page.reload()
        expect(page.locator("#step-node")).to_have_text("retrieve", timeout=15_000)  # signed in still (the tab)
        expect(page.locator("#turn-title")).to_have_text("Turn: where is my order 1234?")
        expect(page.locator("#turn-cost")).to_have_text("No model call.")  # the demo runs offline
        expect(page.locator("#turns li.selected")).to_have_count(1)

        page.locator("#f-status").select_option("escalated")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#conversations li")).to_have_text(["No conversations match."])
        person = httpx.post(
            f"{server.url}/api/v1/bots/acme/support/messages",
            json={"text": "I want to talk to a person"},
            headers=ADMIN,
        )
        assert person.status_code == 200 and person.json()["escalated"], person.text
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#conversations li .badge.escalated")).to_have_count(1)
        page.locator("#conversations li").first.click()
        page.locator("#turns li").first.click()
        expect(page.locator("#step-meta")).to_contain_text("paused before escalate", timeout=15_000)
        expect(page.locator("#step-meta")).to_contain_text("for a person")
        assert errors == []


def test_api_docs_render_offline(reading_server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    server = reading_server
    with chromium_page(browser, server.url, None) as page:
        for path in ("/schema", "/schema/swagger"):
            page.goto(f"{server.url}{path}")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("botloom", timeout=15_000)
            expect(page.locator(".opblock-tag-section").first).to_be_visible()
        keep(page, "schema-swagger.png")
        assert httpx.get(f"{server.url}/schema/redoc").status_code == 404  # its assets come from CDNs only


def test_fork_breakpoint_and_replay_from_the_page(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    first = httpx.post(
        f"{server.url}/api/v1/bots/acme/support/messages", json={"text": "where is my order 1234?"}, headers=ADMIN
    )
    assert first.status_code == 200, first.text
    cid = first.json()["conversation_id"]

    def transcript() -> list[str]:
        page = httpx.get(f"{server.url}/api/v1/conversations/{cid}/transcript", headers=ADMIN).json()
        return [m["text"] for m in page["messages"]]

    sent = transcript()
    with chromium_page(browser, server.url, 1100) as page:
        page.goto(f"{server.url}/debug")
        sign_in(page)
        page.locator("#conversations li").first.click()
        page.locator("#turns li", has_text="where is my order 1234?").click()
        expect(page.locator("#step-node")).to_have_text("retrieve", timeout=15_000)
        page.get_by_text("Fork, replay, golden test").click()

        page.get_by_label("Message").fill("where is my order 5678?")
        page.get_by_role("button", name="Fork from this turn").click()
        expect(page.locator("#fork-replies .fork-reply").first).to_contain_text("5678", timeout=15_000)
        expect(page.locator("#fork-original")).to_contain_text("1234")
        expect(page.locator("#fork-paused")).to_contain_text("nothing was sent")
        expect(page.get_by_label("Fork diff")).to_be_visible()

        page.get_by_label("Message").fill("")
        page.get_by_label("Pause before").fill("respond")
        page.get_by_role("button", name="Fork from this turn").click()
        expect(page.locator("#fork-paused")).to_contain_text("respond", timeout=15_000)
        expect(page.locator("#fork-replies .fork-reply")).to_have_count(0)
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#fork-replies .fork-reply").first).to_contain_text("1234", timeout=15_000)
        keep(page, "debug-fork.png")

        page.get_by_role("button", name="Replay the conversation").click()
        expect(page.get_by_label("Replay", exact=True)).to_be_visible(timeout=15_000)
        expect(page.get_by_label("Replay", exact=True).locator("tbody tr")).to_have_count(1)
        expect(page.locator("#replay-summary")).to_have_text("0 turn(s) differ")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download golden test").click()
        assert "def test_" in Path(download.value.path()).read_text(encoding="utf-8")
        keep(page, "debug-replay.png")
    assert transcript() == sent, "a fork or a replay sent something to the end user"


def test_only_the_sign_in_shows_until_signed_in_and_a_wrong_key_says_so(reading_server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    server = reading_server
    with chromium_page(browser, server.url) as page:
        page.goto(f"{server.url}/debug")
        expect(page.get_by_label("API key")).to_be_visible()
        for panel in ("#app", "#left", "#middle", "#right", "#graph", "#transcript"):
            expect(page.locator(panel)).to_be_hidden()
        expect(page.get_by_role("heading", name="Transcript")).to_be_hidden()
        expect(page.get_by_role("button", name="Sign out")).to_be_hidden()

        page.get_by_label("API key").fill("blk_not-a-key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#sign-in-error")).to_contain_text("That key was refused", timeout=15_000)
        expect(page.locator("#app")).to_be_hidden()

        sign_in(page)
        expect(page.locator("#app")).to_be_visible(timeout=15_000)
        expect(page.locator("#sign-in")).to_be_hidden()
        expect(page.locator("#sign-in-error")).to_have_text("")


@pytest.fixture
def priced_server(database_url: str, data_dir: Path, openai: ScriptedOpenAI) -> Iterator[Server]:
    """``botloom serve --demo`` whose bot talks to the scripted model, priced by ``BOTLOOM_MODEL_PRICES``."""
    model = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": openai.base_url, "BOTLOOM_LLM_MODEL": "house-model"}
    with Server(database_url, data_dir, BOTLOOM_MODEL_PRICES="house-model=1/2", **model) as running:
        yield running


def test_the_debugger_shows_what_a_turn_with_a_model_cost(
    priced_server: Server, openai: ScriptedOpenAI, browser: Any
) -> None:
    from playwright.sync_api import expect

    openai.script(
        Reply(
            content=json.dumps(classification("none", confidence=0.2)),
            usage={"prompt_tokens": 1000, "completion_tokens": 200},
        ),
        Reply(content="Express shipping costs 9.90 euros.", usage={"prompt_tokens": 2000, "completion_tokens": 100}),
    )
    r = httpx.post(
        f"{priced_server.url}/api/v1/bots/acme/support/messages",
        json={"text": "how much is express shipping?"},
        headers=ADMIN,
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["replies"][0]["text"] == "Express shipping costs 9.90 euros.", r.text
    # house-model at $1 per million input and $2 per million output tokens:
    # classify 1000 in + 200 out = $0.0014, respond 2000 in + 100 out = $0.0022, the turn $0.0036
    with chromium_page(browser, priced_server.url) as page:
        page.goto(f"{priced_server.url}/debug")
        sign_in(page)
        page.locator("#conversations li").first.click()
        expect(page.locator("#turns li")).to_contain_text(["$0.003600"], timeout=15_000)
        page.locator("#turns li").first.click()
        expect(page.locator("#turn-cost")).to_have_text("2 model call(s) · 3300 tokens · $0.003600", timeout=15_000)
        page.get_by_role("button", name="Next ▶").click()
        expect(page.locator("#step-node")).to_have_text("classify")
        expect(page.locator("#step-did .model-calls li")).to_contain_text(["house-model · 1000 in / 200 out"])
        expect(page.locator("#step-did .model-calls .cost")).to_have_text(["$0.001400"])
        keep(page, "debug-cost.png")
