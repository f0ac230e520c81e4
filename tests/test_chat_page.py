"""The chat page in real headless Chromium against a real ``botloom serve``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.serve_process import Server

pytestmark = [pytest.mark.slow, pytest.mark.serial]
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's ``Browser``), closed after; open a browser context per page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(database_url: str, data_dir: Path) -> Iterator[Server]:
    with Server(database_url, data_dir) as running:
        yield running


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_chat_page_in_chromium(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/chat/acme/support")
            expect(page.locator("#status")).to_have_text("online", timeout=15_000)
            page.get_by_label("Your message").fill("hello")
            page.get_by_role("button", name="Send").click()
            expect(page.locator(".msg.bot").last).to_have_text("Hello! How can I help you today?", timeout=15_000)

            server.stop()
            expect(page.locator("#status")).to_have_text("reconnecting…", timeout=15_000)
            page.get_by_label("Your message").fill("where is my order 1234")
            page.get_by_role("button", name="Send").click()
            expect(page.locator(".msg.user.pending")).to_have_count(1)
            server.start()
            expect(page.locator("#status")).to_have_text("online", timeout=30_000)
            expect(page.locator(".msg.bot").last).to_contain_text("1234 has shipped", timeout=15_000)
            texts = page.locator(".msg").all_inner_texts()
            assert texts.count("hello") == 1, texts
            assert texts.count("where is my order 1234") == 1, "the message sent while offline went once"
            assert page.locator(".msg.user.pending").count() == 0
            page.screenshot(path=str(tmp_path / "chat.png"))
            assert (tmp_path / "chat.png").stat().st_size > 1000
            keep = os.environ.get("BOTLOOM_SCREENSHOT_DIR")  # to look at the page after the run
            if keep:
                shutil.copy(tmp_path / "chat.png", Path(keep) / "chat.png")
        finally:
            browser.close()
