"""The race harness on SQLite, tested as users run it: real processes, a real database file.

Why the verdicts here are reliable: a check-then-insert with no lock, raced by 4 processes
released together, creates more than one run in most rounds on this class of machine (the
widening is a commit with its fsync between the check and the end of the call), and each race
has 30 rounds: a broken strategy escapes only if all 30 rounds happen to serialise. The
correct strategies cannot fail at all: their verdict does not depend on timing.
"""

from __future__ import annotations

import pytest

RUN_MANAGER = """
import sqlite3
import threading

SCHEMA = "CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL);"


class RunAlreadyActive(Exception):
    pass


_lock = threading.Lock()


class RunManager:
    def __init__(self, path, strategy="naive"):
        self.path = path
        self.strategy = strategy

    def start_run(self):
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        try:
            if self.strategy == "immediate":
                conn.execute("BEGIN IMMEDIATE")
            with _lock:  # in-process only: the original bug
                active = conn.execute("SELECT id FROM runs WHERE status='running'").fetchone()
                if active is not None:
                    if self.strategy == "immediate":
                        conn.execute("ROLLBACK")
                    raise RunAlreadyActive(active[0])
                conn.execute("INSERT INTO runs(status) VALUES ('running')")
                if self.strategy == "immediate":
                    conn.execute("COMMIT")
        finally:
            conn.close()
"""

CONTRACT_TEST = """
import pytest
from run_manager import SCHEMA, RunAlreadyActive, RunManager

STRATEGY = {strategy!r}


def test_one_active_run(race, sqlite_db):
    sqlite_db.executescript(SCHEMA)

    def attempt():
        try:
            RunManager(sqlite_db.path, STRATEGY).start_run()
            return "created"
        except RunAlreadyActive:
            return "refused"

    result = race(
        attempt,
        processes=4,
        rounds=30,
        reset=lambda: sqlite_db.execute("DELETE FROM runs"),
        check=lambda: sqlite_db.scalar("SELECT count(*) FROM runs WHERE status='running'") == 1,
        timeout=60,
    )
    result.assert_exactly_one("created")
"""

MODULE_LEVEL_TEST = """
from run_manager import SCHEMA, RunAlreadyActive, RunManager


def attempt(path, strategy):
    try:
        RunManager(path, strategy).start_run()
        return "created"
    except RunAlreadyActive:
        return "refused"


def test_module_level(race, sqlite_db):
    sqlite_db.executescript(SCHEMA)
    result = race(attempt, sqlite_db.path, strategy={strategy!r}, processes=4, rounds=30,
                  reset=lambda: sqlite_db.execute("DELETE FROM runs"))
    result.assert_exactly_one("created")
"""


@pytest.mark.parametrize("form", [CONTRACT_TEST, MODULE_LEVEL_TEST], ids=["closure", "module"])
def test_in_process_lock_is_caught(pytester: pytest.Pytester, run_tag: str, form: str) -> None:
    pytester.makepyfile(run_manager=RUN_MANAGER, test_race=form.format(strategy="naive"))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*race of *attempt failed in * of 30 rounds (4 racers): expected exactly one racer*",
            "*outcomes (rounds):*",
            "*created x*<-- fails*",
            "*first failing round, #*: * racers returned 'created'*",
            "*racer*outcome*released*took*last point*",
            "*racecheck summary*",
            "*test_race.py::test_*failed*",
        ]
    )


@pytest.mark.parametrize("form", [CONTRACT_TEST, MODULE_LEVEL_TEST], ids=["closure", "module"])
def test_begin_immediate_passes(pytester: pytest.Pytester, run_tag: str, form: str) -> None:
    pytester.makepyfile(run_manager=RUN_MANAGER, test_race=form.format(strategy="immediate"))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*racecheck summary*", "*passed*30/30*4*created x1, refused x3*"])


def test_closure_state_crosses_into_spawned_racers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        def test_closure(race):
            secret = {"word": "captured", "parent": os.getpid()}

            def attempt(suffix):
                return (secret["word"] + suffix, os.getpid() != secret["parent"])

            result = race(attempt, "!", processes=2, rounds=3)
            assert result.histogram() == [("('captured!', True) x2", 3)]
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_outcomes_record_times_and_racers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_times(race):
            result = race(lambda: 7, processes=3, rounds=4, start_method="spawn")
            assert len(result.rounds) == 4
            for rnd in result.rounds:
                assert sorted(o.racer for o in rnd.outcomes) == [0, 1, 2]
                for o in rnd.outcomes:
                    assert o.value == 7 and o.error is None
                    assert 0 < o.released_ns <= o.ended_ns
                assert rnd.release_skew_ns >= 0
            assert result.counts(7) == [3, 3, 3, 3]
            result.assert_outcomes({7})
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
