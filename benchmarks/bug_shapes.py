"""Bug shapes that nobody wrote the explorer for, to measure how deep its search reaches.

Each is a racer function over a :class:`~pytest_racecheck.backends.base.Database` that returns
``runs.CREATED`` or ``runs.REFUSED``, like the strategies of :mod:`pytest_racecheck.runs`, and
breaks the same invariant (at most one active run). They live with the benchmarks, not in the
product: they are measuring sticks, not teaching material.

- :func:`reads_then_check_then_insert`: the naive check-then-insert behind ``READS`` reads of
  a table that nobody writes (one ``SELECT`` per key, as an ORM's lazy loading does). The bug
  needs one preemption; the reads only make the round longer.
- :func:`guard_verified_too_late`: a guard row that every starter checks, writes, and
  verifies; the bug needs two preemptions: racer 1 sees the guard free, racer 2 sees it free
  too, writes it, checks the runs and verifies its guard; racer 1 then overwrites the guard
  and goes all the way through (creates a run, releases); racer 2, whose verification came
  too early to see the overwrite, creates a second run.
"""

from __future__ import annotations

import os
from typing import Any

from pytest_racecheck import runs
from pytest_racecheck.backends.base import Database

READS = 25
"""How many reads of the settings table come before the check."""

_SETTINGS = "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def create_schema(db: Database) -> None:
    """The schema of :mod:`pytest_racecheck.runs`, plus a settings table with ``READS`` rows."""
    runs.create_schema(db)
    db.execute(_SETTINGS)
    db.execute("DELETE FROM settings")
    for i in range(READS):
        db.execute(_sql(db, "INSERT INTO settings (key, value) VALUES (?, ?)"), (f"k{i}", str(i)))


def _sql(db: Database, sql: str) -> str:
    """One spelling of each statement: ``?`` placeholders, ``%s`` for psycopg."""
    return sql if db.backend == "sqlite" else sql.replace("?", "%s")


def _connection(db: Database) -> Any:
    """This process's connection, in autocommit, outside any transaction."""
    conn = db.shared_connection()
    if db.backend == "sqlite":
        conn.isolation_level = None
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return conn
    if conn.closed or conn.broken:
        db.close()
        conn = db.shared_connection()
    if conn.info.transaction_status != 0:
        conn.rollback()
    conn.autocommit = True
    return conn


def reads_then_check_then_insert(db: Database) -> runs.RunOutcome:
    """BROKEN: ``READS`` harmless reads, then the naive check-then-insert (``runs.naive``)."""
    conn = _connection(db)
    read = _sql(db, "SELECT value FROM settings WHERE key = ?")
    for i in range(READS):
        conn.execute(read, (f"k{i}",)).fetchone()
    return runs.naive(db)


def guard_verified_too_late(db: Database) -> runs.RunOutcome:
    """BROKEN: check the guard row, write it, check the runs, verify the guard, create, release.

    Each step is its own autocommit statement. The verification is the flaw: it proves the
    guard was ours at that moment, not when the run is created.
    """
    me = f"pid {os.getpid()}"
    conn = _connection(db)

    def one(sql: str, *params: Any) -> Any:
        return conn.execute(_sql(db, sql), params).fetchone()

    holder = one("SELECT holder FROM run_guard WHERE id = 1")[0]
    if holder is not None and holder != me:
        return runs.REFUSED
    conn.execute(_sql(db, "UPDATE run_guard SET holder = ? WHERE id = 1"), (me,))
    if one("SELECT 1 FROM runs WHERE status = 'running' LIMIT 1") is not None:
        return runs.REFUSED
    if one("SELECT holder FROM run_guard WHERE id = 1")[0] != me:
        return runs.REFUSED
    conn.execute(_sql(db, "INSERT INTO runs (status, holder) VALUES ('running', ?)"), (me,))
    conn.execute(_sql(db, "UPDATE run_guard SET holder = NULL WHERE id = 1 AND holder = ?"), (me,))
    return runs.CREATED
