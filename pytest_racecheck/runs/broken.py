"""Strategies that are BROKEN on purpose: the bugs this project exists to catch.

They are here to be raced and fail, in tests that prove the harness catches them, and to be
read next to the correct ones in :mod:`pytest_racecheck.runs`. Never use them in real code.

- :func:`unguarded_check_then_insert`: check, then insert, no protection at all.
- :func:`thread_lock_check_then_insert`: the original bug, a ``threading.Lock`` around the
  check and the insert, which two processes never share.
- :func:`lease_read_then_write`: the lease as it is usually first written: acquire by
  read-then-write (:func:`lease_acquire_read_then_write`), no fence, release by name
  (:func:`lease_release_by_name`).

:mod:`pytest_racecheck.runs` keeps their original names (``naive``, ``in_process_lock``,
``lease_as_first_written``, ``lease_acquire_as_first_written``,
``lease_release_as_first_written``) as aliases.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timezone

from pytest_racecheck.backends.base import Database
from pytest_racecheck.instrument.points import point
from pytest_racecheck.runs._base import (
    DEFAULT_LEASE,
    REFUSED,
    RunAlreadyActive,
    RunOutcome,
    _backend,
    _holder,
    _outcome,
    _postgres,
    _postgres_active,
    _postgres_insert_run,
    _sqlite,
    _sqlite_active,
    _sqlite_insert_run,
)

__all__ = [
    "lease_acquire_read_then_write",
    "lease_read_then_write",
    "lease_release_by_name",
    "thread_lock_check_then_insert",
    "unguarded_check_then_insert",
]

# --- check-then-insert: the original bug ----------------------------------------------------


def unguarded_check_then_insert(db: Database) -> RunOutcome:
    """Check, then insert, with no protection at all: two processes both see "no active run".

    The check is a plain SELECT outside any transaction, as in the original code.
    """
    return _outcome(lambda: _check_then_insert(db))


_start_run_lock = threading.Lock()


def thread_lock_check_then_insert(db: Database) -> RunOutcome:
    """The original bug: a ``threading.Lock`` around check-then-insert.

    It serializes the threads of one process and nothing else: every process has its own lock.
    """

    def attempt() -> None:
        with _start_run_lock:
            _check_then_insert(db)

    return _outcome(attempt)


def _check_then_insert(db: Database) -> None:
    if _backend(db) == "sqlite":
        with _sqlite(db) as conn:
            if _sqlite_active(conn):
                raise RunAlreadyActive
            point("checked")
            _sqlite_insert_run(conn)
    else:
        with _postgres(db) as conn:
            if _postgres_active(conn):
                raise RunAlreadyActive
            point("checked")
            _postgres_insert_run(conn)


# --- the lease as first written: check-then-act again ------------------------------------------


def lease_acquire_read_then_write(
    db: Database, name: str, *, ttl_seconds: float, holder: str | None = None
) -> str | None:
    """BROKEN on purpose: read the lock row, decide in Python, then write.

    Two processes can both read "absent" (the loser then raises a raw unique violation, it does
    not bail) or both read "stale" (both overwrite, both hold). Staleness is judged by this
    process's clock, not the database's.
    """
    token = secrets.token_hex(16)
    who = holder if holder is not None else _holder()
    now = time.time()
    if _backend(db) == "sqlite":
        with _sqlite(db) as conn:
            row = conn.execute("SELECT acquired_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and now - float(row[0]) <= ttl_seconds:
                return None
            point("lease_checked")
            if row is None:
                conn.execute(
                    "INSERT INTO leases (name, token, holder, acquired_at) VALUES (?, ?, ?, ?)",
                    (name, token, who, now),
                )
            else:
                conn.execute(
                    "UPDATE leases SET token = ?, holder = ?, acquired_at = ? WHERE name = ?",
                    (token, who, now, name),
                )
    else:
        stamp = datetime.fromtimestamp(now, timezone.utc)
        with _postgres(db) as conn:
            row = conn.execute("SELECT acquired_at FROM leases WHERE name = %s", (name,)).fetchone()
            if row is not None and (stamp - row[0]).total_seconds() <= ttl_seconds:
                return None
            point("lease_checked")
            if row is None:
                conn.execute(
                    "INSERT INTO leases (name, token, holder, acquired_at) VALUES (%s, %s, %s, %s)",
                    (name, token, who, stamp),
                )
            else:
                conn.execute(
                    "UPDATE leases SET token = %s, holder = %s, acquired_at = %s WHERE name = %s",
                    (token, who, stamp, name),
                )
    return token


def lease_release_by_name(db: Database, name: str, token: str) -> bool:
    """BROKEN on purpose: deletes the lock by name, whoever holds it now (``token`` unused)."""
    del token
    if _backend(db) == "sqlite":
        with _sqlite(db) as conn:
            return conn.execute("DELETE FROM leases WHERE name = ?", (name,)).rowcount == 1
    with _postgres(db) as conn:
        return conn.execute("DELETE FROM leases WHERE name = %s", (name,)).rowcount == 1


def lease_read_then_write(
    db: Database, *, name: str = DEFAULT_LEASE, ttl_seconds: float = 1800
) -> RunOutcome:
    """BROKEN on purpose: the lease as it is usually first written.

    Acquire by check-then-act (a loser can crash with a unique violation), create the run
    without a fence, release by name. Compare with :func:`lease`.
    """
    token = lease_acquire_read_then_write(db, name, ttl_seconds=ttl_seconds)
    if token is None:
        return REFUSED
    try:
        return _outcome(lambda: _check_then_insert(db))
    finally:
        lease_release_by_name(db, name, token)
