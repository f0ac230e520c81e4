"""The debugger page's Teach panel in real headless Chromium, signed in with a tenant's API key.

A tenant sees what the demo bot could not answer, edits its synonyms and examples, previews
which recent answers would change, and applies; the network is limited to botloom itself
(:func:`tests.test_debug_page.chromium_page`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.serve_process import Server
from tests.test_chat_page import CHROMIUM
from tests.test_debug_page import ADMIN, chromium_page, keep, sign_in
from tests.test_debug_page import browser as browser  # the fixture  # noqa: PLC0414
from tests.test_debug_page import server as server  # the fixture  # noqa: PLC0414

pytestmark = [
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
BOT = "/api/v1/bots/acme/support"
ZORBLATT = "how long is the zorblatt"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"> how long is the zorblatt"


def chat(server: Server, text: str, conversation_id: str | None = None) -> dict[str, Any]:
    """One turn of the demo bot through the REST chat API."""
    body: dict[str, Any] = {"text": text}
    if conversation_id:
        body["conversation_id"] = conversation_id
    r = httpx.post(f"{server.url}{BOT}/messages", json=body, headers=ADMIN, timeout=60)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def tenant_key(server: Server) -> str:
    """A new API key of the demo tenant: the page is used as the tenant would, not as the operator."""
    r = httpx.post(f"{server.url}/api/v1/tenants/acme/keys", json={"name": "teach-page"}, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    key: str = r.json()["key"]
    return key


def until(page: Any, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Let the page run until ``condition`` holds (route handlers run while Playwright waits), at most ``timeout`` s."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        page.wait_for_timeout(50)


def holder(held: list[Any]) -> Callable[[Any], None]:
    """A route handler that holds each request (in ``held``) until the test lets it go on."""

    def hold(route: Any) -> None:
        held.append(route)

    return hold


def bot_id(server: Server, ref: str) -> str:
    """The id of the bot ``tenant/slug`` (the page addresses bots by id)."""
    r = httpx.get(f"{server.url}/api/v1/bots/{ref}", headers=ADMIN)
    assert r.status_code == 200, r.text
    found: str = r.json()["id"]
    return found


def two_bots(server: Server) -> tuple[str, str]:
    """The demo bot (taught ``zorblatt`` → ``warranty``) and a new bot acme/sales (taught ``parcel`` → ``package``)."""
    r = httpx.post(f"{server.url}/api/v1/tenants/acme/bots", json={"slug": "sales", "name": "Sales"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    for ref, synonyms in (("acme/support", {"zorblatt": "warranty"}), ("acme/sales", {"parcel": "package"})):
        put = httpx.put(f"{server.url}/api/v1/bots/{ref}/synonyms", json={"synonyms": synonyms}, headers=ADMIN)
        assert put.status_code == 200, put.text
    return bot_id(server, "acme/support"), r.json()["id"]


def synonyms_of(server: Server, ref: str) -> dict[str, str]:
    r = httpx.get(f"{server.url}/api/v1/bots/{ref}/synonyms", headers=ADMIN)
    assert r.status_code == 200, r.text
    found: dict[str, str] = r.json()["synonyms"]
    return found


def examples_of(server: Server, ref: str, intent: str) -> list[str]:
    r = httpx.get(f"{server.url}/api/v1/bots/{ref}/intents/{intent}/examples", headers=ADMIN)
    assert r.status_code == 200, r.text
    return [e["text"] for e in r.json()]


def add_synonym(page: Any, phrase: str, meaning: str) -> None:
    """A new synonym row on the page, filled in (not applied)."""
    page.get_by_role("button", name="Add synonym").click()
    page.get_by_label("Synonyms").get_by_label("Phrase").last.fill(phrase)
    page.get_by_label("Synonyms").get_by_label("Meaning").last.fill(meaning)


def add_example(page: Any, intent: str, text: str) -> None:
    """A pending example on the page."""
    page.get_by_label("Intent").select_option(intent)
    page.get_by_label("Example", exact=True).fill(text)
    page.get_by_role("button", name="Add example").click()


def open_teach(page: Any, server: Server, key: str) -> None:
    """Open the debugger, sign in with ``key`` and open the Teach panel."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/debug")
    sign_in(page, key)
    expect(page.locator("#bot option", has_text="acme/support")).to_have_count(1, timeout=15_000)
    page.get_by_text("Teach", exact=True).click()
    expect(page.get_by_label("Intent").locator("option", has_text="human_handoff")).to_have_count(1, timeout=15_000)


