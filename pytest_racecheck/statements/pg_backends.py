"""The PostgreSQL backends a racer talks to, reported by every PostgreSQL driver's hooks.

The controller's probes ask the server which racers wait on a lock, by backend pid; a racer
that is still making a connection waits for its server, not for a racer. So each driver's hooks
announce a connection as it starts (:func:`connecting`) and report its backend pid as soon as
it exists, or at its first statement for a connection made otherwise (:func:`report`), each pid
once.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

from pytest_racecheck.instrument import points
from pytest_racecheck.statements.naming import connection_number, kept_sql, where
from pytest_racecheck.wire.messages import Statement

_on_backend_pid: Callable[[int], None] | None = None
_on_connect: Callable[[], None] | None = None
_seen_pids: set[int] = set()


def configure(
    on_backend_pid: Callable[[int], None] | None, on_connect: Callable[[], None] | None
) -> None:
    """Set the callbacks (``None`` for none); pids reported before are forgotten."""
    global _on_backend_pid, _on_connect
    _on_backend_pid, _on_connect = on_backend_pid, on_connect
    _seen_pids.clear()


def connecting() -> bool:
    """A connection starts to be made: tell the controller, in a race. Whether it was told (the
    caller then reports the new backend's pid)."""
    announce = _on_connect
    if points._racer is None or announce is None:
        return False
    announce()
    return True


def report(pid: int | None) -> None:
    """Tell the controller about backend ``pid`` (0 or None: no backend), once per pid."""
    callback = _on_backend_pid
    if callback is not None and pid and pid not in _seen_pids:
        _seen_pids.add(pid)
        callback(pid)


def report_of(backend_pid: Callable[[], object]) -> None:
    """:func:`report` the pid ``backend_pid()`` gives (a closed connection's: none)."""
    try:
        pid = int(backend_pid())  # type: ignore[call-overload]
    except Exception:
        pid = 0
    report(pid)


def statement(
    backend_pid: Callable[[], object],
    short: str,
    frame: FrameType | None,
    sql: str | None = None,
    conn: object = None,
) -> None:
    """A statement about to go out on a backend: report the backend, then reach the point
    (``sql``, the statement's text, and ``conn``, its connection, are for the reports)."""
    report_of(backend_pid)
    number = connection_number(conn) if conn is not None else 0
    points.statement(
        f"{short} @ {where(frame)}",
        kept_sql(sql or short),
        number,
        Statement(sql or short, "postgres", transaction_state(conn)),
    )


def transaction_state(conn: object) -> str:
    """For explore's search: 'begin' when the statement opens a transaction implicitly (not
    autocommit, idle: psycopg 2 and 3), 'open' inside one, '' outside one in autocommit."""
    try:
        in_transaction = getattr(conn, "is_in_transaction", None)  # asyncpg: always autocommit
        if in_transaction is not None:
            return "open" if in_transaction() else ""
        pgconn = getattr(conn, "pgconn", None)
        status = pgconn.transaction_status if pgconn else conn.get_transaction_status()  # type: ignore[attr-defined]
        if status == 0:  # IDLE in both drivers
            return "" if conn.autocommit else "begin"  # type: ignore[attr-defined]
    except Exception:
        return ""
    return "open"
