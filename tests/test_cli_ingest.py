"""``botloom ingest`` adds documents to a bot's knowledge, and refuses what it cannot read."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.cli_batch import run_botloom_commands

pytestmark = pytest.mark.slow


def ingest(database_url: str, data_dir: Path, *commands: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """``botloom ingest acme/support`` with each list of paths, one after the other in one interpreter (cli_batch)."""
    env = {
        **os.environ,
        "BOTLOOM_DATABASE_URL": database_url,
        "BOTLOOM_DATA_DIR": str(data_dir),
        "BOTLOOM_SECRET_KEY": "test-secret-key",
    }
    return run_botloom_commands(
        [["ingest", "acme/support", *map(str, paths)] for paths in commands], env=env, timeout=120
    )


async def test_ingest_command(
    services: Services, demo: DemoInfo, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    doc = tmp_path / "gift-cards.md"
    doc.write_text("# Gift cards\n\nGift cards are valid for three years and can be used online.\n")
    binary = tmp_path / "photo.md"
    binary.write_bytes(b"\x89PNG\x00\x01\x02")
    done, again, refused, missing = await asyncio.to_thread(
        ingest, database_url, data_dir, [doc], [doc], [binary], [tmp_path / "nope.md"]
    )
    assert done.returncode == 0, done.stderr
    assert "gift-cards.md: created, 1 chunk(s)" in done.stdout
    assert "gift-cards.md" in done.stderr, "progress goes to standard error"
    assert "gift-cards.md: unchanged" in again.stdout
    assert refused.returncode == 1
    assert "photo.md" in refused.stderr and "Traceback" not in refused.stderr
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
    found = await services.knowledge.search(demo.tenant.id, demo.bot.id, "how long is a gift card valid")
    assert found and found[0].document == "gift-cards.md"
