"""The agent desk page and the end user's web chat in real headless Chromium, against a real ``botloom serve``.

Two agents sign in on two browser contexts; an end user asks the demo bot's web chat
for a person. Both desks see the handover appear live (no reload); one claims it and
the other sees it taken; the web chat shows that a person joined, the agent's reply
and that the bot is back. Every request the pages make goes to botloom itself: one
to another origin fails the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
import psycopg
import pytest

from botloom.core.settings import Settings
from botloom.core.storage.database import Database
from botloom.core.storage.repositories.handovers import OPEN_STATUSES, HandoverRepository
from botloom.runtime.locks import LOCK_SQL, UNLOCK_SQL
from botloom.runtime.services import open_services
from botloom.server import demo as demo_module
from botloom.server.demo import ensure_demo
from tests.conftest import scratch_database
from tests.serve_process import Server
from tests.test_chat_page import CHROMIUM, launched_chromium

pytestmark = [pytest.mark.slow, pytest.mark.serial]
PASSWORD = "correct horse battery"
WAIT = 20_000
ADMIN = {"Authorization": "Bearer admin"}
T = TypeVar("T")


@dataclass
class Site:
    """A ``botloom serve`` and the tenant a test works in (with the demo bot ``support``)."""

    server: Server
    tenant: str

    @property
    def url(self) -> str:
        return self.server.url


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end in a thread of its own (Playwright's event loop runs in this one)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="module")
def shared_server(
    pg_server_url: str, template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``botloom serve`` (workers in process) started once for the module; each test works in a tenant of its own."""
    data_dir = tmp_path_factory.mktemp("desk-page-data")
    template = template_database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with (
        scratch_database(pg_server_url, "t", template) as database_url,
        Server(database_url, data_dir, demo=False) as running,
    ):
        yield running


@pytest.fixture
def site(shared_server: Server, settings: Settings) -> Site:
    """The demo bot ``support`` (its plugins, knowledge and settings) in a new tenant of the shared server."""
    tenant = f"desk-{uuid.uuid4().hex[:12]}"
    settings = msgspec.structs.replace(settings, secret_key=shared_server.env["BOTLOOM_SECRET_KEY"])

    async def make() -> None:
        async with open_services(settings, url=shared_server.env["BOTLOOM_DATABASE_URL"]) as services:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(demo_module, "DEMO_TENANT", tenant)
                await ensure_demo(services)

    run_async(make())
    return Site(shared_server, tenant)


