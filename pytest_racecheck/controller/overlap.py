"""Holding a joint step's statements inside the database, so that their overlap is not timing.

When the explorer releases several racers together, their statements run at once, and whether
two ``INSERT ... SELECT ... WHERE NOT EXISTS`` both take their snapshot before either writes is
up to timing. On PostgreSQL a statement that inserts into a table with a sequence-backed column
(``serial``, ``identity``, a ``nextval()`` default) calls ``nextval()`` after its snapshot and its
``WHERE`` have been evaluated, just before it writes the row; ``nextval()`` must lock the
sequence. A third connection that holds a conflicting lock on every sequence (``ALTER SEQUENCE
... RESTART`` in a transaction it rolls back: nothing changes) stops each released statement at
exactly that place. Once every racer of the step is still (held there, or past it), the hold is
let go: the held statements write, each after both snapshots were taken. That overlap is then
deterministic. (Measured first: /work notes, "single-statement overlap"; docs/explore.md.)

The hold also locks every row of every table (``SELECT ... FOR UPDATE``): an ``UPDATE`` or
``DELETE`` whose row is picked by a subquery (a writable CTE's claim, a function's body) has taken
its snapshot and evaluated its ``WHERE`` when it must wait for the row's lock, which is again
exactly where the race lives (measured first: shared notes, "held statements"). Only steps that
release statements without a locking clause of their own are ever held (a ``FOR UPDATE SKIP
LOCKED`` conflicts with everything and is never released together with another), so the
locked rows change no statement's answer, only when it writes.

A statement that waits on neither (an ``INSERT`` into a table without a sequence, with no
foreign key) is not held: such a step stays timing-dependent, and the explorer says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LOCK_TIMEOUT_MS = 50
"""How long the hold waits for a sequence lock: a racer's open transaction that used the
sequence holds a lock on it until it ends, and the controller must never wait on a racer."""

_TABLES = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'"
)

_SEQUENCES = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'"
)


class SequenceHold:
    """Holds every ``nextval()`` and every row lock of one PostgreSQL database while a joint
    step runs.

    ``connect`` opens a connection to the racers' database (psycopg 3, any mode); the hold
    keeps one of its own for the race and closes it with :meth:`close`.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._holding = False

    def hold(self) -> bool:
        """Take the hold; False when there is nothing to hold or a racer's transaction holds
        a sequence (then nothing is held and the step is left to timing)."""
        if self._conn is None:
            self._conn = self._connect()
            self._conn.autocommit = False
        conn = self._conn
        try:
            sequences = [row[0] for row in conn.execute(_SEQUENCES).fetchall()]
            tables = [row[0] for row in conn.execute(_TABLES).fetchall()]
            if not sequences and not tables:
                conn.rollback()
                return False
            conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            for sequence in sequences:
                conn.execute(f"ALTER SEQUENCE {sequence} RESTART")
            for table in tables:
                # rows a racer's open transaction locked already hold its rivals
                conn.execute(f"SELECT 1 FROM {table} FOR UPDATE SKIP LOCKED")
        except Exception:
            conn.rollback()
            return False
        self._holding = True
        return True

    def release(self) -> set[int]:
        """Let go; return the backend pids that were waiting on the hold (held mid-statement)."""
        if not self._holding:
            return set()
        self._holding = False
        conn = self._conn
        rows: list[Any] = []
        try:
            rows = conn.execute(
                "SELECT pid, pg_blocking_pids(pid), pg_backend_pid() FROM pg_stat_activity"
                " WHERE cardinality(pg_blocking_pids(pid)) > 0"
            ).fetchall()
        finally:
            conn.rollback()  # a connection that broke is closed by close(): nothing stays held
        return _held_by(rows[0][2] if rows else 0, {pid: set(by) for pid, by, _ in rows})

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            finally:
                self._conn.close()
                self._conn = None
                self._holding = False


def _held_by(hold: int, waits_for: dict[int, set[int]]) -> set[int]:
    """The backends that wait on the hold, directly or behind another waiter: a second
    statement that wants a row lock queues behind the first waiter, not behind the holder."""
    held: set[int] = set()
    frontier = {hold}
    while frontier:
        frontier = {pid for pid, by in waits_for.items() if by & frontier and pid not in held}
        held |= frontier
    return held
