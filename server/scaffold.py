"""``botloom new-plugin``: render the plugin template (``plugin_template/template``) into a new package.

The template has a ``common`` part (``pyproject.toml`` with the ``botloom`` entry point and the
supported botloom range, README, CHANGELOG, CI workflow, test configuration) and one part per
kind of plugin (``tool``, ``intent``, ``channel``: the hook implementations and their tests,
written with ``botloom.testing``). Files are ``string.Template`` texts (``${name}``; ``$$`` is
a dollar sign); Python sources end in ``.tmpl``, the package folder is ``__module__`` and the
CI folder ``_github`` (``.github`` once rendered: a hidden folder would not be package data).
"""

from __future__ import annotations

import keyword
import re
import string
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

TEMPLATE_DIR = Path(str(resources.files("botloom.plugin_template") / "template"))
MODULE_PLACEHOLDER = "__module__"
TEMPLATE_SUFFIX = ".tmpl"
"""Python sources of the template end in ``.tmpl``: they are not valid Python before rendering."""
RENAMED_PARTS = {"_github": ".github"}

Kind = Literal["tool", "intent", "channel"]
KINDS: tuple[str, ...] = get_args(Kind)

DISTRIBUTION_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
"""A project name as PEP 508 allows it."""
MAX_NAME = 40
PLUGIN_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class TemplateError(ValueError):
    """The plugin name or the target directory cannot be used."""


def supported_range(version: str) -> str:
    """The botloom versions a new plugin supports: from this minor version up to the next breaking one.

    ``0.1.3`` gives ``>=0.1,<0.2`` (before 1.0 a minor version may break plugins);
    ``1.4.0`` gives ``>=1.4,<2``.
    """
    numbers = [int(n) for n in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = numbers[0], numbers[1]
    if major == 0:
        return f">=0.{minor},<0.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin called ``name`` gets in its package."""

    distribution: str
    """The pip name, as given, normalised (``acme-weather``)."""
    module: str
    """The import package (``acme_weather``)."""
    plugin: str
    """The entry-point name, which bots enable (``acme_weather``; a ``botloom_`` prefix is dropped)."""
    tool: str
    """The tool of an ``intent`` plugin."""
    temperature_tool: str
    """The tool of a ``tool`` plugin."""
    intent: str
    channel_class: str
    description: str

    @classmethod
    def from_name(cls, name: str, description: str | None = None) -> PluginNames:
        """Derive every name from the distribution name; :class:`TemplateError` says what is wrong with it."""
        if not DISTRIBUTION_PATTERN.fullmatch(name) or len(name) > MAX_NAME:
            raise TemplateError(
                f"plugin name {name!r} is not a valid distribution name: use at most {MAX_NAME} ASCII letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. acme-weather)"
            )
        distribution = re.sub(r"[-_.]+", "-", name).lower()
        module = distribution.replace("-", "_")
        if not module.isidentifier() or keyword.iskeyword(module):
            raise TemplateError(
                f"plugin name {name!r} gives the module name {module!r}, which Python cannot import "
                "(a module name starts with a letter and is no keyword)"
            )
        if module == "botloom" or module in sys.stdlib_module_names:
            raise TemplateError(f"plugin name {name!r}: the module {module!r} would shadow {module!r}; choose another")
        plugin = module.removeprefix("botloom_") or module
        if not PLUGIN_PATTERN.fullmatch(plugin):
            raise TemplateError(f"plugin name {name!r} gives the plugin name {plugin!r}: start it with a letter")
        return cls(
            distribution=distribution,
            module=module,
            plugin=plugin,
            tool=f"{plugin}_greet",
            temperature_tool=f"{plugin}_temperature",
            intent=f"{plugin}_introduction",
            channel_class="".join(part.capitalize() for part in plugin.split("_")) + "Channel",
            description=description or f"The {plugin} plugin for botloom.",
        )


KIND_VALUES: dict[str, dict[str, str]] = {
    "tool": {
        "test_config": '{"units": "imperial"}',
        "config_example": '{"units": "metric"}',
        "usage": "Its tool `${temperature_tool}` is offered to the bot's language model, which calls it when a user "
        "asks for a city's temperature (the offline engine calls tools only for intents that name them).",
    },
    "intent": {
        "test_config": '{"greeting": "Hi"}',
        "config_example": '{"greeting": "Welcome"}',
        "usage": 'Its intent `${intent}` answers users who introduce themselves ("my name is Ada") '
        "through its tool `${tool}`, with the offline engine or a language model.",
    },
    "channel": {
        "test_config": '{"token": "a-test-token-of-24-chars"}',
        "config_example": '{"token": "a-long-random-secret"}',
        "usage": "Then messages arrive at `POST /api/v1/bots/TENANT/BOT/${plugin}` with the token in the "
        "`X-Channel-Token` header, and the replies come back in the response:\n\n"
        "```console\n"
        "curl -H 'X-Channel-Token: a-long-random-secret' -H 'content-type: application/json' \\\n"
        '  -d \'{"from": "+15550001111", "text": "hello", "id": "m-1"}\' \\\n'
        "  http://127.0.0.1:8000/api/v1/bots/TENANT/BOT/${plugin}\n"
        "```",
    },
}


def _values(names: PluginNames, kind: str) -> dict[str, str]:
    import botloom

    values = {
        "distribution": names.distribution,
        "module": names.module,
        "plugin": names.plugin,
        "tool": names.tool,
        "temperature_tool": names.temperature_tool,
        "intent": names.intent,
        "channel_class": names.channel_class,
        "description": names.description,
        "kind": kind,
        "botloom_version": botloom.__version__,
        "botloom_range": supported_range(botloom.__version__),
    }
    for key, text in KIND_VALUES[kind].items():
        values[key] = string.Template(text).substitute(values)
    return values


def render_plugin(name: str, target: Path, *, kind: str = "tool", description: str | None = None) -> Path:
    """Render the template of ``kind`` for plugin ``name`` into ``target`` (absent or empty); return it."""
    if kind not in KINDS:
        raise TemplateError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    names = PluginNames.from_name(name, description)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TemplateError(f"{target} exists and is not an empty directory; choose another directory with -o")
    values = _values(names, kind)
    for part in ("common", kind):
        root = TEMPLATE_DIR / part
        for source in sorted(root.rglob("*")):
            if source.is_dir() or "__pycache__" in source.parts:
                continue
            parts = [RENAMED_PARTS.get(p, p) for p in source.relative_to(root).parts]
            relative = "/".join(parts).replace(MODULE_PLACEHOLDER, names.module).removesuffix(TEMPLATE_SUFFIX)
            out = target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            text = string.Template(source.read_text(encoding="utf-8")).substitute(values)
            out.write_text(text, encoding="utf-8")
    return target
