"""History benchmark: the first page of a 10,000-turn conversation's turns, as the debugger reads it.

Builds one thread of ``--turns`` checkpoints on PostgreSQL (a graph of the turn
graph's shape and state: a bounded message window, passages, a trace, run with
``durability="exit"`` as botloom runs turns, so one checkpoint per turn), then times:

* botloom: :func:`botloom.runtime.inspection.turn_page` (the ``/turns`` route's read:
  ``saver.alist(config, before=cursor, limit=n)``), the first page and a page deep in
  the history, and :func:`~botloom.runtime.inspection.turn_detail` of one turn;
* the bare checkpointer as a naive debugger uses it: ``graph.aget_state_history(config)``
  read whole (LangGraph Studio's history view without a limit), and with ``limit``.

Usage::

    python bench/history.py                 # 10,000 turns, PostgreSQL started here
    python bench/history.py --turns 2000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

# This file's directory would shadow the standard library's ``http`` with bench/http.py (see bench/turn.py).
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_server_arguments, markdown_table, servers

WINDOW = 20


def keep_recent(old: list[dict[str, str]] | None, new: list[dict[str, str]] | None) -> list[dict[str, str]]:
    return ((old or []) + (new or []))[-WINDOW:]


def add_trace(old: list[dict[str, Any]] | None, new: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [] if new is None else (old or []) + new


class State(TypedDict, total=False):
    messages: Annotated[list[dict[str, str]], keep_recent]
    user: dict[str, str]
    turn_id: str
    passages: list[dict[str, Any]]
    intent: str | None
    confidence: float
    replies: list[str]
    trace: Annotated[list[dict[str, Any]], add_trace]


def build(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    async def retrieve(state: State) -> dict[str, Any]:
        passages = [
            {"id": str(i), "document": "faq.md", "text": "Refunds take 5 days. " * 8, "score": 0.5} for i in range(3)
        ]
        return {"passages": passages, "trace": [{"node": "retrieve", "ms": 1.0, "summary": "faq.md (0.50)"}]}

    async def classify(state: State) -> dict[str, Any]:
        return {"intent": "faq", "confidence": 0.8, "trace": [{"node": "classify", "ms": 0.5, "summary": "intent=faq"}]}

    async def respond(state: State) -> dict[str, Any]:
        text = "Refunds take five days."
        return {
            "replies": [text],
            "messages": [{"role": "assistant", "content": text}],
            "trace": [{"node": "respond", "ms": 0.2, "summary": "answered"}],
        }

    graph = StateGraph(State)
    graph.add_node("retrieve", retrieve)
    graph.add_node("classify", classify)
    graph.add_node("respond", respond)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "classify")
    graph.add_edge("classify", "respond")
    graph.add_edge("respond", END)
    return graph.compile(checkpointer=saver)


async def timed(repeat: int, call: Any) -> float:
    """Median milliseconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def main(args: argparse.Namespace) -> None:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from botloom.runtime.inspection import thread_of, turn_detail, turn_page

    with servers(args) as found:
        assert found.database_url is not None
        kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        async with AsyncConnectionPool(found.database_url, kwargs=kwargs, max_size=4, open=False) as pool:
            saver = AsyncPostgresSaver(conn=pool)  # type: ignore[arg-type]
            await saver.setup()
            graph = build(saver)
            thread = "bench:history"
            config = thread_of(thread)
            began = time.perf_counter()
            for n in range(args.turns):
                text = f"how long do refunds take? ({n})"
                turn = {"messages": [{"role": "user", "content": text}], "user": {"text": text}, "turn_id": str(n)}
                await graph.ainvoke({**turn, "trace": None}, config, durability="exit")
                if (n + 1) % 2000 == 0:
                    print(f"  {n + 1} turns written ({time.perf_counter() - began:.0f} s)", flush=True)
            rows, cursor = await turn_page(saver, thread, limit=20)
            deep = cursor
            for _ in range(args.turns // 40):  # half way down the history
                _, deep = await turn_page(saver, thread, before=deep, limit=20)
            newest = rows[0].checkpoint_id
            results = [
                ("botloom turn_page, first 20", await timed(args.repeat, lambda: turn_page(saver, thread, limit=20))),
                (
                    "botloom turn_page, 20 half way down",
                    await timed(args.repeat, lambda: turn_page(saver, thread, before=deep, limit=20)),
                ),
                ("botloom turn_detail, one turn", await timed(args.repeat, lambda: turn_detail(saver, thread, newest))),
                (
                    "bare aget_state_history(limit=20)",
                    await timed(args.repeat, lambda: _history(graph, config, 20)),
                ),
                (
                    f"bare aget_state_history, whole ({args.turns})",
                    await timed(3, lambda: _history(graph, config, None)),
                ),
            ]
            print(f"\n{args.turns} turns in one thread; median of {args.repeat} runs (whole history: of 3)\n")
            print(markdown_table(["read", "ms"], [(name, f"{value:.1f}") for name, value in results]))


async def _history(graph: Any, config: Any, limit: int | None) -> int:
    return len([s async for s in graph.aget_state_history(config, limit=limit)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    add_server_arguments(parser)
    asyncio.run(main(parser.parse_args()))
