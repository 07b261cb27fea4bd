"""The run manager from the story: at most one active run, kept in SQLite.

``RunManager`` is the original code: its lock is a ``threading.Lock``, which two threads of one
process respect and two processes never see. The three subclasses are the proposed fixes:

- ``RunManagerA``: uniqueness in the schema (a partial unique index on the active status);
- ``RunManagerB``: check and create in one transaction that takes the write lock up front;
- ``RunManagerC``: a guard row that every starter writes first, inside its transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pytest_racecheck import point

SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE TABLE start_guard (id INTEGER PRIMARY KEY CHECK (id = 1), bumps INTEGER NOT NULL);
INSERT INTO start_guard VALUES (1, 0);
"""

UNIQUE_ACTIVE = "CREATE UNIQUE INDEX one_active_run ON runs(status) WHERE status = 'running'"


class RunAlreadyActive(RuntimeError):
    """A run is already active: the caller is refused, cleanly."""


@contextmanager
def database_connection(db_path: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db_path, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    with conn:  # commits on success, rolls back on error
        yield


def get_active_run(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchone()
    return row[0] if row else None


def create_run(conn: sqlite3.Connection) -> int:
    cur = conn.execute("INSERT INTO runs(status) VALUES ('running')")
    assert cur.lastrowid is not None
    return cur.lastrowid


class RunManager:
    """The original: correct for threads, broken for processes."""

    _start_run_lock = threading.Lock()

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path

    def start_run(self) -> int:
        with self._start_run_lock, database_connection(self.db_path) as conn:
            active_run = get_active_run(conn)
            point("checked")
            if active_run is not None:
                raise RunAlreadyActive(f"run {active_run} is already active")
            with transaction(conn):
                return create_run(conn)


class RunManagerA(RunManager):
    """Fix A: the schema allows one active run; the loser's insert fails and becomes a refusal.

    Needs ``UNIQUE_ACTIVE`` in the schema.
    """

    def start_run(self) -> int:
        try:
            return super().start_run()
        except sqlite3.IntegrityError as exc:
            raise RunAlreadyActive("another process created the active run first") from exc


class _LockedStart(RunManager):
    """Check and create in one explicit transaction, opened by ``begin``."""

    begin: tuple[str, ...] = ()

    def start_run(self) -> int:
        # isolation_level=None: Python's sqlite3 begins no transaction on its own, so the
        # statements in ``begin`` are exactly what SQLite sees, and the check runs inside them.
        conn = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
        try:
            for statement in self.begin:
                conn.execute(statement)
            try:
                active_run = get_active_run(conn)
                point("checked")
                if active_run is not None:
                    raise RunAlreadyActive(f"run {active_run} is already active")
                run_id = create_run(conn)
                conn.execute("COMMIT")
                return run_id
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()


class RunManagerB(_LockedStart):
    """Fix B: ``BEGIN IMMEDIATE`` takes SQLite's write lock before the check."""

    begin = ("BEGIN IMMEDIATE",)


class RunManagerC(_LockedStart):
    """Fix C: every starter writes the guard row first, so starters queue on SQLite's lock.

    Writing is what takes the lock on SQLite (there is no SELECT ... FOR UPDATE); a deferred
    transaction that reads first and writes later would fail with SQLITE_BUSY instead of waiting.
    """

    begin = ("BEGIN", "UPDATE start_guard SET bumps = bumps + 1 WHERE id = 1")
