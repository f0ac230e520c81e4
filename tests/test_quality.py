"""The offline engine's answer quality on the three evaluation sets must not get worse (#17).

Runs every case of ``bench/quality/{demo,library,gym,bikeshop}.jsonl`` through real turns of
its bot (``bench/quality.py``) and compares the set's figures with the floor recorded
beside the sets (``bench/quality/floor.json``): raise the floor when the engine gets
better. The library, gym and bike shop bots' plugins are registered on a host of the test's own.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from botloom.core.host import PluginHost
from botloom.core.settings import Settings
from botloom.runtime.services import open_services
from botloom.server.demo import ensure_demo

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


def failures(floor: dict[str, float], result: dict[str, float]) -> list[str]:
    """The figures of ``result`` worse than ``floor``."""
    worse = []
    for name in ("right_in_scope", "intent_accuracy"):
        if result[name] < floor[name]:
            worse.append(f"{name} {result[name]:.3f} < {floor[name]}")
    if result["wrong_confident"] > floor["wrong_confident"]:
        worse.append(f"wrong_confident {result['wrong_confident']:.3f} > {floor['wrong_confident']}")
    if result["needless_escalations"] > floor["needless_escalations"]:
        worse.append(f"needless_escalations {result['needless_escalations']} > {floor['needless_escalations']}")
    return worse


def test_a_worse_figure_is_caught() -> None:
    quality = load_quality()
    floor = json.loads(quality.FLOOR.read_text())
    assert set(floor) == set(quality.SETS)
    demo = dict(floor["demo"])
    assert failures(floor["demo"], demo) == []
    assert failures(floor["demo"], {**demo, "right_in_scope": demo["right_in_scope"] - 0.01})
    assert failures(floor["demo"], {**demo, "wrong_confident": demo["wrong_confident"] + 0.01})
    assert failures(floor["demo"], {**demo, "needless_escalations": demo["needless_escalations"] + 1})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "library", "gym", "bikeshop"])
async def test_the_evaluation_set_does_not_get_worse(name: str, settings: Settings, database_url: str) -> None:
    quality = load_quality()
    host = PluginHost.discover(allow=settings.plugin_allow_list, block=settings.plugin_block_list)
    quality.register_bots(host)
    async with open_services(settings, host=host, url=database_url) as services:
        bot = (await ensure_demo(services)).bot if name == "demo" else await quality.ensure_bot(services, name)
        outcomes = await quality.evaluate(services, bot, quality.load_cases(name))
    result = quality.figures(outcomes)
    floor = json.loads(quality.FLOOR.read_text())[name]
    wrong = "\n".join(quality.describe(o) for o in outcomes if not o.right)
    report = f"{quality.report(name, result)}\n\ncases not right:\n{wrong}"
    assert result["cases"] >= {"demo": 150, "library": 70, "gym": 120, "bikeshop": 120}[name]
    assert failures(floor, result) == [], report


def test_the_teaching_files_are_what_the_api_accepts() -> None:
    """Each second bot's teaching file (``--taught``) passes the API's request bodies and names its bot's intents."""
    import msgspec

    from botloom.server.api.teaching import ExampleIn, SynonymsBody

    quality = load_quality()
    for name in quality.BOTS:
        raw = json.loads(quality.taught_path(name).read_text(encoding="utf-8"))
        assert msgspec.convert({"synonyms": raw["synonyms"]}, SynonymsBody).synonyms, name
        intents = {i.name for i in quality.bot_plugin(name).register_intents()}
        assert set(raw["examples"]) <= intents, name
        for texts in raw["examples"].values():
            assert all(msgspec.convert({"text": t}, ExampleIn).text for t in texts)
