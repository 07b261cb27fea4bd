"""What every strategy of :mod:`pytest_racecheck.runs` shares: outcomes, schema, connections.

Each backend has its own helpers with its SQL spelled out; the strategies in
:mod:`pytest_racecheck.runs` (correct) and :mod:`pytest_racecheck.runs.broken` (broken on
purpose, for teaching) are built from them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal

from pytest_racecheck.backends.base import Database

if TYPE_CHECKING:
    import psycopg

RunOutcome = Literal["created", "refused"]
CREATED: Final = "created"
REFUSED: Final = "refused"

AForm = Literal["catch", "upsert"]
BForm = Literal["immediate", "lock_table", "advisory", "serializable"]

#: The advisory lock key of ``B(form="advisory")``, hashed by the database (``hashtext``) so
#: every process and every client library derives the same key. Python's ``hash()`` would not.
ADVISORY_LOCK_NAME: Final = "pytest_racecheck.runs:start_run"

#: How many times ``B(form="serializable")`` runs its transaction before giving up.
SERIALIZABLE_ATTEMPTS: Final = 50

#: The lease that ``lease`` and ``lease_as_first_written`` take by default.
DEFAULT_LEASE: Final = "start_run"


class RunAlreadyActive(Exception):
    """A run is already active. The strategies turn it into :data:`REFUSED`."""


# --- schema and helpers for tests ------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    holder TEXT
);
CREATE TABLE IF NOT EXISTS run_guard (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    touched_at TEXT
);
INSERT INTO run_guard (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    holder TEXT,
    acquired_at REAL NOT NULL  -- seconds since the epoch, from the database's clock
);
"""

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id BIGSERIAL PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    holder TEXT
);
CREATE TABLE IF NOT EXISTS run_guard (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    touched_at TIMESTAMPTZ
);
INSERT INTO run_guard (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    holder TEXT,
    acquired_at TIMESTAMPTZ NOT NULL
);
"""

# Strategy A's partial unique index: at most one row with status 'running'.
_UNIQUE_ACTIVE = (
    "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs (status) WHERE status = 'running'"
)
_NO_UNIQUE_ACTIVE = "DROP INDEX IF EXISTS runs_one_active"

# SQLite's clock as seconds since the epoch (julianday is portable to old SQLite versions;
# unixepoch('subsec') needs 3.42).
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def create_schema(db: Database, *, unique_active: bool = False) -> None:
    """Create the ``runs``, ``run_guard`` and ``leases`` tables (idempotent).

    The partial unique index ``runs_one_active`` exists afterwards exactly when
    ``unique_active`` is true: strategy ``A`` needs it, and ``naive`` must be free to fail,
    so it is never there by accident.
    """
    schema = _SQLITE_SCHEMA if _backend(db) == "sqlite" else _POSTGRES_SCHEMA
    index = _UNIQUE_ACTIVE if unique_active else _NO_UNIQUE_ACTIVE
    db.executescript(f"{schema}\n{index};\n")


def reset(db: Database) -> None:
    """Start a round afresh: no runs, no leases; the guard row stays (``C`` needs it)."""
    guard = "INSERT INTO run_guard (id) VALUES (1) ON CONFLICT (id) DO NOTHING"
    db.executescript(
        "DELETE FROM runs;\n"
        "DELETE FROM leases;\n"
        "UPDATE run_guard SET holder = NULL, touched_at = NULL;\n"
        f"{guard};\n"
    )


def active_count(db: Database) -> int:
    """How many runs are active: the invariant is that this never exceeds one."""
    return int(db.scalar("SELECT count(*) FROM runs WHERE status = 'running'") or 0)


def _backend(db: Database) -> Literal["sqlite", "postgres"]:
    backend = getattr(db, "backend", None)
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"pytest_racecheck.runs supports sqlite and postgres, not {backend!r}")
    return backend


def _holder() -> str:
    """Who wrote a row: the process id is what tells racers apart in a failure report."""
    return f"pid {os.getpid()}"


def _outcome(attempt: Callable[[], object]) -> RunOutcome:
    """Run one attempt; a :class:`RunAlreadyActive` is the clean refusal."""
    try:
        attempt()
    except RunAlreadyActive:
        return REFUSED
    return CREATED


# Each process keeps one connection per database (the handle's shared connection), as a worker
# with a connection pool does: connecting per call would make every round pay for a new
# PostgreSQL backend, and nothing about the race needs a fresh connection. Every strategy leaves
# the connection outside any transaction; the guards below make sure of it.


@contextmanager
def _sqlite(db: Database) -> Iterator[sqlite3.Connection]:
    """This process's connection, outside any transaction."""
    conn: sqlite3.Connection = db.shared_connection()
    # The handle opens with isolation_level=None; insist, because in Python's default mode
    # sqlite3 begins transactions on its own and never puts a SELECT inside one.
    conn.isolation_level = None
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    yield conn


@contextmanager
def _sqlite_transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """``begin`` ... ``COMMIT``, or ``ROLLBACK`` on any error (if SQLite has not already)."""
    conn.execute(begin)
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _postgres(db: Database) -> Iterator[psycopg.Connection[Any]]:
    """This process's autocommit connection, outside any transaction."""
    conn: psycopg.Connection[Any] = db.shared_connection()
    if conn.closed or conn.broken:
        db.close()
        conn = db.shared_connection()
    conn.autocommit = True  # transactions are begun explicitly below
    if conn.info.transaction_status != 0:  # not IDLE: left by an interrupted call
        conn.rollback()
    yield conn


@contextmanager
def _postgres_transaction(
    conn: psycopg.Connection[Any],
    begin: Literal["BEGIN", "BEGIN ISOLATION LEVEL SERIALIZABLE"] = "BEGIN",
) -> Iterator[None]:
    """``begin`` ... ``COMMIT``. After an error PostgreSQL has aborted the transaction: roll
    it back before the connection is used again (the SERIALIZABLE retry reuses it)."""
    conn.execute(begin)
    try:
        yield
    except BaseException:
        if not conn.closed:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_ACTIVE_RUN = "SELECT 1 FROM runs WHERE status = 'running' LIMIT 1"


def _sqlite_active(conn: sqlite3.Connection) -> bool:
    return conn.execute(_ACTIVE_RUN).fetchone() is not None


def _postgres_active(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute(_ACTIVE_RUN).fetchone() is not None


def _sqlite_insert_run(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO runs (status, holder) VALUES ('running', ?)", (_holder(),))


def _postgres_insert_run(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO runs (status, holder) VALUES ('running', %s)", (_holder(),))