def test_a_tenant_teaches_a_fallback_previews_and_applies(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    first = chat(server, ZORBLATT)
    assert first["intent"] is None  # the fallback
    assert chat(server, "how much is express shipping?", first["conversation_id"])["intent"] == "knowledge"
    key = tenant_key(server)

    with chromium_page(browser, server.url) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_teach(page, server, key)
        fallbacks = page.get_by_label("Fallbacks")
        expect(fallbacks.locator("li")).to_have_count(1)
        expect(fallbacks.locator("li")).to_contain_text([ZORBLATT])
        expect(fallbacks.locator("li .badge")).to_have_text(["×1"])
        expect(page.get_by_label("Synonyms").locator("tbody tr")).to_have_count(0)

        # The common workflow: pick a question, teach it to an intent. Here: a side effect to catch first.
        fallbacks.get_by_role("button", name=ZORBLATT).click()
        expect(page.get_by_label("Example", exact=True)).to_have_value(ZORBLATT)
        page.get_by_label("Intent").select_option("human_handoff")
        page.get_by_label("Example", exact=True).fill("how much is express shipping")
        page.get_by_role("button", name="Add example").click()
        expect(page.get_by_label("Pending examples").locator("li")).to_contain_text(
            ["human_handoffhow much is express shipping"]
        )
        expect(page.get_by_label("Example", exact=True)).to_have_value("")

        page.get_by_role("button", name="Add synonym").click()
        page.get_by_label("Synonyms").get_by_label("Phrase").fill("zorblatt")
        page.get_by_label("Synonyms").get_by_label("Meaning").fill("warranty")
        page.get_by_role("button", name="Preview").click()
        summary = page.locator("#preview-summary")
        expect(summary).to_have_text("replayed 2 turns of 1 conversation; 2 answers would change", timeout=30_000)
        changes = page.get_by_label("Changed answers").locator("> li")
        expect(changes).to_have_count(2)
        fixed = changes.filter(has_text=ZORBLATT)
        expect(fixed).to_have_class("improved")
        expect(fixed.locator(".before")).to_contain_text("fallback: Sorry")
        expect(fixed.locator(".after")).to_contain_text("knowledge: ")
        expect(fixed.locator(".after")).to_contain_text("two-year")
        moved = changes.filter(has_text="how much is express shipping?")
        expect(moved).to_have_class("regression")
        expect(moved).to_contain_text("possible regression: a different answer")
        expect(moved.locator(".before")).to_contain_text("knowledge: ")
        expect(moved.locator(".after")).to_contain_text("human_handoff: ")
        keep(page, "debug-teach-preview.png")

        # Drop the example that moved a good answer, preview again: only the fix is left.
        page.get_by_label("Pending examples").get_by_role("button", name="Remove example").click()
        expect(page.get_by_label("Pending examples").locator("li")).to_have_count(0)
        page.get_by_label("Intent").select_option("greeting")
        page.get_by_label("Example", exact=True).fill("ahoy there")
        page.get_by_role("button", name="Add example").click()
        page.get_by_role("button", name="Preview").click()
        expect(summary).to_have_text("replayed 2 turns of 1 conversation; 1 answer would change", timeout=30_000)
        expect(changes).to_have_count(1)
        expect(changes).to_have_class(["improved"])

        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#teach-status")).to_have_text("Applied: synonyms saved, 1 example added.", timeout=15_000)
        expect(page.get_by_label("Pending examples").locator("li")).to_have_count(0)
        expect(page.get_by_label("Synonyms").get_by_label("Phrase")).to_have_value("zorblatt")
        expect(page.get_by_label("Synonyms").get_by_label("Meaning")).to_have_value("warranty")
        expect(page.locator("#teach-error")).to_have_text("")
        keep(page, "debug-teach-applied.png")
        assert errors == []

    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{server.url}{BOT}/synonyms", headers=bearer).json() == {"synonyms": {"zorblatt": "warranty"}}
    examples = httpx.get(f"{server.url}{BOT}/intents/greeting/examples", headers=bearer).json()
    assert [e["text"] for e in examples] == ["ahoy there"]
    assert httpx.get(f"{server.url}{BOT}/intents/human_handoff/examples", headers=bearer).json() == []
    again = chat(server, ZORBLATT)
    assert again["intent"] == "knowledge", again
    assert "two-year" in " ".join(r["text"] for r in again["replies"])


def test_an_api_error_is_shown_and_nothing_is_lost(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    with chromium_page(browser, server.url) as page:
        open_teach(page, server, "admin")
        expect(page.get_by_label("Fallbacks").locator("li")).to_have_text(["No question got the fallback yet."])
        page.get_by_role("button", name="Add synonym").click()
        page.get_by_label("Synonyms").get_by_label("Phrase").fill("zorblatt")
        page.get_by_role("button", name="Preview").click()
        expect(page.get_by_role("alert").filter(has_text="needs a phrase and what it means")).to_be_visible()
        page.get_by_label("Synonyms").get_by_label("Meaning").fill("x" * 100)
        page.get_by_label("Synonyms").get_by_label("Phrase").fill("zorb\x7flatt")  # a control character: a 400
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#teach-error")).to_contain_text("$.synonyms", timeout=15_000)
        expect(page.get_by_label("Synonyms").get_by_label("Meaning")).to_have_value("x" * 100)  # kept as typed
        # An intent named like a property every JavaScript object has is sent as any other (the server says no).
        page.get_by_label("Synonyms").get_by_role("button", name="Remove synonym").click()
        page.get_by_label("Intent").evaluate("select => select.add(new Option('constructor', 'constructor'))")
        add_example(page, "constructor", "build me one")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("#teach-error")).to_have_text(
            "the bot has no intent 'constructor' (intents come from its enabled plugins)", timeout=15_000
        )
    assert httpx.get(f"{server.url}{BOT}/synonyms", headers=ADMIN).json() == {"synonyms": {}}


def test_hostile_text_in_a_fallback_and_a_preview_renders_as_text(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    assert chat(server, HOSTILE)["intent"] is None
    with chromium_page(browser, server.url) as page:
        open_teach(page, server, tenant_key(server))
        fallbacks = page.get_by_label("Fallbacks")
        expect(fallbacks.get_by_role("button", name=HOSTILE)).to_have_text(HOSTILE)
        fallbacks.get_by_role("button", name=HOSTILE).click()  # the question, as the example to teach
        expect(page.get_by_label("Example", exact=True)).to_have_value(HOSTILE)
        page.get_by_label("Intent").select_option("human_handoff")
        page.get_by_role("button", name="Add example").click()
        expect(page.get_by_label("Pending examples").locator("li")).to_contain_text([HOSTILE])
        # A phrase named like a property every JavaScript object has is a phrase like any other.
        page.get_by_role("button", name="Add synonym").click()
        page.get_by_label("Synonyms").get_by_label("Phrase").fill("constructor")
        page.get_by_label("Synonyms").get_by_label("Meaning").fill("builder")
        page.get_by_role("button", name="Preview").click()
        changes = page.get_by_label("Changed answers").locator("> li")
        expect(changes.locator(".message")).to_have_text([HOSTILE], timeout=30_000)
        expect(changes.locator(".after")).to_contain_text(["human_handoff: "])
        expect(page.locator("#teach-error")).to_have_text("")
        assert page.locator("#teach img").count() == 0  # no element made of the text, anywhere in the panel
        assert page.title() == "botloom debugger"


def open_support_teach_of_two(page: Any, server: Server) -> list[str]:
    """Sign in as the operator (two bots shown), pick ``acme/support``, open Teach; the page's script errors."""
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/debug")
    sign_in(page)
    expect(page.locator("#bot option")).to_have_count(2, timeout=15_000)
    page.locator("#bot").select_option(label="acme/support")
    page.get_by_text("Teach", exact=True).click()
    return errors


def test_switching_bots_clears_the_panel_and_applies_only_to_the_bot_shown(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    _, sales = two_bots(server)
    with chromium_page(browser, server.url) as page:
        errors = open_support_teach_of_two(page, server)
        phrases = page.get_by_label("Synonyms").get_by_label("Phrase")
        expect(phrases).to_have_count(1, timeout=15_000)
        expect(phrases).to_have_value("zorblatt")
        preview, apply = page.get_by_role("button", name="Preview"), page.get_by_role("button", name="Apply")
        expect(apply).to_be_enabled()
        add_synonym(page, "hoodie", "sweater")  # unsaved edits of acme/support
        add_example(page, "greeting", "ahoy there")
        expect(page.get_by_label("Pending examples").locator("li")).to_have_count(1)

        # acme/sales's synonyms cannot be loaded: acme/support's rows, examples and intents are gone at once,
        # and Preview and Apply stay off (there is nothing of this bot's to send).
        synonyms = f"**/api/v1/bots/{sales}/synonyms"
        page.route(synonyms, lambda route: route.fulfill(status=503, json={"detail": "synonyms are down"}))
        page.locator("#bot").select_option(label="acme/sales")
        expect(page.locator("#teach-error")).to_have_text(
            "synonyms are down (close and open Teach to try again)", timeout=15_000
        )
        expect(phrases).to_have_count(0)
        expect(page.get_by_label("Pending examples").locator("li")).to_have_count(0)
        expect(page.get_by_label("Intent").locator("option")).to_have_count(0)
        expect(page.get_by_label("Fallbacks").locator("li")).to_have_count(0)
        for button in (preview, apply, page.get_by_role("button", name="Add synonym")):
            expect(button).to_be_disabled()

        # Opening the panel again tries again; until the load answers, Apply stays off.
        page.unroute(synonyms)
        held: list[Any] = []
        page.route(synonyms, holder(held))
        page.get_by_text("Teach", exact=True).click()
        page.get_by_text("Teach", exact=True).click()
        until(page, lambda: bool(held), "the synonyms request")
        expect(page.locator("#teach-error")).to_have_text("")
        expect(apply).to_be_disabled()
        expect(phrases).to_have_count(0)
        held[0].continue_()
        page.unroute(synonyms)
        expect(phrases).to_have_count(1, timeout=15_000)
        expect(phrases).to_have_value("parcel")
        expect(apply).to_be_enabled()
        expect(preview).to_be_enabled()
        add_synonym(page, "tee", "t-shirt")
        apply.click()
        expect(page.locator("#teach-status")).to_have_text("Applied: synonyms saved.", timeout=15_000)
        assert errors == []

    assert synonyms_of(server, "acme/support") == {"zorblatt": "warranty"}  # its unsaved edits went nowhere
    assert examples_of(server, "acme/support", "greeting") == []
    assert synonyms_of(server, "acme/sales") == {"parcel": "package", "tee": "t-shirt"}


def test_an_answer_for_the_bot_shown_before_draws_nothing(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    support, _ = two_bots(server)
    chat(server, ZORBLATT)
    with chromium_page(browser, server.url) as page:
        errors = open_support_teach_of_two(page, server)
        phrases = page.get_by_label("Synonyms").get_by_label("Phrase")
        expect(phrases).to_have_value("zorblatt", timeout=15_000)
        add_synonym(page, "hoodie", "sweater")
        add_example(page, "greeting", "ahoy there")
        add_example(page, "greeting", "ahoy matey")

        # acme/support's preview and its apply (the synonyms PUT) are held while the page switches bots.
        held: list[Any] = []
        page.route(f"**/api/v1/bots/{support}/teaching/preview", holder(held))
        page.route(
            f"**/api/v1/bots/{support}/synonyms",
            lambda route: held.append(route) if route.request.method == "PUT" else route.fallback(),
        )
        preview, apply = page.get_by_role("button", name="Preview"), page.get_by_role("button", name="Apply")
        preview.click()
        apply.click()
        until(page, lambda: len(held) == 2, "the preview and the synonyms PUT")
        expect(preview).to_be_disabled()
        expect(apply).to_be_disabled()

        posted: list[str] = []
        page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
        page.locator("#bot").select_option(label="acme/sales")
        expect(phrases).to_have_value("parcel", timeout=15_000)
        expect(preview).to_be_enabled()  # acme/support's requests in flight do not hold acme/sales's buttons
        expect(apply).to_be_enabled()
        for route in held:
            with page.expect_response(route.request.url):
                route.continue_()
        # They answered: nothing of theirs is drawn on acme/sales, and acme/support's examples are not posted.
        apply.click()
        expect(page.locator("#teach-status")).to_have_text("Nothing to apply.", timeout=15_000)
        expect(page.locator("#preview-summary")).to_have_text("")
        expect(page.get_by_label("Changed answers").locator("li")).to_have_count(0)
        expect(phrases).to_have_count(1)
        assert [url for url in posted if "/examples" in url] == []
        assert errors == []

    assert synonyms_of(server, "acme/support") == {"hoodie": "sweater", "zorblatt": "warranty"}  # sent before
    assert examples_of(server, "acme/support", "greeting") == []
    assert synonyms_of(server, "acme/sales") == {"parcel": "package"}


def test_an_answer_that_would_call_a_tool_is_not_called_answered(server: Server, browser: Any) -> None:
    from playwright.sync_api import expect

    question = "zorblatt 12345 please"
    assert chat(server, question)["intent"] is None  # the fallback: no tool ran, so none has a recorded result
    with chromium_page(browser, server.url) as page:
        open_teach(page, server, tenant_key(server))
        add_example(page, "order_status", question)
        page.get_by_role("button", name="Preview").click()
        changes = page.get_by_label("Changed answers").locator("> li")
        expect(changes).to_have_count(1, timeout=30_000)
        expect(changes).to_have_class(["untested"])
        expect(changes.locator(".badge")).to_have_text(["would call order_status (tools are not run in a preview)"])
        expect(changes.locator(".after")).to_contain_text("order_status: ")
        expect(changes.locator(".after")).to_contain_text("(would call order_status: not run in a preview)")
        keep(page, "debug-teach-untested.png")
