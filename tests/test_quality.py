"""The offline engine's answer quality on the demo bot's evaluation set must not get worse (#17).

Runs every case of ``bench/quality/demo.jsonl`` through real turns of the demo bot
(``bench/quality.py``) and compares its figures with the floor recorded beside the
set (``bench/quality/floor.json``): raise the floor when the engine gets better.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo

QUALITY = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


def load_quality() -> ModuleType:
    """``bench/quality.py`` as a module (``bench/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("botloom_bench_quality", QUALITY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
async def test_the_demo_set_does_not_get_worse(services: Services, demo: DemoInfo) -> None:
    quality = load_quality()
    outcomes = await quality.evaluate(services, demo.bot, quality.load_cases("demo"))
    result = quality.figures(outcomes)
    floor = json.loads(quality.FLOOR.read_text())
    wrong = "\n".join(quality.describe(o) for o in outcomes if not o.right)
    report = f"{quality.report('demo', result)}\n\ncases not right:\n{wrong}"
    assert result["cases"] >= 150
    assert result["right_in_scope"] >= floor["right_in_scope"], report
    assert result["wrong_confident"] <= floor["wrong_confident"], report
    assert result["intent_accuracy"] >= floor["intent_accuracy"], report
