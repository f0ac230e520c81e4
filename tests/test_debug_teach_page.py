"""The debugger page's Teach panel in real headless Chromium, signed in with a tenant's API key.

A tenant sees what the demo bot could not answer, edits its synonyms and examples, previews
which recent answers would change, and applies; the network is limited to botloom itself
(:func:`tests.test_debug_page.chromium_page`).
"""

from __future__ import annotations

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
