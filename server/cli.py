"""The ``botloom`` command line.

Start-up is kept fast: this module imports only the standard library, and each
command imports what it needs when it runs (langgraph, litestar and the OpenAI
client together take over a second to import).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A command failed in a way the user can fix; the message says how."""


def _settings() -> Any:
    from botloom.core.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending database migrations."""
    from botloom.core.storage.database import database_url
    from botloom.core.storage.migrations import apply_migrations

    settings = _settings()
    url = database_url(settings)
    applied = apply_migrations(url, progress=lambda line: print(line, file=sys.stderr))
    print(f"applied {len(applied)} migration(s)" if applied else "the database is up to date")
    return EXIT_OK


def cmd_plugins_list(args: argparse.Namespace) -> int:
    """List installed plugins, what they register, and loading problems."""
    import msgspec

    from botloom.core.host import PluginHost

    settings = _settings()
    host = PluginHost.discover(allow=settings.plugin_allow_list, block=settings.plugin_block_list).collect_sync()
    infos = [host.infos[name] for name in host.plugin_names]
    if args.json:
        payload = {"plugins": msgspec.to_builtins(infos), "problems": msgspec.to_builtins(host.problems)}
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    rows = [("NAME", "VERSION", "SOURCE", "KINDS", "PROVIDES")]
    for info in infos:
        provides = ", ".join(
            [f"channel:{n}" for n in info.channels]
            + [f"tool:{n}" for n in info.tools]
            + [f"intent:{n}" for n in info.intents]
            + [f"graph:{n}" for n in info.graphs]
        )
        rows.append((info.name, info.version or "-", info.source, ",".join(info.kinds) or "-", provides or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for problem in host.problems:
        print(f"problem: plugin {problem.plugin}: {problem.stage}: {problem.message}", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="botloom",
        description="botloom: plugin-based chatbots. Settings come from BOTLOOM_* environment variables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    add("migrate", cmd_migrate, "apply pending database migrations")

    plugins = commands.add_parser("plugins", help="inspect installed plugins", description="inspect installed plugins")
    plugin_commands = plugins.add_subparsers(dest="plugins_command", metavar="COMMAND", required=True)
    listing = plugin_commands.add_parser("list", help="list plugins and what they register")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_plugins_list)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args))
    except CommandError as exc:
        print(f"botloom: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