@pytest.fixture
def site_without_workers(database_url: str, data_dir: Path) -> Iterator[Site]:
    """``botloom serve --demo --no-workers`` on the test's database: no desk sweep runs, a pending resume stays."""
    with Server(database_url, data_dir, workers=False) as running:
        yield Site(running, "acme")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (each page opens in a browser context of its own)."""
    with launched_chromium() as launched:
        yield launched


def make_agent(site: Site, email: str, name: str) -> None:
    r = httpx.post(
        f"{site.url}/api/v1/tenants/{site.tenant}/agents",
        json={"email": email, "name": name, "password": PASSWORD, "teams": []},
        headers={"Authorization": "Bearer admin"},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def same_origin_only(context: Any, origin: str, foreign: list[str]) -> None:
    """Abort (and record) every request of the context to another origin."""

    def check(route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != origin and not url.startswith(("data:", "blob:")):
            foreign.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", check)


@contextmanager
def chromium(browser: Any, site: Site) -> Iterator[Callable[[], Any]]:
    """``new_page()`` opens a page of ``browser`` in a browser context of its own, limited to botloom."""
    foreign: list[str] = []
    contexts: list[Any] = []

    def new_page() -> Any:
        context = browser.new_context()
        contexts.append(context)
        same_origin_only(context, site.url, foreign)
        return context.new_page()

    try:
        yield new_page
    finally:
        for context in contexts:
            context.close()
    assert foreign == [], f"requests to other origins: {foreign}"


def sign_in(page: Any, site: Site, email: str) -> None:
    page.goto(f"{site.url}/desk")
    page.get_by_label("Tenant").fill(site.tenant)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_two_agents_and_the_web_chat_live(site: Site, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    make_agent(site, "ada@acme.test", "Ada")
    make_agent(site, "bob@acme.test", "Bob")
    r = httpx.post(
        f"{site.url}/api/v1/canned?tenant={site.tenant}",
        json={"shortcut": "order", "text": "Let me look at your order right away."},
        headers={"Authorization": "Bearer admin"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    with chromium(browser, site) as new_page:
        ada, bob, user = new_page(), new_page(), new_page()

        sign_in(ada, site, "ada@acme.test")
        sign_in(bob, site, "bob@acme.test")
        for desk in (ada, bob):
            expect(desk.locator("#live")).to_have_text("live", timeout=WAIT)
            expect(desk.locator("#queue-empty")).to_be_visible()
        wrong = bob.context.new_page()
        sign_in(wrong, site, "nobody@acme.test")
        expect(wrong.locator("#sign-in-error")).to_contain_text("Wrong", timeout=WAIT)
        wrong.close()

        user.goto(f"{site.url}/chat/{site.tenant}/support")
        expect(user.locator("#status")).to_have_text("online", timeout=WAIT)
        user.get_by_label("Your message").fill("I want to talk to a person")
        user.get_by_role("button", name="Send").click()

        # both desks see the handover appear without reloading
        for desk in (ada, bob):
            expect(desk.locator("#queue li")).to_have_count(1, timeout=WAIT)
        item_text = ada.locator("#queue li .state").first.inner_text()
        # routing may already have assigned it to one of them: that one claims it
        claimer, other, claimer_name = (bob, ada, "Bob") if "Bob" in item_text else (ada, bob, "Ada")
        claimer.locator("#queue li").first.click()
        expect(claimer.locator("#summary")).to_contain_text("person", timeout=WAIT)
        expect(claimer.locator("#history li.inbound")).to_contain_text(["I want to talk to a person"])
        claimer.get_by_role("button", name="Claim").click()
        expect(claimer.locator("#queue li .state")).to_have_text("yours", timeout=WAIT)
        expect(other.locator("#queue li .state")).to_have_text(f"taken by {claimer_name}", timeout=WAIT)
        expect(other.locator("#queue li")).to_have_class("taken ", timeout=WAIT)
        other.locator("#queue li").first.click()
        expect(other.get_by_role("button", name=f"Taken by {claimer_name}")).to_be_disabled()
        expect(other.locator("#reply")).to_be_disabled()

        expect(user.locator(".person-joined")).to_contain_text(f"{claimer_name}, a person, has joined", timeout=WAIT)
        claimer.get_by_label("Reply to the user").fill("Hi, I am here to help with your order.")
        claimer.get_by_role("button", name="Send").click()
        expect(user.locator(".msg.agent")).to_contain_text("Hi, I am here to help with your order.", timeout=WAIT)
        expect(claimer.locator("#history li.outbound").last).to_have_text(
            "Hi, I am here to help with your order.", timeout=WAIT
        )

        claimer.get_by_label("Canned response").select_option(label="order")
        expect(claimer.locator("#reply")).to_have_value("Let me look at your order right away.")
        claimer.get_by_role("button", name="Send").click()
        expect(user.locator(".msg.agent").last).to_contain_text("Let me look at your order right away.", timeout=WAIT)

        # the user answers: the agent sees it live in the open conversation
        user.get_by_label("Your message").fill("thanks, it is order 1234")
        user.get_by_role("button", name="Send").click()
        expect(claimer.locator("#history li.inbound").last).to_have_text("thanks, it is order 1234", timeout=WAIT)

        claimer.get_by_label("Add a note (only agents see it)").fill("customer is friendly")
        claimer.get_by_role("button", name="Add note").click()
        expect(claimer.locator("#notes li")).to_have_text([f"{claimer_name}: customer is friendly"], timeout=WAIT)

        claimer.get_by_label("Note for the bot").fill("order 1234 is fine")
        claimer.get_by_role("button", name="Hand back to the bot").click()
        expect(user.locator(".bot-back")).to_have_text("The bot is back", timeout=WAIT)
        for desk in (ada, bob):
            expect(desk.locator("#queue li")).to_have_count(0, timeout=WAIT)
        assert "customer is friendly" not in user.locator("#log").inner_text(), "notes stay with the agents"

        claimer.screenshot(path=str(tmp_path / "desk.png"))
        keep = os.environ.get("BOTLOOM_SCREENSHOT_DIR")
        if keep:
            shutil.copy(tmp_path / "desk.png", Path(keep) / "desk.png")


async def fail_resume(database_url: str, tenant_id: str, handover_id: str, attempts: int) -> None:
    """Close the handover as a hand-back whose resume failed ``attempts`` times leaves it (an unreachable database).

    Through botloom's own repository: closed (``returned_to_bot``), ``resumed_at`` empty, the failures
    counted with the error's code; the conversation stays with a person and its graph paused.
    """
    db = await Database.open(database_url, migrate=False, max_size=1)
    try:
        handovers = HandoverRepository(db)
        moved = await handovers.move(tenant_id, handover_id, "returned_to_bot", allowed=OPEN_STATUSES)
        assert moved.moved
        for _ in range(attempts):
            await handovers.resume_failed(tenant_id, handover_id, "OperationalError")
    finally:
        await db.close()


def escalated(site: Site, email: str, name: str, user: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An agent ``email`` and a conversation of ``user`` handed over: its id, its handover and the tenant."""
    make_agent(site, email, name)
    r = httpx.post(
        f"{site.url}/api/v1/bots/{site.tenant}/support/messages",
        json={"text": "I want to talk to a person", "user": user},
        headers=ADMIN,
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["escalated"], r.text
    [handover] = httpx.get(f"{site.url}/api/v1/handovers?tenant={site.tenant}", headers=ADMIN, timeout=30).json()
    tenant = httpx.get(f"{site.url}/api/v1/tenants/{site.tenant}", headers=ADMIN, timeout=30).json()
    return r.json()["conversation_id"], handover, tenant


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_desk_shows_a_pending_resume_and_retries_it(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    conversation, handover, tenant = escalated(site, "cy@acme.test", "Cy", "resume-user")
    database_url = site.server.env["BOTLOOM_DATABASE_URL"]
    with psycopg.connect(database_url, autocommit=True) as turn:
        # a turn of the conversation holds its lock (as the runner takes it): the server's desk_sweep, which
        # retries pending resumes each minute, waits for it instead of resuming under the test's eyes
        turn.execute(LOCK_SQL, (conversation,))
        run_async(fail_resume(database_url, tenant["id"], handover["id"], 2))
        with chromium(browser, site) as new_page:
            desk = new_page()
            sign_in(desk, site, "cy@acme.test")
            expect(desk.locator("#queue-empty")).to_be_visible(timeout=WAIT)
            pending = desk.locator("#resumes li")
            expect(pending).to_have_count(1, timeout=WAIT)
            expect(pending.locator(".state")).to_have_text(
                "returned to bot · resume failed 2× (OperationalError) · retrying"
            )
            turn.execute(UNLOCK_SQL, (conversation,))
            pending.get_by_role("button", name="Retry now").click()
            expect(desk.locator("#resumes-box")).to_be_hidden(timeout=WAIT)
            expect(desk.locator("#resume-error")).to_have_text("")
    r = httpx.get(f"{site.url}/api/v1/handovers/{handover['id']}?tenant={site.tenant}", headers=ADMIN, timeout=30)
    assert r.json()["resumed_at"] is not None, "the bot has the conversation back"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_an_agent_takes_back_a_pending_resume_on_the_desk(
    site_without_workers: Site, database_url: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    # The desk_sweep (a cron job of the workers, each minute) would retry the pending resume, and succeed:
    # this server runs no workers, so the resume stays pending until the agent takes it back.
    site = site_without_workers
    conversation, handover, tenant = escalated(site, "di@acme.test", "Di", "take-back-user")
    run_async(fail_resume(database_url, tenant["id"], handover["id"], 1))
    with chromium(browser, site) as new_page:
        desk = new_page()
        sign_in(desk, site, "di@acme.test")
        pending = desk.locator("#resumes li")
        expect(pending).to_have_count(1, timeout=WAIT)
        pending.get_by_role("button", name="Take it back").click()
        expect(desk.locator("#resumes-box")).to_be_hidden(timeout=WAIT)
        expect(desk.locator("#resume-error")).to_have_text("")
        expect(desk.locator("#queue li")).to_have_count(1, timeout=WAIT)
        expect(desk.locator("#open-status")).to_contain_text("assigned to you", timeout=WAIT)
    r = httpx.get(f"{site.url}/api/v1/handovers/{handover['id']}?tenant={site.tenant}", headers=ADMIN, timeout=30)
    taken = r.json()
    assert (taken["status"], taken["resumed_at"], taken["resume_attempts"]) == ("assigned", None, 0), taken
    assert taken["agent_id"] is not None
    conversation_now = httpx.get(f"{site.url}/api/v1/conversations/{conversation}", headers=ADMIN, timeout=30)
    assert conversation_now.json()["status"] == "escalated", "a person still has it: the bot did not take over"
