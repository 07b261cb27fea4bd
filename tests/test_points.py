"""Deterministic races: sync points, meet_at, pause_after, schedules, racers blocked in the DB.

Why these verdicts never depend on timing: with ``meet_at="checked"`` no racer may write
before every racer has checked (or is provably waiting on a lock, or has returned), so a
check-then-act without a lock creates one run per racer in *every* round, and a correct lock
makes the others wait at the lock instead of at the point. The assertions are exact counts.
"""

from __future__ import annotations

import sqlite3

import pytest

from pytest_racecheck import point, runs
from pytest_racecheck.policies.meet_at import MeetAt
from pytest_racecheck.policies.schedule import Schedule, parse_schedule


def test_point_outside_a_race_does_nothing() -> None:
    """No controller to talk to, so no state either: a racer's last point stays unset."""
    from pytest_racecheck.instrument import points

    for _ in range(3):
        point("anywhere")
    assert points.last_point() is None


@pytest.mark.parametrize("strategy", [runs.naive, runs.in_process_lock], ids=["naive", "lock"])
def test_meet_at_catches_check_then_act_in_every_round(race, race_db, strategy) -> None:
    runs.create_schema(race_db)
    result = race(
        strategy,
        race_db,
        processes=4,
        rounds=3,
        meet_at="checked",
        reset=lambda: runs.reset(race_db),
        check=lambda: runs.active_count(race_db),
    )
    assert result.counts(runs.CREATED) == [4, 4, 4]
    assert [r.check for r in result.rounds] == [4, 4, 4]
    assert all(o.last_point == "checked" for r in result.rounds for o in r.outcomes)
    with pytest.raises(AssertionError, match="failed in 3 of 3 rounds"):
        result.assert_exactly_one(runs.CREATED)


FIXES = [
    pytest.param(runs.A, {"form": "catch"}, True, id="A"),
    pytest.param(runs.B, {}, False, id="B"),
    pytest.param(runs.C, {}, False, id="C"),
    pytest.param(runs.lease, {}, False, id="lease"),
]


@pytest.mark.parametrize(("strategy", "kwargs", "unique"), FIXES)
def test_fixes_pass_with_a_meeting_at_their_check(race, race_db, strategy, kwargs, unique):
    runs.create_schema(race_db, unique_active=unique)
    result = race(
        strategy,
        race_db,
        processes=4,
        rounds=5,
        meet_at="checked",
        timeout=60,
        reset=lambda: runs.reset(race_db),
        check=lambda: runs.active_count(race_db) == 1,
        **kwargs,
    )
    result.assert_exactly_one(runs.CREATED)


def test_lock_waiters_are_seen_as_blocked(race, race_db) -> None:
    """B holds the lock at the point: the others must be found waiting on it, not timed out."""
    runs.create_schema(race_db)
    result = race(
        runs.B,
        race_db,
        processes=3,
        rounds=3,
        meet_at="checked",
        timeout=60,
        reset=lambda: runs.reset(race_db),
    )
    result.assert_exactly_one(runs.CREATED)
    for rnd in result.rounds:
        holder = [o.racer for o in rnd.outcomes if o.value == runs.CREATED]
        assert rnd.waited_on_lock == frozenset({0, 1, 2}) - set(holder)


RUN_MANAGER_PAUSE = """
import sqlite3
import threading

_lock = threading.Lock()

def get_active_run(conn):
    return conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchone()

def create_run(conn):
    conn.execute("INSERT INTO runs(status) VALUES ('running')")

def start_run(path):
    with _lock:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            if get_active_run(conn) is not None:
                return "refused"
            create_run(conn)
            return "created"
        finally:
            conn.close()
"""


