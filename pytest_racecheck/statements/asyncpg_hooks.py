"""Every asyncpg statement as a point (and so SQLAlchemy's on its asyncpg dialect).

asyncpg's ``Connection`` and ``PreparedStatement`` are Python classes: their statement methods
are patched on the class, so subclasses, pool connections (whose proxies look the method up on
the class at each call) and connections made before :func:`install` are covered alike.

Points: ``Connection.execute`` / ``executemany`` / ``fetch`` / ``fetchval`` / ``fetchrow`` /
``fetchmany`` / ``copy_from_query`` / ``copy_from_table`` / ``copy_to_table`` /
``copy_records_to_table``, and ``PreparedStatement.fetch`` / ``fetchval`` / ``fetchrow`` /
``fetchmany`` / ``executemany`` (SQLAlchemy prepares each statement, then fetches). A
transaction's ``BEGIN``, ``SAVEPOINT``, ``COMMIT`` and ``ROLLBACK`` go through
``Connection.execute``: points named for the line of ``async with conn.transaction()`` (or of
``start()``, ``commit()``). Calls asyncpg makes on itself from within ``Connection`` (type
introspection, the reset of a connection given back to a pool) are not points: the user's code
did not send them. Not covered: ``Connection.cursor()`` iteration and ``Connection.prepare``
alone (a parse takes no snapshot). As for psycopg's async API, the point runs when the call is
awaited and blocks the racer's event loop while it is held.

``asyncpg.connect`` (and ``asyncpg.connection.connect``) announce a connection as it starts
and report its backend pid (``get_server_pid()``, no query) as soon as it exists; a connection
made otherwise reports its pid at its first point.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any

from pytest_racecheck.instrument import points
from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.statements import pg_backends
from pytest_racecheck.statements.patching import Patches, forget, when_imported

_active = False
_patches = Patches()

_CONNECTION_QUERY = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")
_CONNECTION_COPY_QUERY = ("copy_from_query",)
_CONNECTION_COPY_TABLE = ("copy_from_table", "copy_to_table", "copy_records_to_table")
_STATEMENT = ("fetch", "fetchval", "fetchrow", "fetchmany", "executemany")
_INTERNAL = "asyncpg.connection"  # asyncpg's connection calling its own methods


def _wrap(original: Any, statement: Any) -> Any:
    """``original`` (a coroutine function) with a point first, when awaited in a race;
    ``statement(self, args, kwargs)`` gives the connection and the point's short SQL."""

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if points._racer is not None and _active:
            caller = sys._getframe(1)
            if caller.f_globals.get("__name__") != _INTERNAL:
                conn, short, text = statement(self, args, kwargs)
                pg_backends.statement(conn.get_server_pid, short or "SQL", caller, text, conn)
        return await original(self, *args, **kwargs)

    functools.update_wrapper(method, original)
    return method


# Each kind of call: its connection, its point's short SQL and the statement's text.
_Statement = tuple[Any, str, "str | None"]


def _connection_query(self: Any, args: Any, kwargs: Any) -> _Statement:
    query = args[0] if args else kwargs.get("query", kwargs.get("command"))
    text = query if isinstance(query, str) else None
    return self, short_sql(text or ""), text


def _connection_copy(self: Any, args: Any, kwargs: Any) -> _Statement:
    table = args[0] if args else kwargs.get("table_name", "")
    return self, f"COPY {table}", None


def _statement(self: Any, args: Any, kwargs: Any) -> _Statement:
    query = getattr(self, "_query", None)
    text = query if isinstance(query, str) else None
    return self._connection, short_sql(text or ""), text


def _patch_connect(module: Any, original: Any) -> None:
    async def connect(*args: Any, **kwargs: Any) -> Any:
        announced = _active and pg_backends.connecting()
        conn = await original(*args, **kwargs)
        if announced:
            pg_backends.report_of(conn.get_server_pid)
        return conn

    functools.update_wrapper(connect, original)
    _patches.replace(module, "connect", connect)


def _patch(asyncpg: ModuleType) -> None:
    import asyncpg.connection
    import asyncpg.prepared_stmt

    connection = asyncpg.connection.Connection
    kinds = (
        (_CONNECTION_QUERY + _CONNECTION_COPY_QUERY, _connection_query),
        (_CONNECTION_COPY_TABLE, _connection_copy),
    )
    for names, statement in kinds:
        for name in names:
            if name in connection.__dict__:
                _patches.replace(connection, name, _wrap(connection.__dict__[name], statement))
    prepared = asyncpg.prepared_stmt.PreparedStatement
    for name in _STATEMENT:
        if name in prepared.__dict__:
            _patches.replace(prepared, name, _wrap(prepared.__dict__[name], _statement))
    original = asyncpg.connection.connect
    _patch_connect(asyncpg.connection, original)
    if asyncpg.__dict__.get("connect") is original:
        _patches.replace(asyncpg, "connect", asyncpg.connection.connect)


def install() -> None:
    """Patch asyncpg's classes and ``connect`` when asyncpg is imported (now, if it is)."""
    global _active
    if not _active:
        _active = True
        when_imported("asyncpg", _patch)


def uninstall() -> None:
    global _active
    _active = False
    forget("asyncpg")
    _patches.restore()
