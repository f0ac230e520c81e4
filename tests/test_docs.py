"""Documentation that must not drift from the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from botloom.core import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def _hook_names() -> list[str]:
    return sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "botloom_spec"))


def test_every_hook_is_documented_with_its_arguments() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    documented = dict(re.findall(r"^### `(\w+)\(([^)]*)\)", text, re.MULTILINE))
    assert sorted(documented) == _hook_names()
    for name, arguments in documented.items():
        expected = list(inspect.signature(getattr(hookspecs, name)).parameters)
        assert [a.strip() for a in arguments.split(",") if a.strip()] == expected, name


def test_every_hook_has_a_docstring() -> None:
    for name in _hook_names():
        assert (inspect.getdoc(getattr(hookspecs, name)) or "").strip(), name


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install tox && tox" in readme
    assert "python3 -m tox" in ci
