"""The agent desk page and the end user's web chat in real headless Chromium, against a real ``botloom serve``.

Two agents sign in on two browser contexts; an end user asks the demo bot's web chat
for a person. Both desks see the handover appear live (no reload); one claims it and
the other sees it taken; the web chat shows that a person joined, the agent's reply
and that the bot is back. Every request the pages make goes to botloom itself: one
to another origin fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.serve_process import Server
from tests.test_chat_page import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.serial]
PASSWORD = "correct horse battery"
WAIT = 20_000


@pytest.fixture
def server(database_url: str, data_dir: Path) -> Iterator[Server]:
    running = Server(database_url, data_dir)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def make_agent(server: Server, email: str, name: str) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/tenants/acme/agents",
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


def sign_in(page: Any, server: Server, email: str) -> None:
    page.goto(f"{server.url}/desk")
    page.get_by_label("Tenant").fill("acme")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_two_agents_and_the_web_chat_live(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    make_agent(server, "ada@acme.test", "Ada")
    make_agent(server, "bob@acme.test", "Bob")
    r = httpx.post(
        f"{server.url}/api/v1/canned?tenant=acme",
        json={"shortcut": "order", "text": "Let me look at your order right away."},
        headers={"Authorization": "Bearer admin"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    foreign: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            contexts = [browser.new_context() for _ in range(3)]
            for context in contexts:
                same_origin_only(context, server.url, foreign)
            ada, bob, user = (context.new_page() for context in contexts)

            sign_in(ada, server, "ada@acme.test")
            sign_in(bob, server, "bob@acme.test")
            for desk in (ada, bob):
                expect(desk.locator("#live")).to_have_text("live", timeout=WAIT)
                expect(desk.locator("#queue-empty")).to_be_visible()
            wrong = bob.context.new_page()
            sign_in(wrong, server, "nobody@acme.test")
            expect(wrong.locator("#sign-in-error")).to_contain_text("Wrong", timeout=WAIT)
            wrong.close()

            user.goto(f"{server.url}/chat/acme/support")
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

            expect(user.locator(".person-joined")).to_contain_text(
                f"{claimer_name}, a person, has joined", timeout=WAIT
            )
            claimer.get_by_label("Reply to the user").fill("Hi, I am here to help with your order.")
            claimer.get_by_role("button", name="Send").click()
            expect(user.locator(".msg.agent")).to_contain_text("Hi, I am here to help with your order.", timeout=WAIT)
            expect(claimer.locator("#history li.outbound").last).to_have_text(
                "Hi, I am here to help with your order.", timeout=WAIT
            )

            claimer.get_by_label("Canned response").select_option(label="order")
            expect(claimer.locator("#reply")).to_have_value("Let me look at your order right away.")
            claimer.get_by_role("button", name="Send").click()
            expect(user.locator(".msg.agent").last).to_contain_text(
                "Let me look at your order right away.", timeout=WAIT
            )

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
        finally:
            browser.close()
    assert foreign == [], f"requests to other origins: {foreign}"
