"""A replay proves it replayed: every step of ``schedule=`` runs in every round, or the race
fails naming the step, its racer and where that racer was instead; an empty or malformed
schedule is refused before any process starts.

Each case here passed silently before (issue 16): a schedule of moved code, a schedule naming a
point that does not exist, and ``schedule=[]`` all ran as free stress rounds.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from pytest_racecheck import current_racer, point, runs
from pytest_racecheck.controller.errors import ScheduleNotFollowed


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([], "schedule must be a non-empty list"),
        ("0:checked", "schedule must be a non-empty list"),
        (["0checked"], "is not 'racer:point'"),
        (["0:"], "is not 'racer:point'"),
        (["2:checked"], "names racer 2, but racers are numbered 0 to 1"),
        ([("0", "checked")], "is not 'racer:point'"),
        (["0:checked & 0:other"], "names a racer twice"),
    ],
)
def test_a_bad_schedule_is_refused_before_any_process(race, schedule, message) -> None:
    with pytest.raises(ValueError, match=message):
        race(runs.naive, None, processes=2, rounds=1, schedule=schedule)
    assert race.results == []  # nothing ran


def test_a_step_naming_no_real_point_fails_the_race(race, sqlite_db) -> None:
    runs.create_schema(sqlite_db)
    with pytest.raises(ScheduleNotFollowed) as failure:
        race(
            runs.naive,
            sqlite_db,
            processes=2,
            rounds=3,
            timeout=60,
            schedule=["0:chekced", "1:checked"],
            reset=lambda: runs.reset(sqlite_db),
        )
    message = str(failure.value)
    assert "not followed in round 1" in message
    assert "step 1 '0:chekced' never ran: racer 0 had returned" in message
    assert "racer 0 passed these points in round 1: 'SELECT runs @ _base.py" in message
    assert "'checked', 'INSERT runs @ _base.py" in message
    assert failure.value.result is not None and failure.value.result.rounds_run == 1


def test_a_step_whose_racer_took_another_path_fails_the_race(race, race_db) -> None:
    """C's loser sees the winner's run and returns before its "checked" point."""
    runs.create_schema(race_db)
    with pytest.raises(ScheduleNotFollowed, match=r"step \d '\d:checked' never ran: racer \d "):
        race(
            runs.C,
            race_db,
            processes=2,
            rounds=2,
            timeout=60,
            schedule=["0:checked", "1:checked"],
            reset=lambda: runs.reset(race_db),
        )


APP = """
import sqlite3


def start(path):
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
            return "refused"
        conn.execute("INSERT INTO runs (v) VALUES (1)")
        return "created"
    finally:
        conn.close()
"""

TEST = """
import json
import pathlib

import app
import pytest

HERE = pathlib.Path(__file__).parent


def _race(race, sqlite_db, **kwargs):
    sqlite_db.execute("CREATE TABLE IF NOT EXISTS runs (v INTEGER)")
    return race(app.start, sqlite_db.path, processes=2, timeout=60,
                reset=lambda: sqlite_db.execute("DELETE FROM runs"),
                check=lambda: sqlite_db.scalar("SELECT count(*) FROM runs") == 1, **kwargs)


def test_explore(race, sqlite_db):
    result = _race(race, sqlite_db, explore=50)
    with pytest.raises(AssertionError, match="2 racers returned 'created'"):
        result.assert_exactly_one("created")
    (HERE / "schedule.json").write_text(json.dumps(result.failing_schedule))


def test_replay(race, sqlite_db):
    schedule = json.loads((HERE / "schedule.json").read_text())
    result = _race(race, sqlite_db, rounds=5, schedule=schedule)
    result.assert_exactly_one("created")
