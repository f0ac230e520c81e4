"""Telling an outage from a failure: whether an operation failed because PostgreSQL or Redis went away.

A turn that failed because the database or Redis could not be reached (a restart,
a failover, a dropped connection, a pool that could not hand out a connection in
time) is not the bot's answer: it should run again once the service is back. A
turn that failed for its own reasons (a bug, a plugin error, a timeout of the
model) is answered with the bot's fallback. :func:`is_transient` draws that line,
and the HTTP layer uses it too: such a request gets a 503 with ``Retry-After``.
"""

from __future__ import annotations

import sys

import psycopg

TRANSIENT_SQLSTATES = frozenset(
    {
        "25P03",  # idle_in_transaction_session_timeout: the server closed the session
        "40001",  # serialization_failure: run again
        "40P01",  # deadlock_detected: run again
        "53000",  # insufficient_resources
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown: the server is stopping or restarting (also pg_terminate_backend)
        "57P02",  # crash_shutdown: another backend crashed, the server restarts
        "57P03",  # cannot_connect_now: the server is starting up or shutting down
        "57P05",  # idle_session_timeout
    }
)
"""SQLSTATEs of errors that say the server could not serve now, not that the statement is wrong.

Class ``08`` (connection exceptions) counts as a whole. ``57014`` (query_canceled, a
statement timeout) does not: a query that took too long takes too long again.
"""

_MAX_CHAIN = 16


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database or Redis went away" (or could not serve for a moment).

    True for psycopg's connection errors (a lost or refused connection, the server's
    ``AdminShutdown`` when it stops or restarts, ``CannotConnectNow``, too many
    connections, serialization failures and deadlocks), for the pool's ``PoolTimeout``,
    ``TooManyRequests`` and ``PoolClosed``, for redis-py's ``ConnectionError`` (not an
    authentication error), ``TimeoutError``, ``BusyLoadingError``, ``ReadOnlyError``
    (a failover), ``TryAgainError`` and ``ClusterDownError``, and for the operating
    system's refused, reset, aborted or broken connections. Exceptions that wrap
    another (``raise ... from exc``, an exception raised while handling one, unless
    ``from None`` replaced it) and exception groups are searched: one transient
    cause makes the whole transient.

    A plain ``TimeoutError`` (``asyncio.timeout``) is *not* transient: a turn or a
    tool that ran out of time did so on its own.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _is_transient_itself(current):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)
    return False


def _is_transient_itself(exc: BaseException) -> bool:
    """Whether ``exc`` itself (not its causes) is an outage of PostgreSQL or Redis."""
    if isinstance(exc, psycopg.Error):
        return _is_transient_psycopg(exc)
    if _is_transient_redis(exc):
        return True
    # OSError on connect or on a dropped socket: refused, reset, aborted, broken pipe.
    return isinstance(exc, ConnectionError)


def _is_transient_psycopg(exc: psycopg.Error) -> bool:
    sqlstate = exc.sqlstate
    if sqlstate is None:
        # Raised by the client, not the server: a refused or lost connection, a closed
        # connection, a pool that could not give one in time (all OperationalError);
        # InterfaceError and the rest are programming errors.
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES


def _is_transient_redis(exc: BaseException) -> bool:
    errors = sys.modules.get("redis.exceptions")  # without redis loaded, no redis error exists
    if errors is None:
        return False
    if isinstance(exc, errors.AuthenticationError | errors.AuthorizationError):
        return False  # wrong credentials: a configuration error, not an outage
    transient = (
        errors.ConnectionError,  # also BusyLoadingError (a restarting server loading its data)
        errors.TimeoutError,
        errors.ReadOnlyError,  # a replica promoted or demoted under us
        errors.TryAgainError,
        errors.ClusterDownError,  # also MasterDownError
    )
    return isinstance(exc, transient)


__all__ = ["TRANSIENT_SQLSTATES", "is_transient"]
