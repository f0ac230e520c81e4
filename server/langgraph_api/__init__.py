"""The LangGraph Server API under ``/langgraph``, for the ``langgraph-sdk`` client, agent-chat-ui and Studio.

Assistants are bots, threads are conversations, runs are turns of the ``langgraph``
channel (``channels/langgraph.py``), run by the same inbound path and runner as any
channel's. ``docs/langgraph-api.md`` says what is supported and what is not.
"""

from __future__ import annotations

from litestar import Router

PREFIX = "/langgraph"


def langgraph_router() -> Router:
    """The API's routes, kept out of botloom's own API schema (LangGraph publishes the API's shapes)."""
    from botloom.server.langgraph_api.routes import LANGGRAPH_HANDLERS

    return Router(path=PREFIX, route_handlers=LANGGRAPH_HANDLERS, include_in_schema=False, tags=["langgraph"])


__all__ = ["PREFIX", "langgraph_router"]
