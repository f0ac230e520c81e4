"""A scripted OpenAI-compatible server, so tests exercise the real ``langchain-openai`` client.

:class:`ScriptedOpenAI` listens on a free loopback port and answers chat completions
(plain and streamed) with the responses a test queued through :meth:`ScriptedOpenAI.script`
(text, a :class:`ToolCall`, a :class:`Reply`, an :class:`HTTPError`, a mapping answered as
JSON content for structured output, or a callable computing one of those from the request),
then with ``default`` (an echo of the last user message). Embeddings are deterministic.

The ``scripted_model`` fixture of ``botloom.testing`` gives one to a test, with the bot's
model pointed at it. Nothing here imports pytest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "HTTPError",
    "Reply",
    "Response",
    "ScriptedOpenAI",
    "ToolCall",
    "classification",
    "echo_last_user_message",
    "embedding_vector",
]

LOOPBACK = "127.0.0.1"


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


def classification(
    intent: str | None,
    *,
    confidence: float = 0.9,
    slots: Mapping[str, str] | None = None,
    wants_human: bool = False,
) -> dict[str, Any]:
    """The model's answer to botloom's classification call (a turn's first model call): script it first.

    ``intent`` ``None`` is no intent (the model then answers with the bot's tools at hand);
    ``slots`` are the values it found; ``wants_human`` asks for a person.
    """
    return {
        "intent": intent or "none",
        "confidence": confidence,
        "slots": dict(slots or {}),
        "wants_human": wants_human,
    }


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
