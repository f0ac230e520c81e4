"""botloom's things in the LangGraph Server API's shapes: assistants, threads, states, checkpoints, runs, messages.

Assistants are bots (``assistant_id`` is the bot's id, ``graph_id`` its graph), threads
are conversations (``thread_id`` is the conversation's id; the LangGraph thread inside
the checkpointer, ``tenant:bot:conversation``, is never shown), runs are turns (the
``run_id`` is the idempotency key of the run's stored user message).

A state's ``messages`` are the ``turn`` graph's ``{"role", "content"}`` window shown as
LangChain message dicts (``type``, ``content``, ``id``), which agent-chat-ui renders;
the turn's other state fields stand beside them as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from botloom.core.domain import Bot, Conversation, StoredMessage

MESSAGE_NAMESPACE = uuid.UUID("3d0c5d55-2f3a-4a8e-9b7c-6f1a2b9e4c10")
ROLE_TYPES = {"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}
TYPE_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant"}
RUN_STATUSES = {
    "received": "pending",
    "processing": "running",
    "answered": "success",
    "refused": "success",
    "merged": "success",
    "rejected": "error",
    "failed": "error",
    "for_agent": "interrupted",
}
"""A run's status from the status of its stored user message."""


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; anything else becomes its ``repr``."""
    return msgspec.to_builtins(value, enc_hook=repr, str_keys=True)


def stamp(value: datetime | None) -> str | None:
    """An ISO 8601 time in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def now() -> str:
    """The current time, ISO 8601."""
    return datetime.now(UTC).isoformat()


# -- messages ----------------------------------------------------------------------


def message_id(thread_id: str, role: str, content: str, occurrence: int) -> str:
    """A message's id: stable for the same message of the same thread (the state keeps no ids)."""
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{thread_id}\x00{role}\x00{occurrence}\x00{content}"))


def lc_message(kind: str, content: str, ident: str) -> dict[str, Any]:
    """A LangChain message dict (``type``, ``content``, ``id``) as LangGraph servers send them."""
    message: dict[str, Any] = {
        "type": kind,
        "content": content,
        "id": ident,
        "name": None,
        "additional_kwargs": {},
        "response_metadata": {},
    }
    if kind == "ai":
        message |= {"tool_calls": [], "invalid_tool_calls": [], "usage_metadata": None}
    return message


def lc_messages(messages: Any, thread_id: str) -> list[dict[str, Any]]:
    """The state's ``{"role", "content"}`` messages as LangChain message dicts with stable ids."""
    if not isinstance(messages, list):
        return []
    seen: dict[tuple[str, str], int] = {}
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role, content = str(message.get("role", "")), str(message.get("content", ""))
        occurrence = seen.get((role, content), 0)
        seen[(role, content)] = occurrence + 1
        out.append(lc_message(ROLE_TYPES.get(role, role), content, message_id(thread_id, role, content, occurrence)))
    return out


def state_messages(messages: Any) -> list[dict[str, str]]:
    """Messages of a state update (LangChain or OpenAI form) as the ``turn`` graph's ``{"role", "content"}``.

    Raises ``ValueError`` naming what is wrong.
    """
    if not isinstance(messages, list):
        raise ValueError("messages is a list")
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ValueError("each message is an object with role (or type) and content")
        role = TYPE_ROLES.get(str(message.get("role", message.get("type", ""))))
        content = message.get("content")
        if role is None or not isinstance(content, str):
            raise ValueError("each message has a role of user or assistant (type human or ai) and text content")
        out.append({"role": role, "content": content})
    return out


def values_out(values: Any, thread_id: str) -> dict[str, Any]:
    """A state's values: ``messages`` as LangChain message dicts, the other fields as they are."""
    if not isinstance(values, Mapping):
        return {"value": jsonable(values)}
    if not values:
        return {}
    out = {str(k): jsonable(v) for k, v in values.items() if k != "messages"}
    out["messages"] = lc_messages(values.get("messages"), thread_id)
    return out


# -- checkpoints and states ------------------------------------------------------------


