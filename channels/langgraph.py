"""The LangGraph channel: runs of the LangGraph Server API (``/langgraph``) are turns of this channel.

A response channel like REST chat: the host stores the run's user message and
runs its turn through the same inbound path and runner as any other channel's
(locks, bursts, storage), then this channel renders the answer. The server's
LangGraph API (``botloom.server.langgraph_api``) hands each run to the host as a
:class:`~botloom.ChannelRequest` whose JSON body is::

    {"thread_id": "...", "run_id": "...", "input": {"messages": [...]}, "user": null}

``input`` is what the LangGraph client sent: ``{"messages": [...]}`` with messages
in OpenAI form (``{"role": "user", "content": "..."}``) or LangChain form
(``{"type": "human", "content": "..."}``, as agent-chat-ui sends them); content is
a string or a list of content blocks (``{"type": "text", "text": "..."}``). The
user messages of one run become one inbound message (their texts joined), whose
idempotency key is the run's id: a run is stored once.

The channel also serves the page ``GET /channels/langgraph/{bot}``: where the
LangGraph API is, for a bot that enabled this channel (it names nothing the caller
did not).
A bot must enable the ``langgraph`` plugin before runs can be created for it.
"""

from __future__ import annotations

import html
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from botloom import (
    ChannelAdapter,
    ChannelKind,
    ChannelRejected,
    ChannelRequest,
    ChannelResponse,
    ChannelRoute,
    InboundMessage,
    TurnAnswer,
    hookimpl,
)
from botloom.channels.bodies import IDENTIFIER, Reply, checked_text, decode_json

USER_TYPES = frozenset({"user", "human"})
"""A message's ``role`` (OpenAI form) or ``type`` (LangChain form) that says it is the end user's."""


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the LangGraph API hands the channel for one run."""

    thread_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=IDENTIFIER)]
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=IDENTIFIER)]
    input: dict[str, Any] | None = None
    user: Annotated[str, msgspec.Meta(max_length=200, pattern=IDENTIFIER)] | None = None


class RunAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """How the host answered a run (this channel's rendering of a :class:`~botloom.TurnAnswer`)."""

    thread_id: str
    message_id: str | None
    status: str
    escalated: bool
    duplicate: bool
    intent: str | None
    confidence: float
    replies: list[Reply]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LangGraph API</title></head>
<body><p>This bot answers the LangGraph Server API at <code>/langgraph</code>
(<code>get_client(url=BASE + "/langgraph", api_key=KEY)</code>); its assistant id is
<code data-assistant-id="{ref}">{ref}</code>.</p></body></html>
"""


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the ``text`` of its text blocks, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            else:
                raise ChannelRejected(422, "invalid input: only text content blocks are supported")
        return "\n".join(parts)
    raise ChannelRejected(422, "invalid input: a message's content is a string or a list of text blocks")


ANONYMOUS = "langgraph-user"
"""The sender of a run without a user: every anonymous client's, so it names no contact (only thread ids do)."""


def user_text(run_input: dict[str, Any] | None) -> str:
    """The text of the run's user messages; raises :class:`ChannelRejected` (422) naming what is wrong."""
    if not run_input or "messages" not in run_input:
        raise ChannelRejected(422, 'invalid input: a run needs {"messages": [{"role": "user", "content": "..."}]}')
    extra = sorted(set(run_input) - {"messages"})
    if extra:
        raise ChannelRejected(422, f"invalid input: only messages can be given, not {', '.join(extra)}")
    messages = run_input["messages"]
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise ChannelRejected(422, "invalid input: messages is a non-empty list")
    texts = []
    for message in messages:
        if isinstance(message, str):
            texts.append(message)
            continue
        if not isinstance(message, dict):
            raise ChannelRejected(422, "invalid input: each message is an object with role (or type) and content")
        kind = message.get("role", message.get("type"))
        if kind not in USER_TYPES:
            raise ChannelRejected(422, f"invalid input: only user messages can be sent, not {str(kind)[:40]!r}")
        texts.append(content_text(message.get("content")))
    return checked_text("\n".join(t.strip() for t in texts if t.strip()), what="input", status=422)


class LangGraphChannel(ChannelAdapter[None]):
    """Runs of the LangGraph Server API as turns; the answer goes back to the API (a response channel)."""

    name: ClassVar[str] = "langgraph"
    anonymous_sender: ClassVar[str | None] = ANONYMOUS
    kind: ClassVar[ChannelKind] = "response"
    conversations: ClassVar[Literal["key", "id"]] = "id"

    def routes(self) -> tuple[ChannelRoute, ...]:
        """``GET /channels/langgraph/{bot}``: where the bot's LangGraph API is (runs go through ``/langgraph``)."""
        return (
            ChannelRoute(
                path="/channels/langgraph/{bot}",
                method="GET",
                summary="Where a bot's LangGraph API is",
                description="The base path of the LangGraph Server API; the bot, as named, is its assistant id.",
            ),
        )

    def verify(self, request: ChannelRequest, config: None) -> None:
        """Runs are authenticated by the LangGraph API's key check, before the channel sees them."""

    def decode(self, body: bytes) -> RunRequest:
        """The validated run request; raises :class:`ChannelRejected` (422) naming what is wrong."""
        return decode_json(body, RunRequest, what="run", invalid=422)

    def parse(self, request: ChannelRequest, config: None) -> list[InboundMessage]:
        """One inbound message: the run's user text on the run's thread, keyed by the run's id."""
        run = self.decode(request.body)
        return [
            InboundMessage(
                channel=self.name,
                text=user_text(run.input),
                sender=run.user or ANONYMOUS,
                conversation_key=run.thread_id,
                idempotency_key=run.run_id,
                metadata={"run_id": run.run_id},
            )
        ]

    def render(self, request: ChannelRequest, answers: list[TurnAnswer], config: None) -> ChannelResponse:
        """The JSON :class:`RunAnswer` of the run's one message."""
        (answer,) = answers
        body = RunAnswer(
            thread_id=answer.conversation_id,
            message_id=answer.message_id,
            status=answer.status,
            escalated=answer.escalated,
            duplicate=answer.duplicate,
            intent=answer.intent,
            confidence=answer.confidence,
            replies=[Reply(id=r.id, text=r.text) for r in answer.replies],
        )
        return ChannelResponse(status=200, body=msgspec.json.encode(body), media_type="application/json")

    def page(self, request: ChannelRequest, config: None) -> ChannelResponse:
        """A page saying where the LangGraph API is, and that the bot (as the URL names it) is its assistant id."""
        body = PAGE.replace("{ref}", html.escape(request.bot_ref, quote=True))
        return ChannelResponse(status=200, body=body.encode(), media_type="text/html; charset=utf-8")


@hookimpl
def register_channels() -> list[ChannelAdapter[Any]]:
    """The LangGraph channel."""
    return [LangGraphChannel()]
