"""The groomer from the second story in the README: a scheduled job that must not run twice.

Every tick of a scheduler, the groomer picks issues that nobody has groomed yet and grooms them
(in the story with an LLM call; here it marks the issue and counts). Two replicas of the
scheduler fire at the same moment, so a run first takes a run-level lock in the database: one
row per lock name, the groomer's named ``"groomer"``; first writer wins; a lock older than 30
minutes is stale and may be reclaimed; a random token per holder; when the lock is held the run
bails out quietly with an empty tick; the lock is released in ``finally``.

The lock table is ``pytest_racecheck.runs``'s ``leases`` table (``name``, ``token``, ``holder``,
``acquired_at``): the story's ``sync_lock`` table, with ``name`` as its ``id``. The lock
functions are ``runs``'s as well (``lease_acquire`` / ``lease_release`` and their
``_as_first_written`` twins): this module is the user's code that calls them, so the SQL of
the lease is written once, in ``runs``, and raced here in a job of its own.

Two versions of the job:

``run_groomer_as_first_written``
    the lock as it is usually first written: acquire reads the row and decides in Python
    (check-then-act, Python's clock for staleness), so a loser that also saw "no lock" crashes
    on the primary key instead of bailing, and two racers that both saw "stale" both hold it.
    Release deletes by name, without the token, from a ``finally`` that also covers the bail:
    a loser on its way out deletes the winner's lock, and a slow holder whose lock was
    reclaimed deletes the new holder's. The grooming writes are not fenced.
``run_groomer``
    the corrected one: first writer wins in one statement, stale reclaim in one conditional
    statement on the database's clock, release only by token and only when acquired, and every
    grooming write fenced: it commits only in a transaction that confirms the token still holds
    the lock, so a holder that outlived its lease grooms nothing more.

Time: a run's LLM calls take ``llm_call_s`` each (a sleep), so a race on a virtual clock
(``race(..., clock="virtual")``) can make a holder stall past its 30-minute lease in no real
time. The corrected groomer's ``app_clock=True`` passes the process's time into the lock's SQL,
since the database's own clock is not virtual.

Sync points (``pytest_racecheck.point``, no-ops outside a race): ``"tick"`` when a run starts,
before it touches the lock; ``"selected"`` after the holder selected its issues, before it
grooms them (where the slow LLM call is); and, in the first-written acquire only, ``runs``'s
``"lease_checked"`` between reading the lock row and writing it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final

from pytest_racecheck import point, runs
from pytest_racecheck.backends.base import Database

LOCK_NAME: Final = "groomer"
STALE_AFTER_S: Final = 30 * 60
BATCH: Final = 3
"""Issues groomed per run: fewer than there are, so a later run finds work of its own."""
ISSUES: Final = 6

_ISSUES_TABLE = """
CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    groomed_by TEXT,
    groom_count INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, repr=False)
class Tick:
    """What one run did. ``Tick()``, the empty tick, is a run that did not get the lock.

    ``held_ns`` says when the run held the lock, as a log line would: from the moment acquire
    returned to the moment before release, on the monotonic clock (which every process on a
    Linux machine shares). Two runs whose spans overlap held the lock at the same time.
    """

    held: bool = False
    groomed: tuple[int, ...] = ()
    lost_lock: bool = False  # the fence found the lock reclaimed: the run stopped there
    held_ns: tuple[int, int] | None = None

    def __repr__(self) -> str:  # the race report's histogram shows outcomes by repr
        if not self.held:
            return "bailed"
        done = f"groomed {list(self.groomed)}"
        return f"{done}, then lost the lock" if self.lost_lock else done


EMPTY_TICK: Final = Tick()


class _LockLost(Exception):
    """The fence found another token on the lock: the grooming write must not happen."""


# --- schema and the test's view of the data -------------------------------------------------


def create_schema(db: Database, issues: int = ISSUES) -> None:
    """The lock table (``runs.create_schema`` makes ``leases``) and ``issues`` open issues."""
    runs.create_schema(db)
    db.executescript(_ISSUES_TABLE)
    db.execute("DELETE FROM issues")
    for n in range(1, issues + 1):
        db.execute(_sql(db, "INSERT INTO issues (id, title) VALUES (?, ?)"), (n, f"issue {n}"))


def reset(db: Database) -> None:
    """No lock held, no issue groomed: the state before a scheduler tick."""
    db.executescript("DELETE FROM leases;\nUPDATE issues SET groomed_by = NULL, groom_count = 0;\n")


def groomed_twice(db: Database) -> list[int]:
    """The issues that more than one run groomed: the harm that the lock exists to prevent."""
    rows = db.execute("SELECT id FROM issues WHERE groom_count > 1 ORDER BY id")
    return [int(row[0]) for row in rows]


