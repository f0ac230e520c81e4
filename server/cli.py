"""The ``botloom`` command line.

Start-up is kept fast: this module imports only the standard library, and each
command imports what it needs when it runs (langgraph, litestar and the OpenAI
client together take over a second to import).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

_STARTED = time.time()
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


class CommandError(Exception):
    """A command failed in a way the user can fix; the message says how."""


class Terminated(SystemExit):
    """SIGTERM arrived: leave through Python's exit handlers (a ``SystemExit``, so no ``except Exception`` stops it).

    The embedded PostgreSQL is stopped by such a handler once the last process
    using it ends; the default action of SIGTERM would kill the process without
    running any, and leave the server running.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` unless something else handles it already."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


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
    """List installed plugins: version, supported botloom versions, hooks, what they register, problems."""
    import msgspec

    from botloom.core.host import PluginHost

    settings = _settings()
    host = PluginHost.discover(
        allow=settings.plugin_allow_list, block=settings.plugin_block_list, trace=settings.trace_plugins
    ).collect_sync()
    infos = sorted([*host.infos.values(), *host.unloaded.values()], key=lambda info: info.name)
    listed = {info.name for info in infos}
    if args.json:
        plugins = []
        for info in infos:
            entry = msgspec.to_builtins(info)
            schema = host.config_schema(info.name) if info.status == "loaded" else None
            entry["config_schema"] = msgspec.json.schema(schema) if schema is not None else None
            entry["problems"] = [msgspec.to_builtins(p) for p in host.problems if p.plugin == info.name]
            plugins.append(entry)
        payload = {"botloom": host.botloom_version, "plugins": plugins, "problems": msgspec.to_builtins(host.problems)}
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    print(f"botloom {host.botloom_version}")
    for info in infos:
        supports = "any botloom" if info.supports == "" else f"botloom{info.supports}" if info.supports else "-"
        print(f"{info.name}  {info.version or '-'}  {info.source}  {info.status}  supports {supports}")
        details = [
            ("hooks", info.hooks),
            ("channels", info.channels),
            ("tools", info.tools),
            ("intents", info.intents),
            ("graphs", info.graphs),
            ("migrations", info.migrations),
            ("config", ["yes"] if info.configurable else []),
            ("deprecated", info.warnings),
        ]
        for label, values in details:
            if values:
                print(f"  {label}: {', '.join(values)}")
        for problem in host.problems:
            if problem.plugin == info.name:
                print(f"  problem: {problem.stage}: {problem.message}")
    for problem in host.problems:
        if problem.plugin not in listed:
            print(f"problem: plugin {problem.plugin}: {problem.stage}: {problem.message}")
    return EXIT_OK


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


async def _find_bot(services: Any, ref: str) -> Any:
    bot = await services.store.bots.find(ref)
    if bot is None:
        raise CommandError(
            f"no bot {ref!r} {_where_bots_live(services.settings)}; "
            "name a bot by its id or as tenant-slug/bot-slug (e.g. acme/support)"
        )
    return bot


def _where_bots_live(settings: Any) -> str:
    """Which database the command looked in, so a user in the wrong folder sees it."""
    if settings.database_url:
        return f"in the database at {_masked(settings.database_url)} (BOTLOOM_DATABASE_URL)"
    data = Path(settings.data_path)
    try:
        fresh = (data / "postgres" / "PG_VERSION").stat().st_mtime >= _STARTED - 1
    except OSError:
        fresh = False
    where = f"in the data dir {data}"
    if fresh:
        where += ", created empty just now"
    return (
        f"{where} (BOTLOOM_DATA_DIR, default .botloom in the current folder: run botloom in the folder "
        "you ran 'botloom serve' or 'botloom demo' in, or set BOTLOOM_DATA_DIR to that data dir)"
    )


def _masked(url: str) -> str:
    """``url`` with its password hidden."""
    return _URL_PASSWORD.sub(r"\1********@", url)


def cmd_demo(args: argparse.Namespace) -> int:
    """Create the demo tenant ``acme`` with its bot ``support``."""
    import asyncio

    from botloom.runtime.services import open_services
    from botloom.server.demo import demo_agent_lines, ensure_demo

    settings = _settings()

    async def run() -> Any:
        async with open_services(settings, progress=_progress) as services:
            return await ensure_demo(services, progress=_progress, agent=True)

    info = asyncio.run(run())
    base = (settings.public_url or "http://127.0.0.1:8000").rstrip("/")
    print(f"demo bot: {info.tenant.slug}/{info.bot.slug} (id {info.bot.id})")
    print(f"API key of tenant {info.tenant.slug} (shown once): {info.api_key}")
    print(f"chat page: {base}/chat/{info.tenant.slug}/{info.bot.slug}")
    print(f"talk in the terminal: botloom chat {info.tenant.slug}/{info.bot.slug}")
    for line in demo_agent_lines(info, base):
        print(line)
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    """Talk to a bot in the terminal through the same graph as every channel."""
    import asyncio

    from botloom.core.messages import InboundMessage
    from botloom.runtime.services import open_services

    settings = _settings()
    interactive = sys.stdin.isatty()

    async def run() -> None:
        async with open_services(settings) as services:
            bot = await _find_bot(services, args.bot)
            conversation_id: str | None = None
            if interactive:
                print(f"talking to {args.bot}; end with Ctrl-D", file=sys.stderr)
            while True:
                if interactive:
                    print("you> ", end="", flush=True, file=sys.stderr)
                line = await _read_line()
                if not line:
                    break
                text = line.strip()
                if not text:
                    continue
                message = InboundMessage(channel="cli", text=text, sender=args.user)
                result = await services.inbound.answer(bot, message, conversation_id=conversation_id)
                conversation_id = result.conversation_id
                for reply in result.replies:
                    print(f"bot> {reply.text}", flush=True)
                if args.verbose_turns:
                    detail = f"intent={result.intent} confidence={result.confidence:.2f}"
                    print(f"     [{detail}{' escalated' if result.escalated else ''}]", file=sys.stderr)

    asyncio.run(run())
    return EXIT_OK


async def _read_line() -> str:
    """The next line of standard input, read in a daemon thread.

    Not ``asyncio.to_thread``: the event loop waits for its executor's threads on the
    way out, so SIGTERM while ``chat`` waits for a line would wait for that line.
    """
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def deliver(text: str) -> None:
        if not line.done():
            line.set_result(text)

    def read() -> None:
        text = sys.stdin.readline()
        if not loop.is_closed():
            loop.call_soon_threadsafe(deliver, text)

    threading.Thread(target=read, name="botloom-stdin", daemon=True).start()
    return await line


def cmd_graph(args: argparse.Namespace) -> int:
    """Print a graph as Mermaid, or draw it as SVG or PNG (offline: the PNG is rendered by resvg, in process)."""
    import asyncio

    from botloom.core.host import PluginHost
    from botloom.graphs.registry import GraphRegistry, UnknownGraph

    settings = _settings()
    name = "turn"
    if args.bot:
        from botloom.runtime.services import open_services

        async def bot_graph() -> str:
            async with open_services(settings) as services:
                return str((await _find_bot(services, args.bot)).graph)

        name = asyncio.run(bot_graph())
    host = PluginHost.discover(allow=settings.plugin_allow_list, block=settings.plugin_block_list).collect_sync()
    try:
        graph = GraphRegistry(host, None).get(name)
    except UnknownGraph as exc:
        raise CommandError(str(exc)) from None
    if args.format == "png":
        import resvg_py

        from botloom.graphs.drawing import draw_svg

        png = bytes(resvg_py.svg_to_bytes(svg_string=draw_svg(graph.get_graph()), zoom=2.0))
        if args.output:
            with open(args.output, "wb") as out:
                out.write(png)
        elif sys.stdout.isatty():
            raise CommandError("a PNG is not for a terminal: pass -o FILE (or redirect standard output)")
        else:
            sys.stdout.buffer.write(png)
        return EXIT_OK
    if args.format == "svg":
        from botloom.graphs.drawing import draw_svg

        text = draw_svg(graph.get_graph())
    else:
        text = graph.get_graph().draw_mermaid()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(text)
    return EXIT_OK


def _graph_format(value: str) -> str:
    """``--format`` of ``botloom graph``, in any case."""
    return value.lower()


def cmd_ingest(args: argparse.Namespace) -> int:
    """Add documents (files or folders) to a bot's knowledge base, showing progress."""
    import asyncio
    from pathlib import Path

    from botloom.core.knowledge import IngestError
    from botloom.runtime.services import open_services

    settings = _settings()
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CommandError(f"no such file or folder: {', '.join(missing)}")

    async def run() -> Any:
        async with open_services(settings) as services:
            bot = await _find_bot(services, args.bot)
            return await services.knowledge.ingest_paths(bot.tenant_id, bot.id, paths, progress=_progress)

    try:
        results = asyncio.run(run())
    except IngestError as exc:
        raise CommandError(str(exc)) from None
    for result in results:
        print(f"{result.name}: {result.status}, {result.chunks} chunk(s)")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    """Close idle conversations, archive closed ones and prune idle ones' checkpoints (the hourly pass, now)."""
    import asyncio

    from botloom.runtime.retention import prune
    from botloom.runtime.services import open_services

    settings = _settings()

    async def run() -> Any:
        async with open_services(settings) as services:
            return await prune(services, progress=_progress)

    report = asyncio.run(run())
    print(
        f"closed {report.closed} conversation(s), archived {report.archived}, pruned {report.pruned}, "
        f"erased {report.threads} checkpoint thread(s) of deleted conversations"
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (API, chat, webhooks) with its workers in process."""
    settings = _settings()
    listening = _listen(args.host, args.port)  # the port first: taken, it is one line, before any other work
    try:
        import msgspec
        import uvicorn

        from botloom.server.app import create_app
        from botloom.server.logs import configure_logging

        if not settings.public_url:
            settings = msgspec.structs.replace(settings, public_url=f"http://{args.host}:{args.port}")
        _check_database(settings)
        configure_logging(settings)
        app = create_app(settings, demo=args.demo, workers=not args.no_workers)
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
        # uvicorn handles SIGTERM itself (a graceful shutdown of the app), then restores the
        # handler it found, ours, and raises the signal again: Terminated ends the process
        # through the exit handlers that stop the embedded PostgreSQL.
        _announcing_server(config, f"botloom serving on http://{args.host}:{args.port} (API schema at /schema)").run(
            sockets=[listening]
        )
    except Terminated:
        return EXIT_OK  # stopped gracefully, as after Ctrl-C
    finally:
        listening.close()
    return EXIT_OK


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn to serve on; a taken port is a :class:`CommandError`."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: no wait after a restart
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {port} on {host} is in use (another botloom serve?): stop that process, "
                f"or serve on another port, e.g. --port {_free_port(host, port)}"
            ) from None
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def _free_port(host: str, taken: int) -> int:
    """A port after ``taken`` that is free on ``host`` now (``taken + 1`` if none of the next 50 is)."""
    for port in range(taken + 1, min(taken + 51, 65536)):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    return taken + 1


def _check_database(settings: Any) -> None:
    """Start the embedded PostgreSQL if needed and connect once, before the server starts.

    A database that cannot be used then fails the command with one line (see
    :func:`main`), not with uvicorn's traceback of the application's start-up.
    """
    import psycopg

    from botloom.core.storage.database import database_url
    from botloom.core.storage.embedded import EmbeddedPostgresError

    try:
        url = database_url(settings)
    except EmbeddedPostgresError as exc:
        raise CommandError(str(exc)) from None
    with psycopg.connect(url, connect_timeout=10):
        pass


def _announcing_server(config: Any, line: str) -> Any:
    """A uvicorn server that prints ``line`` once the application has started and the socket listens."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(line, flush=True)

    return AnnouncingServer(config)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run job workers (turns and deliveries) in this process until SIGTERM or Ctrl-C."""
    import asyncio

    from botloom.runtime.queue import QueueOptions
    from botloom.server.logs import configure_logging
    from botloom.server.worker import run_worker

    settings = _settings()
    configure_logging(settings)
    options = QueueOptions(turn_concurrency=args.turns, delivery_concurrency=args.deliveries)

    def ready(services: Any) -> None:
        print(f"botloom worker running ({services.queue.backend} queue); stop with Ctrl-C or SIGTERM", flush=True)

    asyncio.run(run_worker(settings, options=options, on_ready=ready))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a stored conversation against the bot's current graph, plugins and settings; 1 when it differs."""
    import asyncio

    from botloom.runtime.replay import replay_conversation
    from botloom.runtime.services import open_services

    settings = _settings()

    async def run() -> Any:
        async with open_services(settings) as services:
            bot = await _find_bot(services, args.bot)
            conversation = await services.store.conversations.get(bot.tenant_id, args.conversation)
            if conversation is None or conversation.bot_id != bot.id:
                raise CommandError(f"bot {args.bot} has no conversation {args.conversation!r}")
            target = await _find_bot(services, args.against) if args.against else bot
            if target.tenant_id != bot.tenant_id:
                raise CommandError(f"bot {args.against} is not a bot of the conversation's tenant")
            mode: Literal["deterministic", "live"] = "live" if args.live else "deterministic"
            return await replay_conversation(services, bot, conversation, mode=mode, target=target)

    report = asyncio.run(run())
    if args.json:
        body = {
            "conversation_id": report.conversation_id,
            "bot_id": report.bot_id,
            "mode": report.mode,
            "turns": report.turns,
            "differences": report.differences,
            "truncated": report.truncated,
        }
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        for turn in report.turns:
            if turn["same"]:
                continue
            print(f"turn {turn['index']}: {turn['input']!r}")
            for key in turn["differs"]:
                print(f"  {key}: {turn['original'][key]!r}")
                print(f"  {' ' * len(key)}  now {turn['replayed'][key]!r}")
            if turn.get("error"):
                print(f"  error: {turn['error']}")
        more = " (the first ones: the conversation has more)" if report.truncated else ""
        print(f"{len(report.turns)} turns replayed{more} ({report.mode}): {report.differences} differ")
    return EXIT_ERROR if report.differences else EXIT_OK


def cmd_plugins_enable(args: argparse.Namespace) -> int:
    """Enable (or disable) an installed plugin for a bot, with a config its schema accepts."""
    import asyncio

    from botloom.core.config import ConfigError, split_secrets, validate_config
    from botloom.runtime.services import open_services

    settings = _settings()
    try:
        config = json.loads(args.config)
    except ValueError as exc:
        raise CommandError(f"--config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CommandError('--config must be a JSON object, e.g. \'{"greeting": "Hi"}\'')

    async def run() -> None:
        async with open_services(settings) as services:
            bot = await _find_bot(services, args.bot)
            if args.plugin not in services.host.infos:
                installed = ", ".join(sorted(services.host.infos))
                raise CommandError(
                    f"no plugin {args.plugin!r} is loaded (installed: {installed}); see 'botloom plugins list'"
                )
            schema = services.host.config_schema(args.plugin)
            try:
                checked = validate_config(args.plugin, schema, config)
            except ConfigError as exc:
                raise CommandError(str(exc)) from None
            public, secret = split_secrets(schema, checked)
            await services.store.plugin_settings.put(
                bot.tenant_id, bot.id, args.plugin, enabled=not args.disable, config=public, secrets=secret
            )

    asyncio.run(run())
    print(f"{'disabled' if args.disable else 'enabled'} {args.plugin} for {args.bot}")
    return EXIT_OK


def cmd_new_plugin(args: argparse.Namespace) -> int:
    """Render a new plugin package: pyproject, README, CHANGELOG, CI, hooks and tests of one kind."""
    from botloom.server.scaffold import TemplateError, render_plugin

    target = Path(args.output) if args.output else Path(args.name)
    try:
        render_plugin(args.name, target, kind=args.kind)
    except TemplateError as exc:
        print(f"botloom new-plugin: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"created the {args.kind} plugin {args.name} in {target}")
    print(f"next: pip install -e '{target}[test]' && pytest {target} && botloom plugins list")
    return EXIT_OK


def _add_plugin_kit_commands(
    add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser],
    plugin_commands: Any,
) -> None:
    """``botloom new-plugin`` and ``botloom plugins enable`` (the plugin author's kit)."""
    enabling = plugin_commands.add_parser("enable", help="enable an installed plugin for a bot, with its config")
    enabling.add_argument("bot", metavar="BOT", help="the bot: its id or tenant-slug/bot-slug")
    enabling.add_argument("plugin", metavar="PLUGIN", help="the plugin's name (see 'botloom plugins list')")
    enabling.add_argument("--config", default="{}", help="the bot's config of the plugin, as a JSON object")
    enabling.add_argument("--disable", action="store_true", help="disable the plugin instead")
    enabling.set_defaults(handler=cmd_plugins_enable)
    new_plugin = add("new-plugin", cmd_new_plugin, "create a plugin package (tests, CI, changelog) to build on")
    new_plugin.add_argument("name", metavar="NAME", help="its distribution name, e.g. acme-weather")
    new_plugin.add_argument(
        "--kind", choices=["tool", "intent", "channel"], default="tool", help="what it adds to bots (default: tool)"
    )
    new_plugin.add_argument("-o", "--output", metavar="DIR", help="the folder to create (default: ./NAME)")


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
    serve = add("serve", cmd_serve, "run the server: JSON API, web chat, channel webhooks")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--demo", action="store_true", help="create the demo tenant acme/support first if missing")
    serve.add_argument(
        "--forwarded-allow-ips", default="127.0.0.1", help="proxies whose X-Forwarded-* headers are trusted"
    )
    serve.add_argument(
        "--no-workers", action="store_true", help="run no job workers in this process (run 'botloom worker' instead)"
    )
    worker = add("worker", cmd_worker, "run job workers (turns, deliveries) until stopped")
    worker.add_argument("--turns", type=int, default=4, metavar="N", help="turns to run at once (default 4)")
    worker.add_argument("--deliveries", type=int, default=4, metavar="N", help="deliveries to run at once (default 4)")
    ingest = add("ingest", cmd_ingest, "add Markdown, text, HTML or CSV files (or folders) to a bot's knowledge")
    ingest.add_argument("bot", metavar="BOT", help="the bot: its id or tenant-slug/bot-slug")
    ingest.add_argument("paths", metavar="PATH", nargs="+", help="files or folders to ingest")
    add(
        "prune",
        cmd_prune,
        "run the hourly retention pass now: close idle conversations (bots' close_after_days), "
        "archive closed ones, prune idle ones' checkpoints (retention_days)",
    )
    add("demo", cmd_demo, "create the demo tenant 'acme' with its bot 'support' and print an API key")
    chat = add("chat", cmd_chat, "talk to a bot in the terminal (reads lines from standard input)")
    chat.add_argument("bot", metavar="BOT", help="the bot: its id or tenant-slug/bot-slug")
    chat.add_argument("--user", default="cli-user", help="the end user's address (default: cli-user)")
    chat.add_argument("--verbose-turns", action="store_true", help="show each turn's intent on standard error")
    graph = add("graph", cmd_graph, "print the turn graph (or a bot's graph) as Mermaid or SVG")
    graph.add_argument("bot", metavar="BOT", nargs="?", help="a bot whose graph to print (default: the turn graph)")
    graph.add_argument(
        "--format",
        type=_graph_format,
        choices=["mermaid", "svg", "png"],
        default="mermaid",
        help="mermaid (text, default), svg or png (pictures drawn offline)",
    )
    graph.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    replay = add(
        "replay",
        cmd_replay,
        "re-run a stored conversation against the bot's current logic and print where it differs (exit 1)",
    )
    replay.add_argument("bot", metavar="BOT", help="the conversation's bot: its id or tenant-slug/bot-slug")
    replay.add_argument("conversation", metavar="CONVERSATION", help="the conversation's id")
    replay.add_argument("--live", action="store_true", help="call the model and tools again (default: recorded)")
    replay.add_argument("--against", metavar="BOT", help="replay against another bot of the same tenant")
    replay.add_argument("--json", action="store_true", help="print the whole comparison as JSON")

    plugins = commands.add_parser("plugins", help="inspect installed plugins", description="inspect installed plugins")
    plugin_commands = plugins.add_subparsers(dest="plugins_command", metavar="COMMAND", required=True)
    listing = plugin_commands.add_parser("list", help="list plugins and what they register")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_plugins_list)
    _add_plugin_kit_commands(add, plugin_commands)

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
    _exit_cleanly_on_sigterm()
    try:
        return int(handler(args))
    except CommandError as exc:
        print(f"botloom: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        reason = _database_failure(exc)
        if reason is None:
            raise
        print(f"botloom: error: {_database_advice(reason)}", file=sys.stderr)
        return EXIT_ERROR


def _database_failure(exc: BaseException) -> str | None:
    """Why the database could not be used, in one line, if that is what ``exc`` (or what it wraps) says."""
    psycopg, pool = sys.modules.get("psycopg"), sys.modules.get("psycopg_pool")
    kinds = tuple(k for k in (getattr(psycopg, "OperationalError", None), getattr(pool, "PoolTimeout", None)) if k)
    for current in _causes(exc):
        if kinds and isinstance(current, kinds):
            reason = " ".join(str(current).split()) or type(current).__name__
            return reason if len(reason) <= 300 else reason[:297] + "..."
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the exceptions of a group, and what each was raised from or while handling."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _database_advice(reason: str) -> str:
    """The one-line error for a database botloom could not use, with what to check."""
    try:
        settings = _settings()
    except CommandError:
        settings = None
    if settings is not None and settings.database_url:
        return (
            f"cannot use the database at {_masked(settings.database_url)}: {reason}; check BOTLOOM_DATABASE_URL "
            "(host, port, user, password, database name) and that PostgreSQL runs and accepts connections "
            "from this machine, or unset it to use the embedded PostgreSQL"
        )
    where = f" in {Path(settings.data_path) / 'postgres'}" if settings is not None else ""
    return f"cannot use the embedded PostgreSQL{where}: {reason}; its log is the file 'log' in that folder"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
