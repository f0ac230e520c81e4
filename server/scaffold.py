"""Rendering the plugin template (``plugin_template/template``) into a new plugin package."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

TEMPLATE_DIR = Path(str(resources.files("botloom.plugin_template") / "template"))
MODULE_PLACEHOLDER = "__module__"
TEMPLATE_SUFFIX = ".tmpl"
"""Python sources of the template end in ``.tmpl``: they are not valid Python before rendering."""


class TemplateError(ValueError):
    """The plugin name or the target directory cannot be used."""


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin called ``name`` gets in its package."""

    plugin: str
    """The entry-point name, which bots enable (``order_lookup``)."""
    distribution: str
    """The pip name (``botloom-order-lookup``)."""
    module: str
    """The import package (``botloom_order_lookup``)."""
    tool: str
    intent: str
    description: str

    @classmethod
    def from_name(cls, name: str, description: str | None = None) -> PluginNames:
        """Derive every name from the plugin's name (letters, digits, ``-`` and ``_``)."""
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,40}", name):
            raise TemplateError(f"plugin name {name!r}: use a letter, then letters, digits, '-' or '_'")
        snake = name.lower().replace("-", "_")
        return cls(
            plugin=snake,
            distribution=f"botloom-{snake.replace('_', '-')}",
            module=f"botloom_{snake}",
            tool=f"{snake}_greet",
            intent=f"{snake}_introduction",
            description=description or f"The {snake} plugin for botloom.",
        )


def render_plugin(name: str, target: Path, *, description: str | None = None) -> Path:
    """Render the template for plugin ``name`` into ``target`` (which must not exist); return it."""
    names = PluginNames.from_name(name, description)
    if target.exists() and any(target.iterdir()):
        raise TemplateError(f"{target} exists and is not empty; choose another directory with -o")
    values = {k: getattr(names, k) for k in ("plugin", "distribution", "module", "tool", "intent", "description")}
    for source in sorted(TEMPLATE_DIR.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        relative = source.relative_to(TEMPLATE_DIR).as_posix().replace(MODULE_PLACEHOLDER, names.module)
        relative = relative.removesuffix(TEMPLATE_SUFFIX)
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(string.Template(source.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
    return target
