"""Every psycopg2 statement as a point (and so Django's and SQLAlchemy's on psycopg2).

psycopg2's connection and cursor are C types whose methods cannot be patched, but
``psycopg2.connect`` takes a ``connection_factory``, and a connection's cursors come from its
``cursor_factory``: both may be subclasses. ``psycopg2.connect`` is replaced by a wrapper that
makes the connection through a subclass of the requested factory (cached per factory), whose
``cursor()`` hands out a subclass of the requested cursor class. Django and SQLAlchemy call
``Database.connect`` / ``dbapi.connect`` at call time, and ``psycopg2.pool`` calls
``psycopg2.connect``: all are covered.

Points: a cursor's ``execute``, ``executemany``, ``callproc``, ``copy_expert``,
``copy_from`` and ``copy_to`` (so ``psycopg2.extras.execute_values`` / ``execute_batch``,
which call ``execute``, make one point per page), and the connection's ``commit`` /
``rollback`` when a transaction is open (so also ``with conn:``, whose exit calls them). Not
covered, as for psycopg 3: the ``BEGIN`` psycopg2 sends before the first statement of a
transaction (it takes no lock and no snapshot), two-phase commit, and connections made before
:func:`install` or by a ``connect`` imported by name before it.

``connect`` announces itself (``on_connect``) and reports the new backend's pid
(``info.backend_pid``, no query) as soon as the connection exists.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from pytest_racecheck import points
from pytest_racecheck.statements import pg_backends
from pytest_racecheck.statements.naming import connection_number, kept_sql, short_sql, where

_active = False
_original_connect: Any = None
_connection_classes: dict[type, type] = {}
_cursor_classes: dict[type, type] = {}


def _query_text(query: Any, conn: Any) -> str:
    """The SQL text of a psycopg2 query: str, bytes or a ``psycopg2.sql.Composable``."""
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(conn))
        except Exception:
            return "?"
    return str(query)


def _report_backend_pid(conn: Any) -> None:
    try:
        pid = int(conn.info.backend_pid)
    except Exception:
        pid = 0
    pg_backends.report(pid)


def _point(conn: Any, short: str, frame: FrameType | None, sql: str | None = None) -> None:
    _report_backend_pid(conn)
    points.statement(f"{short} @ {where(frame)}", kept_sql(sql or short), connection_number(conn))


def _query_point(cursor: Any, query: Any, frame: FrameType | None) -> None:
    conn = cursor.connection
    text = _query_text(query, conn)
    _point(conn, short_sql(text) or "SQL", frame, text)


def _in_race() -> bool:
    return points._racer is not None and _active


def _cursor_class(factory: Any) -> Any:
    """A subclass of a cursor class whose statements are points; a traced one as it is."""
    import psycopg2.extensions

    if not isinstance(factory, type) or not issubclass(factory, psycopg2.extensions.cursor):
        return factory
    if getattr(factory, "_racecheck_traced", False):
        return factory
    traced = _cursor_classes.get(factory)
    if traced is None:

        class TracedCursor(factory):  # type: ignore[valid-type,misc]
            _racecheck_traced = True

            def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                if _in_race():
                    _query_point(self, query, sys._getframe(1))
                return super().execute(query, *args, **kwargs)

            def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                if _in_race():
                    _query_point(self, query, sys._getframe(1))
                return super().executemany(query, *args, **kwargs)

            def callproc(self, procname: Any, *args: Any, **kwargs: Any) -> Any:
                if _in_race():
                    _point(self.connection, f"SELECT {procname}", sys._getframe(1))
                return super().callproc(procname, *args, **kwargs)

            def copy_expert(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
                if _in_race():
                    _query_point(self, sql, sys._getframe(1))
                return super().copy_expert(sql, *args, **kwargs)

            def copy_from(self, file: Any, table: Any, *args: Any, **kwargs: Any) -> Any:
                if _in_race():
                    _point(self.connection, f"COPY {table}", sys._getframe(1))
                return super().copy_from(file, table, *args, **kwargs)

            def copy_to(self, file: Any, table: Any, *args: Any, **kwargs: Any) -> Any:
                if _in_race():
                    _point(self.connection, f"COPY {table}", sys._getframe(1))
                return super().copy_to(file, table, *args, **kwargs)

        TracedCursor.__name__ = TracedCursor.__qualname__ = factory.__name__
        traced = _cursor_classes[factory] = TracedCursor
    return traced


def _connection_class(factory: Any) -> Any:
    """A subclass of the connection class whose cursors are traced and whose ends are points."""
    import psycopg2.extensions

    if not isinstance(factory, type) or not issubclass(factory, psycopg2.extensions.connection):
        return factory
    if getattr(factory, "_racecheck_traced", False):
        return factory
    traced = _connection_classes.get(factory)
    if traced is None:
        idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE

        def end(conn: Any, short: str, frame: FrameType) -> None:
            if conn.closed or conn.info.transaction_status == idle:
                return  # nothing is sent
            _point(conn, short, frame)

        class TracedConnection(factory):  # type: ignore[valid-type,misc]
            _racecheck_traced = True

            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                # cursor(name=None, cursor_factory=None, scrollable=None, withhold=False)
                default = self.cursor_factory or psycopg2.extensions.cursor
                if len(args) > 1:
                    args = (args[0], _cursor_class(args[1] or default), *args[2:])
                else:
                    requested = kwargs.get("cursor_factory") or default
                    kwargs["cursor_factory"] = _cursor_class(requested)
                return super().cursor(*args, **kwargs)

            def commit(self) -> None:
                if _in_race():
                    end(self, "COMMIT", sys._getframe(1))
                super().commit()

            def rollback(self) -> None:
                if _in_race():
                    end(self, "ROLLBACK", sys._getframe(1))
                super().rollback()

        TracedConnection.__name__ = TracedConnection.__qualname__ = factory.__name__
        traced = _connection_classes[factory] = TracedConnection
    return traced


def _traced_connect(
    dsn: Any = None, connection_factory: Any = None, cursor_factory: Any = None, **kwargs: Any
) -> Any:
    import psycopg2.extensions

    announced = _active and pg_backends.connecting()
    conn = _original_connect(
        dsn,
        connection_factory=_connection_class(connection_factory or psycopg2.extensions.connection),
        cursor_factory=cursor_factory,
        **kwargs,
    )
    if announced:
        _report_backend_pid(conn)
    return conn


def install() -> None:
    """Make every new psycopg2 connection through the traced classes (if psycopg2 is there)."""
    global _active, _original_connect
    if _active:
        return
    try:
        import psycopg2
    except ImportError:
        return
    _original_connect = psycopg2.connect
    psycopg2.connect = _traced_connect
    _active = True


def uninstall() -> None:
    global _active
    if not _active:
        return
    _active = False
    import psycopg2

    psycopg2.connect = _original_connect
