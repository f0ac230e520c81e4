"""PostgreSQL's CPU for the webhook's one-statement store and its parts, next to the one-row route's insert.

Runs ``InboundRepository.receive_and_queue``'s statement, then variants of it (without
``pg_notify``; the conversation and message only; the conversation's upsert alone),
the webhook inbox's one row (``InboundRepository.to_inbox``, ``BOTLOOM_WEBHOOK_INBOX``)
and the bare one-row route's ``INSERT ... ON CONFLICT DO NOTHING``, each ``--count``
times on one connection (each message from its own sender, as ``bench/webhooks.py``
sends them), in ``--rounds`` alternating rounds, and prints the backend's CPU per
statement (from ``/proc``: PostgreSQL must run on this machine).

Usage::

    python bench/webhook_store.py [--count 1500] [--rounds 3] [--database-url postgresql://...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import argparse
import asyncio
import os
import tempfile
from typing import Any

from common import add_server_arguments, machine, markdown_table, servers


def backend_cpu(pid: int) -> float:
    """CPU seconds of one PostgreSQL backend so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(database_url: str, count: int, rounds: int, connections: int = 1) -> dict[str, list[float]]:
    """Backend CPU ms per statement of each variant, one figure per round."""
    import msgspec
    import psycopg
    from psycopg.rows import dict_row

    from botloom.core.messages import InboundMessage
    from botloom.core.settings import load_settings
    from botloom.core.storage.repositories.inbound import _TO_INBOX, INBOX_CHANNEL, _statement
    from botloom.core.storage.repositories.messages import receive_params
    from botloom.runtime.services import open_services
    from botloom.server.demo import ensure_demo

    settings = load_settings(environ={}, data_dir=tempfile.mkdtemp(prefix="botloom-bench-"), secret_key="bench")
    async with open_services(settings, url=database_url) as services:
        bot = (await ensure_demo(services)).bot
        job = await services.queue.job_row(
            "turns", "turn", key="", tenant_id=bot.tenant_id, bot_id=bot.id, conversation_id=""
        )
        assert job is not None
    full = _statement(job["table"]).decode()
    message_part = full[: full.index("job AS (")].rstrip(", ")
    variants = {
        "the webhook's store: conversation upserted, message and job inserted, pg_notify": full,
        "the same returning the whole message row (row_to_json), as before 7902d35": full.replace(
            "SELECT m.id, m.conversation_id, (SELECT count(*) FROM notified) AS queued FROM message m",
            "SELECT (SELECT row_to_json(m) FROM message m) AS message, (SELECT count(*) FROM notified) AS queued",
        ),
        "the same without pg_notify": full.replace(
            "SELECT pg_notify(%(notify_channel)s, %(notify_event)s) FROM job", "SELECT 1 FROM job"
        ),
        "conversation and message (row_to_json of the message)": message_part
        + " SELECT (SELECT row_to_json(m) FROM message m) AS message",
        "conversation and message (its id only)": message_part + " SELECT (SELECT id FROM message m) AS message",
        "the conversation's upsert alone": full[: full.index("message AS (")].rstrip(", ")
        + " SELECT (SELECT id FROM conversation) AS c",
        "the same upsert into a copy of the table without its foreign key to the bot": full[
            : full.index("message AS (")
        ]
        .rstrip(", ")
        .replace("INSERT INTO conversations ", "INSERT INTO bench_conversations ")
        + " SELECT (SELECT id FROM conversation) AS c",
        "the webhook inbox's one row and its pg_notify (BOTLOOM_WEBHOOK_INBOX)": _TO_INBOX.decode()
        .replace("%(key)s", "%(idempotency)s")
        .replace("%(message)s", "%(inbox_message)s"),
        "the one-row route's INSERT ... ON CONFLICT DO NOTHING": "INSERT INTO bench_forms (sid, form) "
        "VALUES (%(idempotency)s, %(metadata)s) ON CONFLICT (sid) DO NOTHING",
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    conns = [
        await psycopg.AsyncConnection.connect(database_url, autocommit=True, row_factory=dict_row)
        for _ in range(connections)
    ]
    try:
        await conns[0].execute(
            "CREATE TABLE IF NOT EXISTS bench_forms (id bigserial PRIMARY KEY, sid text UNIQUE NOT NULL, "
            "form jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        # LIKE ... INCLUDING ALL copies columns, defaults, checks and indexes, not foreign keys
        await conns[0].execute("CREATE TABLE IF NOT EXISTS bench_conversations (LIKE conversations INCLUDING ALL)")
        pids = []
        for conn in conns:
            row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
            assert row is not None
            pids.append(int(row["pid"]))

        def params(tag: str, i: int) -> dict[str, Any]:
            message = InboundMessage(
                channel="twilio",
                sender=f"+1{tag}{i:07d}",
                text="hello",
                idempotency_key=f"SM{tag}{i:030d}",
                metadata={"to": "+15550000000"},
            )
            return {
                **receive_params(bot.tenant_id, bot.id, message, 1),
                **{k: job[k] for k in ("key", "job", "queue", "status", "priority", "scheduled")},
                "job_key": job["key"],
                "notify_channel": job["channel"],
                "notify_event": job["event"],
                "inbox_message": msgspec.json.encode(message),
                "notify": INBOX_CHANNEL,
            }

        async def run(conn: Any, statement: bytes, tag: str, first: int) -> None:
            for i in range(first, count, connections):
                await conn.execute(statement, params(tag, i))

        for round_ in range(rounds):
            for index, (name, statement) in enumerate(variants.items()):
                tag = f"{index}{round_}"
                before = sum(backend_cpu(pid) for pid in pids)
                await asyncio.gather(*(run(conn, statement.encode(), tag, n) for n, conn in enumerate(conns)))
                results[name].append((sum(backend_cpu(pid) for pid in pids) - before) * 1000 / count)
    finally:
        for conn in conns:
            await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--count", type=int, default=1500, help="statements per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", type=int, default=1, help="connections sending the statements at once (a webhook burst)"
    )
    args = parser.parse_args()
    with servers(args, say=lambda line: print(line, file=sys.stderr)) as found:
        assert found.database_url is not None
        results = asyncio.run(measure(found.database_url, args.count, args.rounds, args.connections))
    info = machine()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, load average {info['load average']}")
    print(f"{args.count} statements per variant, {args.rounds} alternating rounds, {args.connections} connection(s)\n")
    rows = [[name, f"{min(values):.3f}", f"{sorted(values)[len(values) // 2]:.3f}"] for name, values in results.items()]
    print(markdown_table(["statement", "PostgreSQL CPU ms, best round", "median round"], rows))


if __name__ == "__main__":
    main()
