"""The Postgres checkpointer's read: the same tuples as LangGraph's, blobs looked up by primary key (#16)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from psycopg.rows import dict_row

from botloom.runtime.checkpointers import postgres_saver_class


class _State(TypedDict):
    log: Annotated[list[str], operator.add]
    turn: int
    answers: Annotated[list[str], operator.add]


def _graph(saver: Any) -> Any:
    def start(state: _State) -> dict[str, Any]:
        return {"log": [f"start {state['turn']}"]}

    def fan_out(state: _State) -> list[Send]:
        return [Send("worker", {"log": [], "turn": state["turn"] * 10 + i, "answers": []}) for i in range(3)]

    def worker(state: _State) -> dict[str, Any]:
        if state["turn"] % 10 == 1:
            answer = interrupt(f"question {state['turn']}")
            return {"answers": [str(answer)]}
        return {"log": [f"worker {state['turn']}"]}

    builder = StateGraph(_State)
    builder.add_node("start", start)
    builder.add_node("worker", worker)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", fan_out, ["worker"])
    builder.add_edge("worker", END)
    return builder.compile(checkpointer=saver)


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)


def _key(tuple_: Any) -> Any:
    if tuple_ is None:
        return None
    return (
        tuple_.config,
        tuple_.checkpoint,
        tuple_.metadata,
        tuple_.parent_config,
        sorted(tuple_.pending_writes or [], key=repr),
    )


async def test_the_keyed_saver_reads_what_the_stock_saver_reads(database_url: str) -> None:
    """Several turns with interrupts, sends and pending writes: every read gives the stock saver's tuples."""
    async with await _connect(database_url) as conn:
        stock = AsyncPostgresSaver(conn=conn)
        await stock.setup()
        keyed = postgres_saver_class()(conn=conn)
        assert keyed.SELECT_SQL != stock.SELECT_SQL
        graph = _graph(stock)
        config: dict[str, Any] = {"configurable": {"thread_id": "conversation"}}
        for turn in range(4):
            await graph.ainvoke({"log": [], "turn": turn, "answers": []}, config)
            if turn % 2 == 0:
                # Leave the interrupt of turn 3 open: the latest checkpoint then has pending writes.
                await graph.ainvoke(Command(resume=f"answer {turn}"), config)
        await _graph(stock).ainvoke({"log": [], "turn": 9, "answers": []}, {"configurable": {"thread_id": "other"}})

        stock_all = [t async for t in stock.alist(config)]
        keyed_all = [t async for t in keyed.alist(config)]
        assert len(stock_all) > 10
        assert [_key(t) for t in keyed_all] == [_key(t) for t in stock_all]
        assert any(t.pending_writes for t in stock_all)
        assert any(t.checkpoint["channel_values"].get("log") for t in stock_all)

        assert _key(await keyed.aget_tuple(config)) == _key(await stock.aget_tuple(config))
        assert (await stock.aget_tuple(config)).pending_writes  # type: ignore[union-attr]
        for tuple_ in stock_all:
            assert _key(await keyed.aget_tuple(tuple_.config)) == _key(tuple_)
        middle = stock_all[len(stock_all) // 2].config
        assert [_key(t) async for t in keyed.alist(config, before=middle, limit=3)] == [
            _key(t) async for t in stock.alist(config, before=middle, limit=3)
        ]
        assert [_key(t) async for t in keyed.alist(None, filter={"source": "loop"})] == [
            _key(t) async for t in stock.alist(None, filter={"source": "loop"})
        ]
        missing = {"configurable": {"thread_id": "nobody"}}
        assert await keyed.aget_tuple(missing) is None

        # The graph resumes from what the keyed saver reads.
        state = await _graph(keyed).aget_state(config)
        assert state.interrupts
        await _graph(keyed).ainvoke(Command(resume="late"), config)
        assert "late" in (await _graph(stock).aget_state(config)).values["answers"]


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == "checkpoint_blobs" else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def _looks_up_by_key(scan: dict[str, Any]) -> bool:
    condition = scan.get("Index Cond", "")
    return "Index" in scan["Node Type"] and "channel" in condition and "version" in condition


async def _blob_scans(conn: psycopg.AsyncConnection[Any], select_sql: str) -> list[dict[str, Any]]:
    query = (
        "EXPLAIN (FORMAT JSON) "
        + select_sql
        + ("WHERE thread_id = 'long' AND checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1")
    )
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    assert row is not None
    return _scans(row["QUERY PLAN"][0]["Plan"])


async def test_the_keyed_read_does_not_scan_all_the_threads_blobs(database_url: str) -> None:
    """On a thread with many blobs, each blob of the checkpoint is an index lookup on its primary key."""
    async with await _connect(database_url) as conn:
        await AsyncPostgresSaver(conn=conn).setup()
        channels = [f"channel{i}" for i in range(8)]
        await conn.execute(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)"
            " SELECT 'long', '', 'channel' || (n % 8), lpad(n::text, 32, '0'), 'msgpack', '\\x90'::bytea"
            " FROM generate_series(1, 40000) AS n"
        )
        await conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, checkpoint, metadata)"
            " SELECT 'long', '', lpad(n::text, 8, '0'),"
            " jsonb_build_object('v', 4, 'channel_versions', (SELECT jsonb_object_agg(c, lpad((n * 8 + i)::text, 32,"
            " '0')) FROM unnest(%s::text[]) WITH ORDINALITY AS x(c, i))), '{}'::jsonb"
            " FROM generate_series(1, 5000) AS n",
            (channels,),
        )
        # Many short conversations besides: the planner's estimate of one thread's blobs is then a few rows.
        await conn.execute(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)"
            " SELECT 'short' || (n / 4), '', 'channel' || (n % 4), '1', 'msgpack', '\\x90'::bytea"
            " FROM generate_series(1, 200000) AS n"
        )
        await conn.execute("ANALYZE checkpoint_blobs")
        await conn.execute("ANALYZE checkpoints")

        keyed = await _blob_scans(conn, postgres_saver_class().SELECT_SQL)
        assert keyed and all(_looks_up_by_key(scan) for scan in keyed), keyed
        # The check can fail: the stock read scans the thread's blobs without a channel/version condition.
        stock = await _blob_scans(conn, AsyncPostgresSaver.SELECT_SQL)
        assert stock and not all(_looks_up_by_key(scan) for scan in stock), stock