"""


def test_a_pasted_schedule_of_code_that_moved_fails_the_replay(pytester: pytest.Pytester) -> None:
    """docs/ci.md keeps a pasted failing_schedule as the regression test: once the code moves,
    its steps name lines that no longer send those statements, and the replay must say so."""
    pytester.makepyfile(app=APP, test_flow=TEST)
    pytester.runpytest_subprocess("-k", "explore").assert_outcomes(passed=1)
    replayed = pytester.runpytest_subprocess("-k", "replay")
    replayed.assert_outcomes(failed=1)  # the same code: the interleaving replays and fails
    replayed.stdout.fnmatch_lines(["*2 racers returned 'created'*"])
    pytester.makepyfile(app="# a comment moves every line down\n" + APP)
    moved = pytester.runpytest_subprocess("-k", "replay")
    moved.assert_outcomes(failed=1)
    moved.stdout.fnmatch_lines(
        [
            "*ScheduleNotFollowed: race of start: the schedule was not followed in round 1*",
            "*step ? '?:SELECT runs @ app.py:7' never ran: racer ? had returned*",
            "*racer ? passed these points in round 1: 'SELECT runs @ app.py:9', 'INSERT*:11'",
        ]
    )


def sleepy_check_then_act(db) -> str:
    """A check-then-act whose racer 0 does work between two statements, asleep in Python (not
    blocked on anything another racer holds): it reads the table before it sleeps and after."""
    if db.backend == "sqlite":
        conn = sqlite3.connect(db.path, timeout=30, isolation_level=None)
    else:
        conn = db.connect()
        conn.autocommit = True
    try:
        point("began")
        conn.execute("SELECT count(*) FROM runs").fetchone()
        if current_racer() == 0:
            for _ in range(20):  # work between two statements, asleep: a backoff, a rate limit
                time.sleep(0.01)
        point("read")
        active = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        point("checked")
        if active:
            return "refused"
        conn.execute("INSERT INTO runs (status) VALUES ('running')")
        return "created"
    finally:
        conn.close()


def test_a_replay_waits_for_a_racer_asleep_in_python(race, race_db) -> None:
    """The schedule's next step is racer 0's own while it sleeps: it must be waited for, not
    taken for a racer waiting on a lock (then racer 1 ran ahead, found nothing, and racer 0
    refused: the replay of a failing interleaving passed in some rounds)."""
    race_db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")
    if race_db.backend == "postgres":
        race_db.executescript("DROP TABLE runs; CREATE TABLE runs (id serial, status text)")
    result = race(
        sleepy_check_then_act,
        race_db,
        processes=2,
        rounds=20,
        timeout=120,
        # both read before either writes; racer 0's step "read" is next while it sleeps
        schedule=["0:began", "0:read", "1:began", "1:read", "0:checked", "1:checked"],
        reset=lambda: race_db.execute("DELETE FROM runs"),
    )
    assert result.counts("created") == [2] * 20, [r.trace for r in result.rounds]


def start_run(path: str, fixed: bool) -> str:
    """Check, then act; ``fixed`` takes SQLite's write lock first (BEGIN IMMEDIATE), and the
    statements stay on the same lines."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE" if fixed else "SELECT 0")
        if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
            conn.execute("ROLLBACK" if fixed else "SELECT 0")
            return "refused"
        conn.execute("INSERT INTO runs (v) VALUES (1)")
        conn.execute("COMMIT" if fixed else "SELECT 0")
        return "created"
    finally:
        conn.close()


def test_a_schedule_replayed_against_the_fix_says_to_keep_explore(race, sqlite_db) -> None:
    """The commonest replay that is not followed: the bug was fixed, and its interleaving cannot
    happen any more. The advice names that case (keep an explore= test), beside code that moved
    (explore again)."""
    sqlite_db.execute("CREATE TABLE runs (v INTEGER)")

    def attempt(fixed: bool, **kwargs):
        return race(
            start_run,
            sqlite_db.path,
            fixed,
            processes=2,
            timeout=60,
            reset=lambda: sqlite_db.execute("DELETE FROM runs"),
            check=lambda: sqlite_db.scalar("SELECT count(*) FROM runs") == 1,
            **kwargs,
        )

    buggy = attempt(False, explore=50, seed=1)
    with pytest.raises(AssertionError, match="2 racers returned 'created'"):
        buggy.assert_exactly_one("created")
    advice = (
        r"(?s)not followed in round 1.*"
        r"moved or takes another path.*explore again and paste the new.*failing_schedule.*"
        r"If the bug was fixed, this interleaving cannot happen any more.*"
        r"keep a race with explore= as the regression test"
    )
    with pytest.raises(ScheduleNotFollowed, match=advice):
        attempt(True, rounds=3, schedule=buggy.failing_schedule)
