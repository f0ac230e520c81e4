"""``botloom ingest`` adds documents to a bot's knowledge, and refuses what it cannot read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo

pytestmark = pytest.mark.slow


def ingest(database_url: str, data_dir: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BOTLOOM_DATABASE_URL": database_url,
        "BOTLOOM_DATA_DIR": str(data_dir),
        "BOTLOOM_SECRET_KEY": "test-secret-key",
    }
    return subprocess.run(
        [sys.executable, "-m", "botloom", "ingest", "acme/support", *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_ingest_command(
    services: Services, demo: DemoInfo, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    doc = tmp_path / "gift-cards.md"
    doc.write_text("# Gift cards\n\nGift cards are valid for three years and can be used online.\n")
    done = ingest(database_url, data_dir, doc)
    assert done.returncode == 0, done.stderr
    assert "gift-cards.md: created, 1 chunk(s)" in done.stdout
    assert "gift-cards.md" in done.stderr, "progress goes to standard error"
    found = await services.knowledge.search(demo.tenant.id, demo.bot.id, "how long is a gift card valid")
    assert found and found[0].document == "gift-cards.md"

    again = ingest(database_url, data_dir, doc)
    assert "gift-cards.md: unchanged" in again.stdout

    binary = tmp_path / "photo.md"
    binary.write_bytes(b"\x89PNG\x00\x01\x02")
    refused = ingest(database_url, data_dir, binary)
    assert refused.returncode == 1
    assert "photo.md" in refused.stderr and "Traceback" not in refused.stderr
    missing = ingest(database_url, data_dir, tmp_path / "nope.md")
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
