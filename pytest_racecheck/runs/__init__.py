"""Reference "start one run" strategies, on SQLite and PostgreSQL.

Every strategy answers the question this project comes from: how do several *processes* make
sure that at most one run is active? Each is a function that a racer calls once per round with a
database handle. It works on its process's own connection (the handle's shared connection, kept
between calls as a pooled worker's would be), tries to start a run and returns an outcome:
:data:`CREATED` when this call created the active run, :data:`REFUSED` when a run was already
active (or the lock that guards starting one was held). The values are the same on both
databases, so one test body runs on both.

``A``, ``B``, ``C`` and ``lease`` are correct; they live here. The strategies that race on
purpose live apart, in :mod:`pytest_racecheck.runs.broken`, under names that say what they do;
this module keeps their original names as aliases: ``naive`` and ``in_process_lock`` (the
original bug), and ``lease_as_first_written`` (the lease as it is usually first written).

Sync points (see :func:`pytest_racecheck.point`):

``"checked"``
    every strategy, after it found no active run and before it writes one. Meeting all racers
    here is what turns check-then-act into a deterministic failure.
``"lease_checked"``
    ``lease_as_first_written`` only, after it read the lock row and decided the lock is free,
    before it writes the lock row. The correct lease has no such gap to pause in.

The code is written to be read: each backend has its own function with its SQL spelled out.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Final

from pytest_racecheck.backends.base import Database
from pytest_racecheck.instrument.points import point
from pytest_racecheck.runs import broken
from pytest_racecheck.runs._base import (
    _SQLITE_NOW,
    ADVISORY_LOCK_NAME,
    CREATED,
    DEFAULT_LEASE,
    REFUSED,
    SERIALIZABLE_ATTEMPTS,
    AForm,
    BForm,
    RunAlreadyActive,
    RunOutcome,
    _backend,
    _holder,
    _outcome,
    _postgres,
    _postgres_active,
    _postgres_insert_run,
    _postgres_transaction,
    _sqlite,
    _sqlite_active,
    _sqlite_insert_run,
    _sqlite_transaction,
    active_count,
    create_schema,
    reset,
)

__all__ = [
    "CREATED",
    "REFUSED",
    "STRATEGIES",
    "A",
    "B",
    "C",
    "RunAlreadyActive",
    "RunOutcome",
    "active_count",
    "create_schema",
    "in_process_lock",
    "lease",
    "lease_acquire",
    "lease_acquire_as_first_written",
    "lease_as_first_written",
    "lease_release",
    "lease_release_as_first_written",
    "lease_renew",
    "naive",
    "reset",
]

# --- A: uniqueness in the schema --------------------------------------------------------------


def A(db: Database, *, form: AForm = "catch") -> RunOutcome:
    """Let a partial unique index decide: at most one ``status = 'running'`` row can exist.

    The check stays (it refuses cheaply in the common case) but no longer has to be right.
    ``form="catch"`` inserts and turns the loser's unique violation into a refusal;
    ``form="upsert"`` inserts ``ON CONFLICT (status) WHERE status = 'running' DO NOTHING``
    (the conflict target repeats the index predicate) and looks at the row count. Needs
    ``create_schema(db, unique_active=True)``.
    """
    if form not in ("catch", "upsert"):
        raise ValueError(f"A has forms 'catch' and 'upsert', not {form!r}")
    if _backend(db) == "sqlite":
        return _outcome(lambda: _a_sqlite(db, form))
    return _outcome(lambda: _a_postgres(db, form))


_UPSERT_RUN_SQLITE = (
    "INSERT INTO runs (status, holder) VALUES ('running', ?) "
    "ON CONFLICT (status) WHERE status = 'running' DO NOTHING"
)
_UPSERT_RUN_POSTGRES = _UPSERT_RUN_SQLITE.replace("?", "%s")


def _a_sqlite(db: Database, form: AForm) -> None:
    with _sqlite(db) as conn:
        if _sqlite_active(conn):
            raise RunAlreadyActive
        point("checked")
        if form == "upsert":
            if conn.execute(_UPSERT_RUN_SQLITE, (_holder(),)).rowcount != 1:
                raise RunAlreadyActive
            return
        try:
            _sqlite_insert_run(conn)
        except sqlite3.IntegrityError as exc:
            raise RunAlreadyActive from exc


def _a_postgres(db: Database, form: AForm) -> None:
    import psycopg

    with _postgres(db) as conn:
        if _postgres_active(conn):
            raise RunAlreadyActive
        point("checked")
        if form == "upsert":
            if conn.execute(_UPSERT_RUN_POSTGRES, (_holder(),)).rowcount != 1:
                raise RunAlreadyActive
            return
        try:
            # Autocommit: the failed INSERT was its own transaction, already rolled back.
            _postgres_insert_run(conn)
        except psycopg.errors.UniqueViolation as exc:
            raise RunAlreadyActive from exc


# --- B: serialize in the database -------------------------------------------------------------

_B_FORMS: Final[dict[str, tuple[str, ...]]] = {
    "sqlite": ("immediate",),
    "postgres": ("lock_table", "advisory", "serializable"),
}


def B(db: Database, *, form: BForm | None = None) -> RunOutcome:
    """Check and create in one transaction that serializes every starter.

    SQLite: ``form="immediate"`` (the only one): ``BEGIN IMMEDIATE`` takes the write lock before
    the check, and the others wait for it on the busy timeout. PostgreSQL:
    ``form="lock_table"`` (default), ``LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE``, which
    conflicts with itself and with every writer of ``runs``; ``form="advisory"``,
    ``pg_advisory_xact_lock(hashtext(...))``, released at commit; ``form="serializable"``, a
    SERIALIZABLE transaction run again from the start on SQLSTATE 40001.
    """
    backend = _backend(db)
    chosen = form if form is not None else _B_FORMS[backend][0]
    if chosen not in _B_FORMS[backend]:
        raise ValueError(
            f"B on {backend} has forms {', '.join(map(repr, _B_FORMS[backend]))}, not {chosen!r}"
        )
    if backend == "sqlite":
        return _outcome(lambda: _b_sqlite(db))
    if chosen == "serializable":
        return _outcome(lambda: _b_postgres_serializable(db))
    return _outcome(lambda: _b_postgres_locked(db, chosen))


def _b_sqlite(db: Database) -> None:
    with _sqlite(db) as conn, _sqlite_transaction(conn, "BEGIN IMMEDIATE"):
        if _sqlite_active(conn):
            raise RunAlreadyActive
        point("checked")
        _sqlite_insert_run(conn)


def _b_postgres_locked(db: Database, form: str) -> None:
    with _postgres(db) as conn, _postgres_transaction(conn):
        if form == "lock_table":
            conn.execute("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")
        else:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (ADVISORY_LOCK_NAME,))
        if _postgres_active(conn):
            raise RunAlreadyActive
        point("checked")
        _postgres_insert_run(conn)


def _b_postgres_serializable(db: Database) -> None:
    import psycopg

    with _postgres(db) as conn:
        for attempt in range(1, SERIALIZABLE_ATTEMPTS + 1):
            try:
                with _postgres_transaction(conn, "BEGIN ISOLATION LEVEL SERIALIZABLE"):
                    if _postgres_active(conn):
                        raise RunAlreadyActive
                    point("checked")
                    _postgres_insert_run(conn)
                return
            except psycopg.errors.SerializationFailure:
                # The transaction is rolled back; run all of it again, check included.
                if attempt == SERIALIZABLE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.001 * attempt))


# --- C: a guard row ---------------------------------------------------------------------------


def C(db: Database) -> RunOutcome:
    """Every starter first locks one pre-existing guard row, then checks and creates.

    PostgreSQL: ``SELECT ... FOR UPDATE`` on the guard row (locking the runs themselves does not
    work: ``FOR UPDATE`` on rows that do not exist yet locks nothing). SQLite has no row locks:
    the first statement of the transaction writes the guard row, which takes the database's
    write lock; a deferred transaction whose first statement is a write waits on the busy
    timeout, like ``BEGIN IMMEDIATE``.
    """
    if _backend(db) == "sqlite":
        return _outcome(lambda: _c_sqlite(db))
    return _outcome(lambda: _c_postgres(db))


_GUARD_MISSING = "the guard row is missing: create_schema() creates it and reset() keeps it"


def _c_sqlite(db: Database) -> None:
    with _sqlite(db) as conn, _sqlite_transaction(conn, "BEGIN"):
        touched = conn.execute(
            f"UPDATE run_guard SET holder = ?, touched_at = {_SQLITE_NOW} WHERE id = 1",
            (_holder(),),
        )
        if touched.rowcount != 1:
            raise RuntimeError(_GUARD_MISSING)
        if _sqlite_active(conn):
            raise RunAlreadyActive
        point("checked")
        _sqlite_insert_run(conn)


def _c_postgres(db: Database) -> None:
    with _postgres(db) as conn, _postgres_transaction(conn):
        if conn.execute("SELECT id FROM run_guard WHERE id = 1 FOR UPDATE").fetchone() is None:
            raise RuntimeError(_GUARD_MISSING)
        # READ COMMITTED: this statement's snapshot is taken after the guard was granted, so it
        # sees the run that the previous holder committed.
        if _postgres_active(conn):
            raise RunAlreadyActive
        point("checked")
        _postgres_insert_run(conn)


# --- the lease, done right --------------------------------------------------------------------


def lease_acquire(
    db: Database,
    name: str,
    *,
    ttl_seconds: float,
    holder: str | None = None,
    now: float | None = None,
) -> str | None:
    """Take the lease ``name``; return this holder's token, or None when someone holds it.

    First writer wins (``INSERT ... ON CONFLICT DO NOTHING``). A lease whose age has reached
    ``ttl_seconds`` is stale and is reclaimed by one conditional ``UPDATE``: of several
    reclaimers exactly one matches. ``ttl_seconds=0``: always stale. Ages are measured on the
    database's clock, or, with ``now`` (seconds since the epoch), on the application's: the
    same value stamps the lease and judges the old one, so every holder must pass it.
    """
    if ttl_seconds < 0:
        raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds!r}")
    token = secrets.token_hex(16)
    who = holder if holder is not None else _holder()
    if _backend(db) == "sqlite":
        stamp = "?" if now is not None else _SQLITE_NOW
        clock = _now(now)
        with _sqlite(db) as conn:
            inserted = conn.execute(
                "INSERT INTO leases (name, token, holder, acquired_at) "
                f"VALUES (?, ?, ?, {stamp}) ON CONFLICT (name) DO NOTHING",
                (name, token, who, *clock),
            ).rowcount
            if inserted == 1:
                return token
            reclaimed = conn.execute(
                f"UPDATE leases SET token = ?, holder = ?, acquired_at = {stamp} "
                f"WHERE name = ? AND acquired_at <= {stamp} - ?",
                (token, who, *clock, name, *clock, float(ttl_seconds)),
            ).rowcount
    else:
        stamp = "to_timestamp(%s::float8)" if now is not None else "clock_timestamp()"
        clock = _now(now)
        with _postgres(db) as conn:
            inserted = conn.execute(
                "INSERT INTO leases (name, token, holder, acquired_at) "
                f"VALUES (%s, %s, %s, {stamp}) ON CONFLICT (name) DO NOTHING",
                (name, token, who, *clock),
            ).rowcount
            if inserted == 1:
                return token
            reclaimed = conn.execute(
                f"UPDATE leases SET token = %s, holder = %s, acquired_at = {stamp} "
                "WHERE name = %s "
                f"AND acquired_at <= {stamp} - %s::float8 * interval '1 second'",
                (token, who, *clock, name, *clock, float(ttl_seconds)),
            ).rowcount
    return token if reclaimed == 1 else None


def lease_renew(db: Database, name: str, token: str, *, now: float | None = None) -> bool:
    """Stamp the lease afresh (a heartbeat), only if ``token`` still holds it; False when it
    was reclaimed: the holder has lost the lease and must stop. ``now`` as for acquire."""
    if _backend(db) == "sqlite":
        stamp = "?" if now is not None else _SQLITE_NOW
        clock = _now(now)
        with _sqlite(db) as conn:
            sql = f"UPDATE leases SET acquired_at = {stamp} WHERE name = ? AND token = ?"
            return conn.execute(sql, (*clock, name, token)).rowcount == 1
    stamp = "to_timestamp(%s::float8)" if now is not None else "clock_timestamp()"
    clock = _now(now)
    with _postgres(db) as conn:
        sql = f"UPDATE leases SET acquired_at = {stamp} WHERE name = %s AND token = %s"
        return conn.execute(sql, (*clock, name, token)).rowcount == 1


def _now(now: float | None) -> tuple[float, ...]:
    """A lease statement's "now" parameter: none for the database's clock, or the application's
    time (the recipe for a virtual clock, which the database cannot see)."""
    return () if now is None else (float(now),)


def lease_release(db: Database, name: str, token: str) -> bool:
    """Give the lease back, only if ``token`` still holds it; False when it was reclaimed."""
    if _backend(db) == "sqlite":
        with _sqlite(db) as conn:
            sql = "DELETE FROM leases WHERE name = ? AND token = ?"
            return conn.execute(sql, (name, token)).rowcount == 1
    with _postgres(db) as conn:
        sql = "DELETE FROM leases WHERE name = %s AND token = %s"
        return conn.execute(sql, (name, token)).rowcount == 1


def lease(db: Database, *, name: str = DEFAULT_LEASE, ttl_seconds: float = 1800) -> RunOutcome:
    """Start a run under a lease; when the lease is held, refuse quietly (no exception).

    Under the lease: check, then create, and the create is fenced: it happens in a transaction
    that first confirms this token still holds the lease, so a holder that outlived its lease
    (and was reclaimed) refuses instead of creating a second run. Release in ``finally``.
    """
    token = lease_acquire(db, name, ttl_seconds=ttl_seconds)
    if token is None:
        return REFUSED
    try:
        return _outcome(lambda: _create_under_lease(db, name, token))
    finally:
        lease_release(db, name, token)


def _create_under_lease(db: Database, name: str, token: str) -> None:
    if _backend(db) == "sqlite":
        with _sqlite(db) as conn:
            if _sqlite_active(conn):
                raise RunAlreadyActive
            point("checked")
            with _sqlite_transaction(conn, "BEGIN IMMEDIATE"):
                held = conn.execute(
                    "SELECT 1 FROM leases WHERE name = ? AND token = ?", (name, token)
                ).fetchone()
                if held is None:
                    raise RunAlreadyActive  # reclaimed: the lease is someone else's now
                _sqlite_insert_run(conn)
    else:
        with _postgres(db) as conn:
            if _postgres_active(conn):
                raise RunAlreadyActive
            point("checked")
            with _postgres_transaction(conn):
                # FOR SHARE makes a concurrent reclaim (an UPDATE of this row) wait for commit.
                held = conn.execute(
                    "SELECT 1 FROM leases WHERE name = %s AND token = %s FOR SHARE",
                    (name, token),
                ).fetchone()
                if held is None:
                    raise RunAlreadyActive
                _postgres_insert_run(conn)


# --- the broken ones, under the names they have always had -----------------------------------

naive = broken.unguarded_check_then_insert
in_process_lock = broken.thread_lock_check_then_insert
lease_as_first_written = broken.lease_read_then_write
lease_acquire_as_first_written = broken.lease_acquire_read_then_write
lease_release_as_first_written = broken.lease_release_by_name

#: Every strategy by name, with its default form; "A" needs ``create_schema(unique_active=True)``.
STRATEGIES: Final[dict[str, Callable[[Database], RunOutcome]]] = {
    "naive": naive,
    "in_process_lock": in_process_lock,
    "A": A,
    "B": B,
    "C": C,
    "lease": lease,
    "lease_as_first_written": lease_as_first_written,
}
