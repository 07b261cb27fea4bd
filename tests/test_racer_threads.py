"""Points reached on a racer's other threads: let through and reported, never a hang, and no
traceback from a racer's thread once the race is over (issue 16).

Before: a side thread's statement sent its own "held at" message on the racer's pipe while the
main thread was held too; both waited for an answer on one pipe, and the race ran into its
timeout. A thread that connected after the race printed ``BrokenPipeError`` tracebacks.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from pytest_racecheck.controller.errors import NothingExplored


def _connect(db):
    if db.backend == "sqlite":
        return sqlite3.connect(db.path, timeout=30, isolation_level=None)
    conn = db.connect()
    conn.autocommit = True
    return conn


def main_and_side_thread(db) -> str:
    """A statement on the main thread; then one on a side thread while the main thread sends
    (and is held at) its second one."""
    conn = _connect(db)
    try:
        conn.execute("SELECT count(*) FROM t").fetchone()
        started = threading.Event()

        def side() -> None:
            other = _connect(db)
            try:
                started.set()
                other.execute("INSERT INTO t (v) VALUES (1)")
            finally:
                other.close()

        thread = threading.Thread(target=side)
        thread.start()
        started.wait()
        count = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        thread.join()
        return "ok" if count in (0, 1, 2) else str(count)
    finally:
        conn.close()


def _table(db) -> None:
    db.executescript("CREATE TABLE t (v INTEGER)")


def test_points_on_a_side_thread_are_let_through_and_reported(race, race_db) -> None:
    _table(race_db)
    result = race(
        main_and_side_thread,
        race_db,
        processes=2,
        explore=6,
        seed=3,
        timeout=30,
        reset=lambda: race_db.execute("DELETE FROM t"),
    )
    assert len(result.rounds) >= 1
    assert all(len(o.other_threads) == 1 for r in result.rounds for o in r.outcomes)
    assert all(o.other_threads[0].startswith("INSERT t @ ") for o in result.rounds[0].outcomes)
    assert result.unheld_points == 2 * len(result.rounds)
    assert not result.exhausted  # statements ran outside the search
    # the main thread's statements were scheduled: each racer has two steps every round (and
    # its start, since it connects before its first statement: an act outside the racer)
    for rnd in result.rounds:
        steps = [p for step in rnd.schedule for p in step.split(" & ") if p[2:] != "start"]
        assert sorted(p.split(":", 1)[0] for p in steps) == ["0", "0", "1", "1"], rnd.schedule
    text = result.format_round(result.rounds[0])
    assert "ran 1 point(s) on other threads, let through unscheduled: 'INSERT t @" in text
    assert result.summary()["unheld_points"] == 2 * len(result.rounds)


def only_a_side_thread(db) -> str:
    thread = threading.Thread(target=lambda: _connect(db).execute("INSERT INTO t (v) VALUES (1)"))
    thread.start()
    thread.join()
    return "ok"


def test_a_racer_whose_sql_all_runs_on_other_threads_explored_nothing(race, sqlite_db) -> None:
    _table(sqlite_db)
    with pytest.raises(NothingExplored) as failure:
        race(only_a_side_thread, sqlite_db, processes=2, explore=5, timeout=60)
    broken = failure.value.result
    assert broken is not None and not broken.exhausted and not broken.every_order
    message = str(failure.value)
    assert "explored nothing: no racer reached a point in any of 1 round(s)" in message
    assert "2 point(s) were reached on the racers' other threads" in message


SIDE_THREAD_RACE = """
import sqlite3
import threading


def attempt(path):
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("SELECT count(*) FROM t").fetchone()
    started = threading.Event()

    def side():
        other = sqlite3.connect(path, timeout=30, isolation_level=None)
        started.set()
        other.execute("INSERT INTO t (v) VALUES (1)")
        other.close()

    thread = threading.Thread(target=side)
    thread.start()
    started.wait()
    conn.execute("SELECT count(*) FROM t").fetchone()
    thread.join()
    conn.close()
    return "ok"


def test_side_thread(race, sqlite_db):
    sqlite_db.executescript("CREATE TABLE t (v INTEGER)")
    result = race(attempt, sqlite_db.path, processes=2, explore=6, timeout=30,
                  reset=lambda: sqlite_db.execute("DELETE FROM t"))
    result.assert_outcomes({"ok"})
"""


def test_racers_of_a_side_thread_race_print_no_traceback(
    pytester: pytest.Pytester, run_tag: str
) -> None:
    """Before, this race timed out and its racers printed ``BrokenPipeError`` tracebacks."""
    pytester.makepyfile(test_side=SIDE_THREAD_RACE)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "BrokenPipeError" not in output


def test_a_notice_on_a_closed_pipe_is_dropped_quietly() -> None:
    """A thread of the code under test that connects once the race is over sends its backend
    pid on a pipe the controller closed: the notice is dropped, nothing is raised in the code
    under test; the racer's own messages still raise."""
    import multiprocess

    from pytest_racecheck.processes.racer import _OneSenderAtATime
    from pytest_racecheck.wire.messages import BackendPid

    ours, theirs = multiprocess.Pipe()
    channel = _OneSenderAtATime(theirs)
    ours.close()
    channel.notify(BackendPid(1))  # no BrokenPipeError
    with pytest.raises(OSError):
        channel.send(BackendPid(1))
