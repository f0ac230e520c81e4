"""Statements sent together as one query string, prepared once per connection (SQL ``PREPARE``/``EXECUTE``).

A turn's end goes to PostgreSQL as one string of statements with their values bound
client-side (:meth:`botloom.runtime.turns.Turns._end_on`): one send, one round trip, half the
client CPU of a pipeline. Sent as plain SQL, though, each of those statements is parsed and
planned by PostgreSQL at every turn (the simple query protocol prepares nothing): about 1.3 ms
of the database's CPU a turn, a quarter of what a turn costs it. :class:`PreparedStatements`
keeps the one string and takes the parsing and planning away: the first time a statement goes
out on a connection, the string carries ``PREPARE botloom_<hash> (types) AS <statement>``
before it, and from then on only ``EXECUTE botloom_<hash>(<values>)``; PostgreSQL then plans it
as it plans psycopg's own prepared statements (custom plans first, a generic one once cheaper).

The parameter types are those psycopg would send with the statement (its dumpers' OIDs), so a
statement prepared here means what it means executed by psycopg; a parameter psycopg sends
untyped (``None``, a ``str``) is declared ``unknown`` and PostgreSQL infers its type from the
statement, as it does for psycopg. The types are part of the prepared statement's name.

Prepared statements are not transactional: a ``PREPARE`` in a string whose later statement
fails stays prepared. After any failure the caller calls :meth:`PreparedStatements.forget`,
which drops what this connection prepared (so a statement whose plan a migration invalidated
is prepared again) and starts its record afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "botloom_"
"""The names of the statements prepared here start with this (psycopg's own start with ``_pg3_``)."""
LIMIT = 64
"""At most this many statements prepared here per connection; beyond it, statements go out unprepared."""


class PreparedStatements:
    """Which statements each connection has prepared; renders a statement as ``[PREPARE;] EXECUTE`` text."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._known: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self._adapters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def render(self, cur: Any, sql: str, params: Sequence[Any] | Mapping[str, Any] | None) -> list[str]:
        """The statement ``sql`` with ``params`` as text for one query string on ``cur``'s connection.

        ``cur`` is a psycopg ``AsyncClientCursor`` (it binds the values). Returns the
        ``EXECUTE`` of the statement, preceded by its ``PREPARE`` when this connection has
        not prepared it yet; once the connection holds :attr:`limit` statements, the
        statement itself (``mogrify``).
        """
        from psycopg import _queries
        from psycopg.adapt import PyFormat

        conn = cur.connection
        query, _, order, _ = _queries._query2pg(sql.encode(), conn.info.encoding)
        values: list[Any] = []
        if isinstance(params, Mapping):
            values = [params[k] for k in order or ()]
        elif params is not None:
            values = list(params)
        tx = self._adapters.get(conn)
        if tx is None:  # the connection's adapters, with the dumpers it chose for each type cached
            from psycopg.adapt import Transformer

            tx = self._adapters[conn] = Transformer.from_context(conn)
        types = tuple(0 if v is None else tx.get_dumper(v, PyFormat.AUTO).oid for v in values)
        known = self._known.setdefault(conn, set())
        name = _name(query, types)
        parts: list[str] = []
        if name not in known:
            if len(known) >= self.limit:
                return [cur.mogrify(sql, params)]
            declared = ", ".join(_type_name(conn, oid) for oid in types)
            parts.append(f"PREPARE {name}{f' ({declared})' if declared else ''} AS {query.decode()}")
            known.add(name)
        if not values:
            parts.append(f"EXECUTE {name}")
        else:
            parts.append(cur.mogrify(f"EXECUTE {name}({', '.join(['%s'] * len(values))})", values))
        return parts

    async def forget(self, conn: Any) -> None:
        """After a failure on ``conn``: drop the statements prepared here (if it still answers) and their record.

        Call it once the connection is out of a failed transaction (after its rollback).
        """
        self._known.pop(conn, None)
        with contextlib.suppress(Exception):  # a connection gone takes its prepared statements with it
            cur = await conn.execute("SELECT name FROM pg_prepared_statements WHERE starts_with(name, %s)", (PREFIX,))
            names = [row["name"] if isinstance(row, Mapping) else row[0] for row in await cur.fetchall()]
            if names:
                await conn.execute("; ".join(f"DEALLOCATE {name}" for name in names if name.isidentifier()))

    def known(self, conn: Any) -> set[str]:
        """The names of the statements prepared on ``conn`` (for tests)."""
        return set(self._known.get(conn, ()))


def _name(query: bytes, types: tuple[int, ...]) -> str:
    digest = hashlib.blake2b(query + repr(types).encode(), digest_size=10).hexdigest()
    return f"{PREFIX}{digest}"


def _type_name(conn: Any, oid: int) -> str:
    """The SQL name of type ``oid`` for a ``PREPARE``'s parameter list (``unknown`` for psycopg's untyped)."""
    if not oid:
        return "unknown"
    info = conn.adapters.types.get(oid)
    if info is None:
        raise LookupError(f"no type name for OID {oid}")
    return f"{info.regtype}[]" if oid == info.array_oid else str(info.regtype)


PREPARED = PreparedStatements()
"""The process's record: the turn's statements at the lock and at its end share connections, so one record."""
