"""With pytest-timeout, a race ends before the test's limit, with the racecheck report."""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_timeout")

HANGS = """
import time

import pytest

from pytest_racecheck import RaceTimeout


def hang():
    time.sleep(60)


{marker}
def test_hang(race):
    race(hang, processes=2, rounds=1, timeout=60)
"""


@pytest.mark.parametrize(
    ("marker", "cli"),
    [("", ["--timeout=6"]), ("@pytest.mark.timeout(6)", [])],
    ids=["option", "marker"],
)
def test_race_timeout_is_capped_below_the_tests(
    pytester: pytest.Pytester, marker: str, cli: list[str]
) -> None:
    pytester.makepyfile(HANGS.format(marker=marker))
    result = pytester.runpytest_subprocess("-p", "timeout", *cli)
    result.assert_outcomes(failed=1)
    # racecheck's report, naming the racers, not pytest-timeout's stack dump
    result.stdout.fnmatch_lines(
        ["*RaceTimeout: race of hang timed out after 4.* s in round 1*", "*racer 0*"]
    )
    assert "Timeout >6" not in result.stdout.str()