def test_pause_after_needs_no_change_to_the_code(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        manager=RUN_MANAGER_PAUSE,
        test_pause="""
        import manager

        def test_pause(race, sqlite_db):
            sqlite_db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")
            result = race(manager.start_run, sqlite_db.path, processes=3, rounds=3,
                          pause_after="manager:get_active_run",
                          reset=lambda: sqlite_db.execute("DELETE FROM runs"))
            assert result.counts("created") == [3, 3, 3]
            assert {o.last_point for r in result.rounds for o in r.outcomes} == {
                "after manager:get_active_run"}
        """,
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_pause_before_and_bad_target(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        manager=RUN_MANAGER_PAUSE,
        test_pause="""
        import pytest
        import manager

        def test_before(race, sqlite_db):
            # Held before the write, every racer has already checked: all of them create.
            sqlite_db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")
            result = race(manager.start_run, sqlite_db.path, processes=2, rounds=2,
                          pause_before="manager:create_run",
                          reset=lambda: sqlite_db.execute("DELETE FROM runs"))
            assert result.counts("created") == [2, 2]

        def test_missing(race):
            with pytest.raises(ValueError, match="no function 'nope' there"):
                race(print, processes=2, pause_after="manager:nope")
        """,
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=2)


def test_schedule_runs_one_interleaving_and_reports_it(race, sqlite_db) -> None:
    runs.create_schema(sqlite_db)
    result = race(
        runs.naive,
        sqlite_db,
        processes=2,
        rounds=2,
        schedule=["1:checked", "0:checked"],
        reset=lambda: runs.reset(sqlite_db),
    )
    assert result.counts(runs.CREATED) == [2, 2]
    assert result.rounds[0].trace == ("1:checked", "0:checked")
    with pytest.raises(AssertionError, match=r"(?s)interleaving:\n\s+1:checked\n\s+0:checked"):
        result.assert_exactly_one(runs.CREATED)


def locked_then_commit(db) -> str:
    """Take a database-wide lock, pass the point "locked" holding it, then commit: every racer
    reaches the point, the later ones after waiting for the lock."""
    if db.backend == "sqlite":
        conn = sqlite3.connect(db.path, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn = db.connect()
        conn.autocommit = False
        conn.execute("SELECT pg_advisory_xact_lock(7)")
    try:
        point("locked")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return "done"


def test_schedule_marks_a_step_that_waits_on_a_lock(race, race_db) -> None:
    """Whoever takes the lock first, both steps run in every round: a step whose racer waits on
    the lock is marked so, and runs when the racer gets there."""
    result = race(
        locked_then_commit,
        race_db,
        processes=2,
        rounds=4,
        timeout=60,
        schedule=["0:locked", "1:locked"],
    )
    result.assert_outcomes(["done"])
    for rnd in result.rounds:
        assert set(rnd.schedule) == {"0:locked", "1:locked"}, rnd.trace
        if rnd.schedule[0] == "1:locked":  # racer 1 had the lock: racer 0's step waited
            assert "0:locked   waits on a lock" in rnd.trace, rnd.trace


# The policies themselves, fed events directly: no processes needed to check their rules.


def test_meet_at_releases_when_everyone_is_accounted_for() -> None:
    meet = MeetAt("checked", 3)
    meet.start_round()
    assert meet.arrived(0, "checked") == []
    assert meet.poll_interval() is not None
    assert meet.finished(2) == []
    assert meet.blocked({1}) == [0]
    assert meet.arrived(1, "checked") == [1]  # late arrivals pass at once
    assert meet.poll_interval() is None


def test_schedule_waits_for_stillness_before_each_step() -> None:
    sched = Schedule(parse_schedule(["0:a", "1:a", "0:b"], 2), 2)
    assert sched.held_points(0) == {"a": 1, "b": 1}
    sched.start_round()
    assert sched.arrived(0, "a") == []  # racer 1 is still running
    assert sched.arrived(1, "a") == [0]
    assert sched.arrived(0, "b") == [1]
    assert sched.finished(1) == [0]
    assert sched.trace() == ("0:a", "1:a", "0:b")


def test_schedule_catches_the_lease_as_first_written(race, race_db) -> None:
    """Both racers find the lock free; racer 0 takes it and waits at its run check; racer 1 then
    inserts the lock row as well and crashes on the unique violation instead of bailing."""
    runs.create_schema(race_db)
    result = race(
        runs.lease_as_first_written,
        race_db,
        processes=2,
        rounds=3,
        timeout=60,
        schedule=["0:lease_checked", "1:lease_checked", "0:checked"],
        reset=lambda: runs.reset(race_db),
    )
    for rnd in result.rounds:
        assert rnd.outcomes[0].value == runs.CREATED
        assert rnd.outcomes[1].error is not None, rnd.outcomes[1]
    with pytest.raises(AssertionError, match="racer 1 raised"):
        result.assert_exactly_one(runs.CREATED)


def write_then_count(db) -> int:
    conn = db.connect()
    try:
        conn.execute("INSERT INTO t (v) VALUES (1)")  # racers queue on SQLite's write lock
        point("wrote")
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["meet_at", "schedule"])
def test_a_sleeper_whose_lock_was_released_is_waited_for(race, sqlite_db, how) -> None:
    """SQLite's busy handler keeps sleeping after the lock is released: such a racer is about to
    write, not blocked, and no racer may pass before it has. (A probe that took every sleeper
    for a waiter let racers pass early in most rounds.)"""
    sqlite_db.execute("CREATE TABLE t (v INTEGER)")
    points = (
        {"meet_at": "wrote"} if how == "meet_at" else {"schedule": [f"{i}:wrote" for i in range(6)]}
    )
    result = race(
        write_then_count,
        sqlite_db,
        processes=6,
        rounds=20,
        timeout=120,
        reset=lambda: sqlite_db.execute("DELETE FROM t"),
        **points,
    )
    result.assert_outcomes([6])
    if how == "schedule":
        assert all(r.trace[:6] == tuple(f"{i}:wrote" for i in range(6)) for r in result.rounds)