def checkpoint_ref(thread_id: str, config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``Checkpoint`` a snapshot's config names, with the public thread id."""
    configurable = (config or {}).get("configurable") or {}
    checkpoint_id = configurable.get("checkpoint_id")
    if config is None:
        return None
    return {
        "thread_id": thread_id,
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": checkpoint_id,
        "checkpoint_map": None,
    }


def interrupts_out(snapshot: Any) -> list[dict[str, Any]]:
    """A snapshot's pending interrupts (``value``, ``id``)."""
    return [
        {"value": jsonable(getattr(i, "value", None)), "id": str(getattr(i, "id", "") or "")}
        for i in getattr(snapshot, "interrupts", ()) or ()
    ]


def tasks_out(snapshot: Any) -> list[dict[str, Any]]:
    """A snapshot's pending tasks (an interrupted ``escalate``, for one)."""
    return [
        {
            "id": str(getattr(task, "id", "")),
            "name": str(getattr(task, "name", "")),
            "path": [str(p) for p in getattr(task, "path", ()) or ()],
            "error": repr(task.error) if getattr(task, "error", None) is not None else None,
            "interrupts": [
                {"value": jsonable(getattr(i, "value", None)), "id": str(getattr(i, "id", "") or "")}
                for i in getattr(task, "interrupts", ()) or ()
            ],
            "checkpoint": None,
            "state": None,
            "result": jsonable(getattr(task, "result", None)),
        }
        for task in getattr(snapshot, "tasks", ()) or ()
    ]


def public_metadata(metadata: Any, thread_id: str) -> dict[str, Any]:
    """A checkpoint's metadata without the checkpointer's own thread id."""
    if not isinstance(metadata, Mapping):
        return {}
    out = {str(k): jsonable(v) for k, v in metadata.items() if not str(k).startswith("__")}
    if "thread_id" in out:
        out["thread_id"] = thread_id
    return out


def state_out(snapshot: Any, thread_id: str) -> dict[str, Any]:
    """A LangGraph ``StateSnapshot`` as the API's ``ThreadState``."""
    return {
        "values": values_out(snapshot.values, thread_id),
        "next": list(snapshot.next or ()),
        "checkpoint": checkpoint_ref(thread_id, snapshot.config)
        or {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": None, "checkpoint_map": None},
        "metadata": public_metadata(snapshot.metadata, thread_id),
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint_ref(thread_id, snapshot.parent_config),
        "tasks": tasks_out(snapshot),
        "interrupts": interrupts_out(snapshot),
    }


def checkpoint_payload(snapshot: Any, thread_id: str) -> dict[str, Any]:
    """A snapshot as a debug event's ``checkpoint`` payload (what Studio reads to offer "fork from here")."""
    checkpoint = checkpoint_ref(thread_id, snapshot.config)
    parent = checkpoint_ref(thread_id, snapshot.parent_config)
    return {
        "config": {"configurable": {k: v for k, v in (checkpoint or {}).items() if k != "checkpoint_map"}},
        "parent_config": (
            {"configurable": {k: v for k, v in parent.items() if k != "checkpoint_map"}} if parent else None
        ),
        "metadata": public_metadata(snapshot.metadata, thread_id),
        "values": values_out(snapshot.values, thread_id),
        "next": list(snapshot.next or ()),
        "tasks": [
            {"id": t["id"], "name": t["name"], "interrupts": t["interrupts"], "state": None}
            for t in tasks_out(snapshot)
        ],
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
    }


def has_checkpoint(snapshot: Any) -> bool:
    """Whether a snapshot is a stored checkpoint (an unknown checkpoint id reads as an empty one)."""
    return snapshot.created_at is not None or bool(snapshot.metadata)


# -- assistants, threads, runs -----------------------------------------------------------


def assistant_out(bot: Bot) -> dict[str, Any]:
    """A bot as an ``Assistant``."""
    return {
        "assistant_id": bot.id,
        "graph_id": bot.graph,
        "config": {},
        "context": {},
        "created_at": stamp(bot.created_at),
        "updated_at": stamp(bot.updated_at),
        "metadata": {"tenant_id": bot.tenant_id, "slug": bot.slug, "created_by": "system"},
        "version": 1,
        "name": bot.name,
        "description": None,
    }


def thread_status(conversation: Conversation, busy: bool) -> str:
    """``busy`` while one of its runs runs here, ``interrupted`` while a person has it, else ``idle``."""
    if busy:
        return "busy"
    return "interrupted" if conversation.status == "escalated" else "idle"


def thread_out(
    conversation: Conversation, bot: Bot, *, busy: bool = False, snapshot: Any | None = None
) -> dict[str, Any]:
    """A conversation as a ``Thread`` (its values and interrupts when its state was read)."""
    values = values_out(snapshot.values, conversation.id) if snapshot is not None else {}
    interrupts = interrupts_out(snapshot) if snapshot is not None else []
    return {
        "thread_id": conversation.id,
        "created_at": stamp(conversation.created_at),
        "updated_at": stamp(conversation.updated_at),
        "metadata": {
            "assistant_id": bot.id,
            "graph_id": bot.graph,
            "channel": conversation.channel,
            "conversation_status": conversation.status,
        },
        "status": thread_status(conversation, busy),
        "values": values,
        "interrupts": {i["id"]: [i] for i in interrupts},
    }


def run_from_message(message: StoredMessage, assistant_id: str) -> dict[str, Any]:
    """A stored user message of the ``langgraph`` channel as the ``Run`` that sent it."""
    outcome = message.metadata.get("outcome") if isinstance(message.metadata, Mapping) else None
    status = RUN_STATUSES.get(message.status, "pending")
    if isinstance(outcome, Mapping) and outcome.get("escalated") and status == "success":
        status = "interrupted"
    return {
        "run_id": message.idempotency_key or message.id,
        "thread_id": message.conversation_id,
        "assistant_id": assistant_id,
        "created_at": stamp(message.created_at),
        "updated_at": stamp(message.created_at),
        "status": status,
        "metadata": {"message_id": message.id, "turn_id": message.turn_id},
        "multitask_strategy": "enqueue",
        "kwargs": {},
    }
