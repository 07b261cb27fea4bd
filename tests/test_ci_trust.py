"""Trustworthy in CI (issue 9): no teardown errors from what code under test leaves behind,
no silent no-ops from unchecked results, and progress lines for long races."""

from __future__ import annotations

import pytest

from pytest_racecheck.plugin import progress, race_fixture

LEFTOVERS = """
import os
from pathlib import Path

import pytest

seen = []

def litter(db):
    # What real code leaves beside its database: a lock file, a backup folder, a journal.
    directory = Path(db.path).parent
    (directory / "race.sqlite3.lock").write_text("pid")
    (directory / "backups" / "nested").mkdir(parents=True)
    (directory / "backups" / "nested" / "race.bak").write_bytes(b"x")
    (directory / "race.sqlite3-journal-old").write_bytes(b"")
    seen.append(directory)

@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    # A file beside the fixtures' directories, which they must never touch.
    path = tmp_path_factory.getbasetemp() / "outside.txt"
    path.write_text("keep me")
    return path

def test_sqlite_db(sqlite_db, outside):
    sqlite_db.executescript("CREATE TABLE t (x)")
    litter(sqlite_db)

def test_make_sqlite_db(make_sqlite_db, outside):
    for mode in ("wal", "delete"):
        litter(make_sqlite_db(journal_mode=mode))

def test_all_gone_and_outside_kept(outside):
    assert len(seen) == 3
    assert not [d for d in seen if d.exists()]
    assert outside.read_text() == "keep me"
"""


def test_sqlite_fixtures_remove_their_directory_whatever_is_left_in_it(
    pytester: pytest.Pytester,
) -> None:
    """It used to end in a teardown ERROR: OSError: [Errno 39] Directory not empty."""
    pytester.makepyfile(test_leftovers=LEFTOVERS)
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3, errors=0)


UNCHECKED = """
import pytest

def visit():
    return "ok"

def test_unchecked(race):
    race(visit, processes=2, rounds=2)

def test_asserted(race):
    race(visit, processes=2, rounds=2).assert_outcomes({"ok"})

def test_rounds_read(race):
    assert len(race(visit, processes=2, rounds=2).rounds) == 2

def test_histogram_read(race):
    assert race(visit, processes=2, rounds=2).histogram()

def test_counts_read(race):
    assert race(visit, processes=2, rounds=2).counts("ok") == [2, 2]

def test_failed_anyway(race):
    race(visit, processes=2, rounds=1)
    assert False, "the test fails for its own reason"
"""


def test_a_result_never_checked_warns_naming_test_and_race(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_unchecked=UNCHECKED)
    result = pytester.runpytest_inprocess("-rw")
    result.assert_outcomes(passed=5, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*test_unchecked.py:7: RaceResultNeverChecked: race result never checked: "
            "test_unchecked.py::test_unchecked raced visit (race #1, line 7)*",
        ]
    )
    assert sum("never checked" in line for line in result.outlines) == 1


def test_never_checked_can_be_made_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_unchecked=UNCHECKED)
    result = pytester.runpytest_inprocess(
        "-W",
        "error::pytest_racecheck.RaceResultNeverChecked",
        "test_unchecked.py::test_unchecked",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_unchecked*"])


def test_never_checked_warning_class_is_a_pytest_warning() -> None:
    assert issubclass(race_fixture.RaceResultNeverChecked, pytest.PytestWarning)


SLOW = """
import time

def slow():
    time.sleep(0.05)
    return "ok"

def test_long(race):
    race(slow, processes=2, rounds=4).assert_outcomes({"ok"})
"""


@pytest.fixture
def eager_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress from the first round on, every round (in-process runs share the module)."""
    monkeypatch.setattr(progress, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)


@pytest.mark.usefixtures("eager_progress")
def test_progress_lines_for_a_long_race(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_slow=SLOW)
    result = pytester.runpytest_inprocess()  # captured output: the lines go past capture
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "racecheck: test_slow.py::test_long: slow: round 1/4, 0 failing so far, *s",
            "racecheck: test_slow.py::test_long: slow: round 4/4, 0 failing so far, *s",
        ]
    )


@pytest.mark.usefixtures("eager_progress")
def test_progress_lines_are_quiet_under_q(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_slow=SLOW)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines + result.errlines if "racecheck: " in line]


@pytest.mark.usefixtures("eager_progress")
def test_progress_counts_failing_rounds_and_shows_a_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def boom():
            raise RuntimeError("boom")

        def test_boom(race):
            race(boom, processes=2, rounds=2).assert_outcomes({"ok"})
        """
    )
    result = pytester.runpytest_inprocess()
    result.stdout.fnmatch_lines(["racecheck: *test_boom: boom: round 2/2, 2 failing so far, *"])
    budget = pytester.runpytest_inprocess("--racecheck-soak-seconds=0.3")
    budget.stdout.fnmatch_lines(["racecheck: *test_boom: boom: round 1, 1 failing so far, *"])


def test_progress_lines_from_xdist_workers(pytester: pytest.Pytester, run_tag: str) -> None:
    """A worker has no terminal: its lines go to its real stderr, which pytest-xdist passes on.
    The default thresholds apply here (a separate process), so the race runs about 4 s."""
    pytester.makepyfile(
        """
        import time

        def slow():
            time.sleep(0.2)
            return "ok"

        def test_long(race):
            race(slow, processes=2, rounds=22).assert_outcomes({"ok"})
        """
    )
    result = pytester.runpytest_subprocess("-n", "1")
    result.assert_outcomes(passed=1)
    result.stderr.fnmatch_lines(["[[]gw0[]] racecheck: *test_long: slow: round */22, 0 failing*"])
