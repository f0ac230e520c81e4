"""The rooms and the arrows between them (docs/architecture.md): an import against the arrow fails here.

``server → runtime → graphs → core``; ``channels`` and ``plugins`` import only
botloom's public API (``botloom``), like a third-party plugin; ``core`` imports
nothing of botloom's other rooms. Imports inside functions and under
``TYPE_CHECKING`` count too: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# room (a folder of the repository) -> the botloom modules it may import (prefixes).
ALLOWED: dict[str, tuple[str, ...]] = {
    # The public API; it re-exports the turn graph's state and context (lazily) for plugins with a graph of their own.
    "botloom": ("botloom.core", "botloom.graphs.context", "botloom.graphs.state"),
    "core": ("botloom.core",),
    "graphs": ("botloom.core", "botloom.graphs"),
    "runtime": ("botloom.core", "botloom.graphs", "botloom.runtime"),
    "channels": ("botloom", "botloom.channels"),
    "plugins": ("botloom", "botloom.plugins"),
    # Everything but the built-in channels and plugins: the server names no plugin.
    "server": ("botloom.core", "botloom.graphs", "botloom.runtime", "botloom.server"),
    # Plugin authors' fixtures and conformance suites: they may use everything; nothing of botloom imports them.
    "testing": ("botloom",),
}
# The public API's own modules: what ``from botloom import X`` reaches.
PUBLIC = {"botloom"}
# ``python -m botloom`` is the command line's entry point, not part of the public API.
ENTRY_POINTS = {"botloom/__main__.py": {"botloom.server.cli"}}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every ``botloom`` module a file imports, with its line, resolving relative imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "botloom")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = ["botloom", *path.relative_to(ROOT).parent.parts]
                if package[1] == "botloom":
                    package = package[:1]
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == "botloom":
                found.append((node.lineno, module))
    return found


def allowed(room: str, module: str) -> bool:
    """Whether a file of ``room`` may import ``module``."""
    prefixes = ALLOWED[room]
    if module in PUBLIC and room == "server":
        return True
    if room in {"channels", "plugins"}:
        return module in PUBLIC or any(module == p or module.startswith(p + ".") for p in prefixes if p != "botloom")
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def room_files() -> list[tuple[str, Path]]:
    """Every Python file of every room."""
    return [(room, path) for room in ALLOWED for path in sorted((ROOT / room).rglob("*.py"))]


def test_every_room_has_files() -> None:
    rooms = {room for room, _ in room_files()}
    assert rooms == set(ALLOWED)


@pytest.mark.parametrize(
    ("room", "path"), room_files(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v
)
def test_imports_point_one_way(room: str, path: Path) -> None:
    exempt = ENTRY_POINTS.get(str(path.relative_to(ROOT)), set())
    wrong = [
        f"line {line}: {module}"
        for line, module in imports_of(path)
        if not allowed(room, module) and module not in exempt
    ]
    assert not wrong, f"{path.relative_to(ROOT)} ({room}/) imports against the arrow: {wrong}"


def test_the_checker_catches_a_wrong_arrow(tmp_path: Path) -> None:
    assert not allowed("graphs", "botloom.runtime.runner")
    assert not allowed("core", "botloom.graphs.state")
    assert not allowed("channels", "botloom.core.host")
    assert not allowed("runtime", "botloom.server.app")
    assert allowed("channels", "botloom")
    assert allowed("server", "botloom.runtime.services")
    assert not allowed("server", "botloom.channels.rest")
    assert not allowed("server", "botloom.testing.harness")
    assert not allowed("channels", "botloom.testing")
    assert not allowed("runtime", "botloom.testing")
    assert allowed("testing", "botloom.server.app")


def test_every_package_folder_is_packaged() -> None:
    """A folder with an ``__init__.py`` that pyproject.toml does not list would be missing from the wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {folder: package for package, folder in config["package-dir"].items()}
    listed = set(config["packages"])
    missing = []
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        parts = init.parent.relative_to(ROOT).parts
        if parts[0] not in folders or parts[0] == "plugin_template":
            continue
        package = ".".join([folders[parts[0]], *parts[1:]])
        if package not in listed:
            missing.append(package)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
