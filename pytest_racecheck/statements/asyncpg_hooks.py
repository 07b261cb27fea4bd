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
from types import FrameType
from typing import Any

from pytest_racecheck import points
from pytest_racecheck.statements import pg_backends
from pytest_racecheck.statements.naming import short_sql, where

_active = False
_patches: list[tuple[Any, str, object]] = []  # (class or module, name, original)

_CONNECTION_QUERY = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")
_CONNECTION_COPY_QUERY = ("copy_from_query",)
_CONNECTION_COPY_TABLE = ("copy_from_table", "copy_to_table", "copy_records_to_table")
_STATEMENT = ("fetch", "fetchval", "fetchrow", "fetchmany", "executemany")
_INTERNAL = "asyncpg.connection"  # asyncpg's connection calling its own methods


def _report_backend_pid(conn: Any) -> None:
    try:
        pid = int(conn.get_server_pid())
    except Exception:
        pid = 0
    pg_backends.report(pid)


def _point(conn: Any, short: str, frame: FrameType | None) -> None:
    _report_backend_pid(conn)
    points.statement(f"{short} @ {where(frame)}")


def _wrap(original: Any, statement: Any) -> Any:
    """``original`` (a coroutine function) with a point first, when awaited in a race;
    ``statement(self, args, kwargs)`` gives the connection and the point's short SQL."""

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if points._racer is not None and _active:
            caller = sys._getframe(1)
            if caller.f_globals.get("__name__") != _INTERNAL:
                conn, short = statement(self, args, kwargs)
                _point(conn, short or "SQL", caller)
        return await original(self, *args, **kwargs)

    functools.update_wrapper(method, original)
    return method


def _sql(args: tuple[Any, ...], kwargs: dict[str, Any], key: str) -> str:
    query = args[0] if args else kwargs.get(key, "")
    return short_sql(query) if isinstance(query, str) else ""


def _connection_query(self: Any, args: Any, kwargs: Any) -> tuple[Any, str]:
    return self, _sql(args, kwargs, "query") or _sql(args, kwargs, "command")


def _connection_copy(self: Any, args: Any, kwargs: Any) -> tuple[Any, str]:
    table = args[0] if args else kwargs.get("table_name", "")
    return self, f"COPY {table}"


def _statement(self: Any, args: Any, kwargs: Any) -> tuple[Any, str]:
    query = getattr(self, "_query", "")
    return self._connection, short_sql(query) if isinstance(query, str) else ""


def _patch(owner: Any, attr: str, replacement: Any) -> None:
    _patches.append((owner, attr, owner.__dict__[attr]))
    setattr(owner, attr, replacement)


def _patch_connect(module: Any, original: Any) -> None:
    async def connect(*args: Any, **kwargs: Any) -> Any:
        announced = _active and pg_backends.connecting()
        conn = await original(*args, **kwargs)
        if announced:
            _report_backend_pid(conn)
        return conn

    functools.update_wrapper(connect, original)
    _patch(module, "connect", connect)


def install() -> None:
    """Patch asyncpg's classes and ``connect`` (once), if asyncpg is there."""
    global _active
    if _active:
        return
    try:
        import asyncpg
        import asyncpg.connection
        import asyncpg.prepared_stmt
    except ImportError:
        return
    connection = asyncpg.connection.Connection
    kinds = (
        (_CONNECTION_QUERY + _CONNECTION_COPY_QUERY, _connection_query),
        (_CONNECTION_COPY_TABLE, _connection_copy),
    )
    for names, statement in kinds:
        for name in names:
            if name in connection.__dict__:
                _patch(connection, name, _wrap(connection.__dict__[name], statement))
    prepared = asyncpg.prepared_stmt.PreparedStatement
    for name in _STATEMENT:
        if name in prepared.__dict__:
            _patch(prepared, name, _wrap(prepared.__dict__[name], _statement))
    original = asyncpg.connection.connect
    _patch_connect(asyncpg.connection, original)
    if asyncpg.__dict__.get("connect") is original:
        _patches.append((asyncpg, "connect", original))
        asyncpg.connect = asyncpg.connection.connect
    _active = True


def uninstall() -> None:
    global _active
    _active = False
    while _patches:
        owner, attr, original = _patches.pop()
        setattr(owner, attr, original)
