"""Running a tool for a turn: only the bot's enabled tools, with a timeout, never raising."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from botloom.core.definitions import ToolContext
from botloom.core.metrics import PLUGIN_ERRORS, PLUGIN_SECONDS
from botloom.graphs.context import TurnContext
from botloom.graphs.state import ToolResult

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a tool's result (checkpoints store it)."""
    try:
        return msgspec.to_builtins(value, str_keys=True)
    except TypeError:
        return str(value)


async def run_tool(ctx: TurnContext, name: str, arguments: dict[str, Any], call_key: str) -> ToolResult:
    """Call tool ``name`` with ``arguments`` for this turn and describe what happened.

    A tool the bot did not enable is refused, even when a model asks for it by
    name. Its ``ToolContext.search_knowledge`` is the turn's knowledge search:
    ``None`` when the bot did not enable the ``knowledge`` plugin. Failures (bad
    arguments, an exception, a timeout) come back as a result with ``ok: False``
    and the reason, so the turn goes on with the fallback.
    """
    began = time.perf_counter()
    tool = ctx.tools.get(name)
    if tool is None:
        return ToolResult(tool=name, arguments=arguments, ok=False, error=f"tool {name!r} is not enabled for this bot")
    context = ToolContext(
        tenant_id=ctx.tenant_id,
        bot_id=ctx.bot.id,
        conversation_id=ctx.conversation_id,
        config=ctx.config_for_tool(name),
        idempotency_key=call_key,
        search_knowledge=ctx.search,
        dry_run=ctx.dry_run,
    )
    timeout = min(tool.timeout, ctx.tool_timeout)
    try:
        result = await asyncio.wait_for(tool.invoke(arguments, context), timeout)
    except TimeoutError:
        error = f"timed out after {timeout:g}s"
    except msgspec.ValidationError as exc:
        error = f"bad arguments: {exc}"
    except Exception as exc:  # noqa: BLE001 - a plugin's failure must not take the turn down
        error = f"raised {type(exc).__name__}: {exc}"
    else:
        elapsed = time.perf_counter() - began
        PLUGIN_SECONDS.labels(ctx.tool_owners.get(name, "?"), name).observe(elapsed)
        return ToolResult(tool=name, arguments=arguments, ok=True, result=_plain(result), ms=elapsed * 1000)
    PLUGIN_ERRORS.labels(ctx.tool_owners.get(name, "?")).inc()
    logger.warning("tool %s (plugin %s) failed: %s", name, ctx.tool_owners.get(name, "?"), error)
    return ToolResult(tool=name, arguments=arguments, ok=False, error=error, ms=(time.perf_counter() - began) * 1000)
