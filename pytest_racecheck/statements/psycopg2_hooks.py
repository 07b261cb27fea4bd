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
:func:`install` or by a ``connect`` imported by name before it. psycopg2 is patched when it
is first imported, so a racer that does not use it does not import it.

``connect`` announces itself (``on_connect``) and reports the new backend's pid
(``info.backend_pid``, no query) as soon as the connection exists.
"""

from __future__ import annotations

import sys
from types import FrameType, ModuleType
from typing import Any

from pytest_racecheck.instrument import points
from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.statements import pg_backends
from pytest_racecheck.statements.naming import query_text
from pytest_racecheck.statements.patching import Patches, forget, traced_subclass, when_imported

_active = False
_original_connect: Any = None
_patches = Patches()
_connection_classes: dict[type, type] = {}
_cursor_classes: dict[type, type] = {}


def _point(conn: Any, short: str, frame: FrameType | None, sql: str | None = None) -> None:
    pg_backends.statement(lambda: conn.info.backend_pid, short, frame, sql, conn)


def _in_race() -> bool:
    return points._racer is not None and _active


def _sql_of(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    text = query_text(args[0] if args else kwargs.get("query", kwargs.get("sql")), conn)
    return short_sql(text) or "SQL", text


def _procedure_of(
    conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, str | None]:
    name = args[0] if args else kwargs.get("procname")
    params = args[1] if len(args) > 1 else kwargs.get("parameters") or ()
    # What callproc sends: a call of the function, which explore must read as one (a bare
    # name would read as a column, and commute with everything).
    return f"SELECT {name}({', '.join(['%s'] * len(params))})", None


def _copy_of(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    return f"COPY {args[1] if len(args) > 1 else kwargs.get('table')}", None


# A cursor's methods that send a statement, each with its point's short SQL and its text.
_CURSOR_POINTS = {
    "execute": _sql_of,
    "executemany": _sql_of,
    "copy_expert": _sql_of,
    "callproc": _procedure_of,
    "copy_from": _copy_of,
    "copy_to": _copy_of,
}


def _traced_cursor(factory: type) -> type:
    def traced(name: str, short_of: Any) -> Any:
        original = getattr(factory, name)

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _in_race():
                conn = self.connection
                short, text = short_of(conn, args, kwargs)
                _point(conn, short, sys._getframe(1), text)
            return original(self, *args, **kwargs)

        method.__name__ = method.__qualname__ = name
        return method

    methods = {name: traced(name, short_of) for name, short_of in _CURSOR_POINTS.items()}
    return type(factory.__name__, (factory,), methods)


def _cursor_class(factory: Any) -> Any:
    """A subclass of a cursor class whose statements are points; a traced one as it is."""
    import psycopg2.extensions

    return traced_subclass(factory, psycopg2.extensions.cursor, _cursor_classes, _traced_cursor)


def _traced_connection(factory: type) -> type:
    import psycopg2.extensions

    idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE

    def end(conn: Any, short: str, frame: FrameType) -> None:
        if conn.closed or conn.info.transaction_status == idle:
            return  # nothing is sent
        _point(conn, short, frame)

    class TracedConnection(factory):  # type: ignore[valid-type,misc]
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

    return TracedConnection


def _connection_class(factory: Any) -> Any:
    """A subclass of the connection class whose cursors are traced and whose ends are points."""
    import psycopg2.extensions

    return traced_subclass(
        factory, psycopg2.extensions.connection, _connection_classes, _traced_connection
    )


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
        pg_backends.report_of(lambda: conn.info.backend_pid)
    return conn


def _patch(psycopg2: ModuleType) -> None:
    global _original_connect
    _original_connect = psycopg2.connect
    _patches.replace(psycopg2, "connect", _traced_connect)


def install() -> None:
    """Make every new psycopg2 connection through the traced classes, from the moment psycopg2
    is imported (now, if it is)."""
    global _active
    if not _active:
        _active = True
        when_imported("psycopg2", _patch)


def uninstall() -> None:
    global _active
    _active = False
    forget("psycopg2")
    _patches.restore()
