"""The turn's end is prepared once per connection (#16 goal 1): PostgreSQL does not parse and plan it every turn.

The turn's end goes out as one query string (``BEGIN``, checkpoint, ``store_turn``,
``COMMIT``, the lock's release); :mod:`botloom.runtime.prepared` sends each statement's
``PREPARE`` the first time it goes out on a connection, and only ``EXECUTE`` after that.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from botloom.runtime.prepared import PREFIX, PREPARED, PreparedStatements
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat


def _record_strings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    original = psycopg.AsyncClientCursor.execute

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncClientCursor, "execute", execute)
    return sent


def _statements(string: str) -> list[str]:
    return [part.strip() for part in string.split(";\n") if part.strip()]


async def test_after_its_first_turn_on_a_connection_the_turn_end_is_only_executes(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _record_strings(monkeypatch)
    chat = Chat(services, demo.bot)
    for text in ("hello", "where is my order?", "it's 1234", "thanks", "hello again", "bye"):
        await chat.say(text)
    ends = [s for s in sent if "BEGIN" in s]
    assert len(ends) == 6, "one string a turn"
    for string in ends:
        for part in _statements(string):
            assert part.split()[0] in {"PREPARE", "BEGIN", "EXECUTE", "COMMIT"}, part[:80]
    executes_only = [s for s in ends if all(p.split()[0] != "PREPARE" for p in _statements(s))]
    assert executes_only, "some turn reused its connection's prepared statements"
    prepared = [p.split()[1] for s in ends for p in _statements(s) if p.startswith("PREPARE")]
    assert prepared and all(name.startswith(PREFIX) for name in prepared)


async def test_a_connection_that_lost_its_prepared_statements_still_ends_the_turn(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dropped them (``DEALLOCATE``, a pooler's reset): the turn's end is sent again, prepared again."""
    sent = _record_strings(monkeypatch)
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    for conn in list(PREPARED._known):  # every connection that prepared something: dropped behind its back
        if not conn.closed and PREPARED.known(conn):
            await conn.execute("; ".join(f"DEALLOCATE {name}" for name in PREPARED.known(conn)))
    reply = await chat.say("where is my order?")
    assert reply.intent == "order_status" and reply.replies
    third = await chat.say("it's 1234")
    assert "1234" in third.replies[0].text
    assert any("PREPARE" in s for s in sent[1:]), "prepared again"


async def test_a_connection_still_holding_statements_its_record_lost_still_ends_the_turn(
    services: Services, demo: DemoInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record forgot a statement the server still has: the ``PREPARE`` fails, the end is sent again."""
    sent = _record_strings(monkeypatch)
    chat = Chat(services, demo.bot)
    await chat.say("hello")
    forgotten = 0
    for conn in list(PREPARED._known):
        if not conn.closed and PREPARED.known(conn):
            forgotten += len(PREPARED.known(conn))
            PREPARED._known[conn].clear()  # the server keeps them
    assert forgotten
    reply = await chat.say("where is my order?")
    assert reply.intent == "order_status" and reply.replies
    third = await chat.say("it's 1234")
    assert "1234" in third.replies[0].text
    assert sum("PREPARE" in s for s in sent[1:]) >= 2, "the failed string's PREPARE, then prepared afresh"


async def test_a_failed_turn_end_drops_what_the_connection_prepared(database_url: str) -> None:
    statements = PreparedStatements()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = psycopg.AsyncClientCursor(conn)
        sql = "SELECT %(a)s::int + %(b)s::int AS n"
        first = statements.render(cur, sql, {"a": 1, "b": 2})
        assert first[0].startswith("PREPARE ") and first[1].startswith("EXECUTE ")
        await cur.execute(";\n".join(first))
        assert cur.nextset() and (await cur.fetchone()) == (3,)
        again = statements.render(cur, sql, {"a": 40, "b": 2})
        assert len(again) == 1 and again[0].startswith("EXECUTE ")
        await cur.execute(again[0])
        assert (await cur.fetchone()) == (42,)
        await statements.forget(conn)
        assert statements.known(conn) == set()
        check = await conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE starts_with(name, %s)", (PREFIX,))
        assert (await check.fetchone()) == (0,)
        assert statements.render(cur, sql, {"a": 1, "b": 2})[0].startswith("PREPARE "), "prepared afresh"


async def test_values_are_bound_as_psycopg_binds_them(database_url: str) -> None:
    """Quotes, bytes, arrays, JSON, NULL and uuids come back as they went (types declared as psycopg sends them)."""
    from psycopg.types.json import Jsonb

    statements = PreparedStatements()
    values = {
        "text": "it's \\ 'quoted' é",
        "blobs": [b"\x00\x01'", b"\\x"],
        "doc": Jsonb({"a": ["b", None]}),
        "id": uuid.uuid4(),
        "none": None,
        "big": 2**40,
    }
    sql = (
        "SELECT %(text)s::text AS text, %(blobs)s::bytea[] AS blobs, %(doc)s AS doc, %(id)s AS id, "
        "%(none)s::int AS none, %(big)s AS big"
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = psycopg.AsyncClientCursor(conn)
        for _ in range(2):
            parts = statements.render(cur, sql, values)
            await cur.execute(";\n".join(parts))
            if len(parts) == 2:
                cur.nextset()
            row = await cur.fetchone()
            assert row == (values["text"], values["blobs"], {"a": ["b", None]}, values["id"], None, 2**40)
