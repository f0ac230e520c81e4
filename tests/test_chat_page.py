"""The chat page in real headless Chromium against a real ``botloom serve``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.serial]
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


class Server:
    """``botloom serve --demo`` in a child process, restartable on the same port and database."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "BOTLOOM_DATABASE_URL": database_url, "BOTLOOM_DATA_DIR": str(data_dir),
                    "BOTLOOM_SECRET_KEY": "page-test", "BOTLOOM_ADMIN_TOKEN": "admin"}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "serve.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "botloom", "serve", "--port", str(self.port), "--demo"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("botloom serve did not become ready:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def server(database_url: str, data_dir: Path) -> Iterator[Server]:
    running = Server(database_url, data_dir)
    running.start()
    try:
        yield running
    finally:
        running.stop()


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
            shutil.copy(tmp_path / "chat.png", Path(os.environ.get("BOTLOOM_SCREENSHOT_DIR", tmp_path)) / "chat.png")
        finally:
            browser.close()
