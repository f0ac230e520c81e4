"""The public API (``botloom``) and the hooks must not drift from their documentation and their tests.

* Every name of ``botloom.__all__`` is importable and has a row in the "Public API" table
  of ``docs/plugins.md``, and every row names something ``botloom`` exports.
* ``import botloom`` stays light: no graph, runtime, server, storage or heavy library.
* Every hook specification has a test that implements it (as Datasette checks its hooks):
  a hook nobody tests is a hook whose contract can break unseen.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import botloom
from botloom.core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- the public API


def public_names() -> list[str]:
    return sorted(name for name in botloom.__all__ if name != "__version__")


def documented_names(text: str) -> list[str]:
    """The names in the first column of the "Public API" table of ``docs/plugins.md``."""
    section = text.split("\n## Public API\n", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.extend(re.findall(r"`(\w+)", first_cell))
    return names


def test_every_public_name_is_documented_and_every_documented_name_is_public() -> None:
    documented = documented_names((ROOT / "docs" / "plugins.md").read_text(encoding="utf-8"))
    undocumented = sorted(set(public_names()) - set(documented))
    assert undocumented == [], f"exported by botloom but not in the Public API table of docs/plugins.md: {undocumented}"
    stale = sorted(set(documented) - set(public_names()))
    assert stale == [], f"in the Public API table of docs/plugins.md but not exported by botloom: {stale}"


def test_the_documentation_check_reads_the_table() -> None:
    text = (
        "# x\n\n## Public API\n\n| name | what |\n| --- | --- |\n"
        "| `Tool(name)` | t |\n| `A`, `b(x)` | ab |\n\n## Next\n| `C` | c |\n"
    )
    assert documented_names(text) == ["Tool", "A", "b"]


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_imports(name: str) -> None:
    assert getattr(botloom, name) is not None


def test_a_name_botloom_does_not_export_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'TurnRunner'"):
        botloom.TurnRunner  # noqa: B018 - the access is the test


HEAVY = ("langgraph", "langchain_core", "litestar", "psycopg", "numpy", "redis", "saq", "twilio")
ROOMS = ("botloom.graphs", "botloom.runtime", "botloom.server", "botloom.core.storage", "botloom.core.knowledge")


def test_import_botloom_stays_light() -> None:
    """Plugins import ``botloom`` at discovery; the turn graph's types come only when asked for."""
    script = f"""
import sys
import botloom
heavy = [m for m in sys.modules if m.split(".")[0] in {HEAVY!r} or m.startswith({ROOMS!r})]
assert heavy == [], heavy
from botloom import TurnState, TurnContext, Passage
assert "langgraph" not in sys.modules, "the graph's types come without LangGraph"
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- every hook has a test


def hook_names() -> list[str]:
    return sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "botloom_spec"))


IMPLEMENTATION_IN_TEXT = re.compile(r"@hookimpl\b[^\n]*\n\s*(?:async\s+)?def\s+(\w+)\s*\(")


def implemented_hooks(source: str) -> set[str]:
    """Hook names a test module implements.

    An implementation is a function decorated with ``hookimpl`` (``@hookimpl``,
    ``@hookimpl(wrapper=True)``), a hook passed by keyword to build a throw-away
    plugin (``plugin(moderate_message=...)``, ``SimpleNamespace(on_turn_end=hookimpl(f))``),
    or a ``@hookimpl`` function in the source of a plugin module a test writes.
    """
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
            "hookimpl" in ast.unparse(decorator) for decorator in node.decorator_list
        ):
            found.add(node.name)
        elif isinstance(node, ast.Call):
            found.update(keyword.arg for keyword in node.keywords if keyword.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(IMPLEMENTATION_IN_TEXT.findall(node.value))
    return found


def hooks_with_tests() -> set[str]:
    found: set[str] = set()
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name != Path(__file__).name:
            found |= implemented_hooks(path.read_text(encoding="utf-8"))
    return found


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_test(hook: str) -> None:
    assert hook in hooks_with_tests(), f"no test in tests/ implements the hook {hook!r}"


def test_the_hook_check_finds_implementations_and_only_them() -> None:
    source = '''
from botloom import hookimpl

@hookimpl(wrapper=True)
def moderate_message(message):
    return (yield)

class Vault:
    @hookimpl
    async def plugin_config_schema(self):
        return None

def register_graphs():  # not marked: not an implementation
    return []

PLUGIN = plugin(on_turn_end=lambda turn: None)
MODULE = """
@hookimpl
def register_tools():
    return []
"""
'''
    found = implemented_hooks(source) & set(hook_names())
    assert found == {"moderate_message", "plugin_config_schema", "on_turn_end", "register_tools"}