# --- the job ----------------------------------------------------------------------------------


def run_groomer_as_first_written(
    db: Database,
    *,
    ttl_seconds: float = STALE_AFTER_S,
    batch: int = BATCH,
    llm_call_s: float = 0.0,
) -> Tick:
    """BROKEN on purpose: the groomer with the lock as it is usually first written."""
    point("tick")
    holder = _holder()
    token = None
    try:
        token = runs.lease_acquire_as_first_written(
            db, LOCK_NAME, ttl_seconds=ttl_seconds, holder=holder
        )
        if token is None:
            return EMPTY_TICK
        since = time.monotonic_ns()
        tick = _groom(db, holder, batch, fence_token=None, llm_call_s=llm_call_s)
        return replace(tick, held_ns=(since, time.monotonic_ns()))
    finally:
        # By name: the token is not even looked at. This runs for the loser that bailed (or
        # crashed) too, and for a holder whose lock was reclaimed: each deletes someone's lock.
        runs.lease_release_as_first_written(db, LOCK_NAME, token or "")


def run_groomer(
    db: Database,
    *,
    ttl_seconds: float = STALE_AFTER_S,
    batch: int = BATCH,
    llm_call_s: float = 0.0,
    app_clock: bool = False,
) -> Tick:
    """The groomer with the lock done right; when the lock is held, the empty tick.

    ``app_clock``: the lock's age is judged on this process's clock, passed into the SQL,
    instead of the database's (every groomer must then do so): a race on a virtual clock moves
    the first, never the second.
    """
    point("tick")
    holder = _holder()
    now = time.time() if app_clock else None
    token = runs.lease_acquire(db, LOCK_NAME, ttl_seconds=ttl_seconds, holder=holder, now=now)
    if token is None:
        return EMPTY_TICK
    since = time.monotonic_ns()
    try:
        tick = _groom(db, holder, batch, fence_token=token, llm_call_s=llm_call_s)
        return replace(tick, held_ns=(since, time.monotonic_ns()))
    finally:
        # Only our own lock: False here means it was reclaimed, and the new holder keeps it.
        runs.lease_release(db, LOCK_NAME, token)


def _groom(
    db: Database, holder: str, batch: int, *, fence_token: str | None, llm_call_s: float = 0.0
) -> Tick:
    """Select open issues and groom them; with ``fence_token``, each write is fenced.
    ``llm_call_s``: how long each issue's LLM call takes (a sleep)."""
    select = "SELECT id FROM issues WHERE groomed_by IS NULL ORDER BY id LIMIT ?"
    groom = "UPDATE issues SET groomed_by = ?, groom_count = groom_count + 1 WHERE id = ?"
    groomed: list[int] = []
    with _connect(db) as conn:
        chosen = [int(row[0]) for row in conn.execute(_sql(db, select), (batch,)).fetchall()]
        point("selected")
        for issue in chosen:
            # The LLM call goes here, outside any transaction: it can take longer than the TTL.
            if llm_call_s:
                time.sleep(llm_call_s)
            if fence_token is None:
                conn.execute(_sql(db, groom), (holder, issue))
            else:
                try:
                    with _fenced(db, conn, fence_token):
                        conn.execute(_sql(db, groom), (holder, issue))
                except _LockLost:
                    return Tick(held=True, groomed=tuple(groomed), lost_lock=True)
            groomed.append(issue)
    return Tick(held=True, groomed=tuple(groomed))


@contextmanager
def _fenced(db: Database, conn: Any, token: str) -> Iterator[None]:
    """A transaction that first proves ``token`` still holds the lock, or raises _LockLost.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock, so no reclaim can slip in before COMMIT.
    PostgreSQL: ``FOR SHARE`` on the lock row makes a concurrent reclaim (an UPDATE of that row)
    wait until this transaction commits.
    """
    sqlite = db.backend == "sqlite"
    conn.execute("BEGIN IMMEDIATE" if sqlite else "BEGIN")
    try:
        mine = "SELECT 1 FROM leases WHERE name = ? AND token = ?" + (
            "" if sqlite else " FOR SHARE"
        )
        if conn.execute(_sql(db, mine), (LOCK_NAME, token)).fetchone() is None:
            raise _LockLost
        yield
    except BaseException:
        if not sqlite or conn.in_transaction:  # SQLite may have rolled back by itself
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _connect(db: Database) -> Iterator[Any]:
    """One autocommit connection per run (``db.connect()``), closed when the run ends."""
    with closing(db.connect()) as conn:
        yield conn


def _sql(db: Database, sql: str) -> str:
    """The statements are written with ``?``; psycopg's placeholder is ``%s``."""
    return sql if db.backend == "sqlite" else sql.replace("?", "%s")


def _holder() -> str:
    return f"groomer pid {os.getpid()}"
