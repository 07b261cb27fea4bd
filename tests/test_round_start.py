"""The round's start is a choice of explore's: what a racer does before its first statement.

Each racer takes a file lock before any statement and inserts its own number under it. Which
racer inserts first is decided before the first statement: the search sees it only because
racers are let go from their start one at a time, and their starts acted outside the racer
(``fcntl.flock``, opening the lock file: Python's audit events say so).

Why the verdicts cannot vary: every step is held and chosen by the search (no timing decides
an order: a racer waiting for the file lock is seen blocked, asleep in the kernel, and is let
go once the holder finishes), and the search is exhausted within its budget.
"""

from __future__ import annotations

from filelock import FileLock

from pytest_racecheck import current_racer
from pytest_racecheck.backends.base import Database

SCHEMA = "CREATE TABLE claims (seq INTEGER NOT NULL, racer INTEGER NOT NULL)"
CLAIM = "INSERT INTO claims (seq, racer) SELECT coalesce(max(seq), 0) + 1, {} FROM claims"


def locked_claim(db: Database, lock_path: str) -> int:
    """The racer that takes the lock first claims first."""
    with FileLock(lock_path):
        db.execute(CLAIM.format(current_racer()))
    return current_racer() or 0


def no_lock_at_all(db: Database, lock_path: str) -> int:
    """Nothing happens before the first statement: the start adds no choice."""
    db.execute(CLAIM.format(current_racer()))
    return current_racer() or 0


def first_claimer(db: Database) -> int:
    return db.scalar("SELECT racer FROM claims ORDER BY seq LIMIT 1")


def _explore(race, db: Database, fn, lock_path: str, firsts: list[int], **how):
    db.execute(SCHEMA)

    def check() -> bool:
        firsts.append(first_claimer(db))
        return True

    result = race(
        fn,
        db,
        lock_path,
        processes=2,
        timeout=60,
        reset=lambda: db.execute("DELETE FROM claims"),
        check=check,
        **how,
    )
    assert not [o.error for r in result.rounds for o in r.outcomes if o.error], result.summary()
    return result


def test_a_file_lock_taken_before_the_first_statement_is_explored_in_both_orders(
    race, race_db, tmp_path
) -> None:
    firsts: list[int] = []
    result = _explore(race, race_db, locked_claim, str(tmp_path / "l.lock"), firsts, explore=50)
    assert set(firsts) == {0, 1}, firsts  # each racer took the lock first in some round
    assert result.exhausted, result.summary()
    starts = [s for r in result.rounds for s in r.schedule if s.endswith(":start")]
    assert starts, "a start that took a lock is a step of the schedule, for its replay"


def test_starts_that_do_nothing_outside_add_no_order(race, sqlite_db, tmp_path) -> None:
    """Beside the one above: without the lock the racers' starts are inert, and no schedule
    names a start. (SQLite: on PostgreSQL the two racers' one-statement inserts are also tried
    together, a joint step its database cannot hold here, which is another subject.)"""
    firsts: list[int] = []
    lock = str(tmp_path / "l.lock")
    result = _explore(race, sqlite_db, no_lock_at_all, lock, firsts, explore=50)
    assert result.exhausted
    assert not [s for r in result.rounds for s in r.schedule if s.endswith(":start")]


def test_a_schedule_orders_the_starts(race, sqlite_db, tmp_path) -> None:
    """A replay that names the starts lets racers go in that order, every round."""
    for order, first in ((["1:start", "0:start"], 1), (["0:start", "1:start"], 0)):
        firsts: list[int] = []
        lock = str(tmp_path / "l.lock")
        _explore(race, sqlite_db, locked_claim, lock, firsts, rounds=5, schedule=order)
        assert firsts == [first] * 5, (order, firsts)
        sqlite_db.execute("DROP TABLE claims")
