"""Every sqlite3 statement as a point.

``sqlite3.connect`` and ``dbapi2.connect`` are replaced by a wrapper that opens the connection
through a subclass of the requested ``factory`` and installs a trace callback on it. SQLite
calls it when a statement starts running, for every statement it really runs: the implicit
``BEGIN`` of the module's legacy transaction mode, ``COMMIT`` / ``ROLLBACK`` from ``commit()``,
``rollback()`` and the context manager, each statement of ``executescript`` and each row of
``executemany``. Checked on Python 3.11 with SQLite 3.40
(``test_trace_callback_runs_before_the_statement_takes_its_lock``): while one connection holds
the write lock, another connection's ``BEGIN IMMEDIATE``, ``INSERT`` or ``UPDATE`` reaches its
callback at once (it is not waiting in the busy handler), and while it sits in the callback a
third connection can take the write lock: the callback comes before the statement takes any
lock, in rollback-journal and WAL mode alike. So a racer held at a statement's point holds only
the locks of the statements before it.

Trigger bodies: SQLite reports each trigger program and each statement in it too. Python 3.10
passes them as comment text (``-- TRIGGER name``), which is skipped; Python 3.11 and later pass
the *outer* statement's text again, so a callback repeating the previous text on the same
connection, with no ``execute`` call in between, is taken as a trigger and makes no point. The
price: consecutive rows of one ``executemany`` whose parameters are identical make one point,
not one each.

An exception raised in a trace callback is swallowed by sqlite3 (the statement runs anyway), so
an error of ``point()`` there cannot stop the statement. A user's own ``set_trace_callback``
keeps working: the connection subclass chains it after the point. Connections opened before
:func:`install`, or by a ``connect`` imported by name before it (``from sqlite3 import
connect``), are not covered.
"""

from __future__ import annotations

import sqlite3
import sqlite3.dbapi2 as dbapi2
import sys
import threading
from collections.abc import Callable
from typing import Any

from pytest_racecheck.instrument import points
from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.statements.naming import connection_number, kept_sql, where
from pytest_racecheck.statements.patching import traced_subclass
from pytest_racecheck.wire.messages import Statement

# -- sqlite3 ------------------------------------------------------------------------------

_active = False
_original_connect: Any = None
_original_dbapi2_connect: Any = None
_connection_classes: dict[type, type] = {}
_cursor_classes: dict[type, type] = {}
_STATE = "_racecheck_statements"
_relay = threading.local()


def relay_points(reach: Callable[[str, str, int], None] | None) -> None:
    """On this thread, hand each traced statement to ``reach(short, sql, conn)`` (its short
    SQL, its text as the reports keep it, its connection's number) instead of making its point
    here (``None``: make it here again). aiosqlite runs sqlite3 on a thread of its
    own; its statements' points belong to the event loop's thread, the racer's own."""
    _relay.reach = reach


class _TraceState:
    """Per connection: the user's trace callback and the text of the last traced statement."""

    __slots__ = ("conn", "last", "trace", "user")

    def __init__(self, conn: int = 0) -> None:
        self.user: Callable[[str], object] | None = None
        self.last: str | None = None
        self.conn = conn
        state = self

        def trace(sql: str) -> None:
            # A repeat with no execute() call between is a trigger (see the module's doc).
            if points._racer is not None and _active and sql != state.last:
                state.last = sql
                short = short_sql(sql)
                if short:  # '-- TRIGGER name' (Python 3.10) and other comment-only text
                    reach = getattr(_relay, "reach", None)
                    if reach is None:
                        points.statement(
                            f"{short} @ {where(sys._getframe(1))}",
                            kept_sql(sql),
                            state.conn,
                            Statement(sql, "sqlite"),
                        )
                    else:
                        reach(short, kept_sql(sql), state.conn)
            user = state.user
            if user is not None:
                user(sql)

        self.trace = trace


def _state_of(conn: sqlite3.Connection) -> _TraceState:
    state = conn.__dict__.get(_STATE) if hasattr(conn, "__dict__") else None
    if state is None:
        state = _TraceState(connection_number(conn))
        if hasattr(conn, "__dict__"):
            conn.__dict__[_STATE] = state
    return state


def _new_call(conn: object) -> None:
    """An execute call starts: the next traced text is a new statement even if it repeats."""
    state = getattr(conn, _STATE, None)
    if state is not None:
        state.last = None


def _traced_cursor(factory: type) -> type:
    class TracedCursor(factory):  # type: ignore[valid-type,misc]
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            if points._racer is not None:
                _new_call(self.connection)
            return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            if points._racer is not None:
                _new_call(self.connection)
            return super().executemany(*args, **kwargs)

        def executescript(self, *args: Any, **kwargs: Any) -> Any:
            if points._racer is not None:
                _new_call(self.connection)
            return super().executescript(*args, **kwargs)

    return TracedCursor


def _cursor_class(factory: Any) -> Any:
    """A subclass of a cursor class whose execute calls mark a new call; other factories as is."""
    return traced_subclass(factory, sqlite3.Cursor, _cursor_classes, _traced_cursor)


def _traced_connection(factory: type) -> type:
    own_cursor = factory.cursor is sqlite3.Connection.cursor

    class TracedConnection(factory):  # type: ignore[valid-type,misc]
        def set_trace_callback(self, trace_callback: Callable[[str], object] | None) -> None:
            state = _state_of(self)
            state.user = trace_callback
            sqlite3.Connection.set_trace_callback(self, state.trace)

        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            if args:
                args = (_cursor_class(args[0]), *args[1:])
            elif "factory" in kwargs:
                kwargs["factory"] = _cursor_class(kwargs["factory"])
            elif own_cursor:
                kwargs["factory"] = _cursor_class(sqlite3.Cursor)
            return super().cursor(*args, **kwargs)

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            if points._racer is not None:
                _new_call(self)
            return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            if points._racer is not None:
                _new_call(self)
            return super().executemany(*args, **kwargs)

        def executescript(self, *args: Any, **kwargs: Any) -> Any:
            if points._racer is not None:
                _new_call(self)
            return super().executescript(*args, **kwargs)

    return TracedConnection


def _connection_class(factory: Any) -> Any:
    """A subclass of the connection class that keeps a user's trace callback and marks calls."""
    return traced_subclass(factory, sqlite3.Connection, _connection_classes, _traced_connection)


_FACTORY_POSITION = 5  # connect(database, timeout, detect_types, isolation_level, cst, factory)


def _traced_connect(*args: Any, **kwargs: Any) -> Any:
    if len(args) > _FACTORY_POSITION:
        args = (
            *args[:_FACTORY_POSITION],
            _connection_class(args[_FACTORY_POSITION]),
            *args[_FACTORY_POSITION + 1 :],
        )
    else:
        kwargs["factory"] = _connection_class(kwargs.get("factory", sqlite3.Connection))
    conn = _original_connect(*args, **kwargs)
    if isinstance(conn, sqlite3.Connection):
        state = _state_of(conn)
        sqlite3.Connection.set_trace_callback(conn, state.trace)
    return conn


def install() -> None:
    """Open every new sqlite3 connection through the traced classes."""
    global _active, _original_connect, _original_dbapi2_connect
    if _active:
        return
    _original_connect = sqlite3.connect
    _original_dbapi2_connect = dbapi2.connect
    sqlite3.connect = dbapi2.connect = _traced_connect  # type: ignore[assignment]
    _active = True


def uninstall() -> None:
    global _active
    if not _active:
        return
    _active = False
    sqlite3.connect = _original_connect
    dbapi2.connect = _original_dbapi2_connect
