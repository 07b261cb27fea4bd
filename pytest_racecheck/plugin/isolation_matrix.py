"""``--racecheck-isolation=all`` (or a comma list): every race test once per isolation level.

Each test that uses the ``race`` fixture becomes one item per level, with an id such as
``test_counter[isolation=repeatable read]``, so CI shows each level's verdict; a test whose
``@pytest.mark.race(isolation=...)`` names its level keeps that one level. At the end of the
session a table shows each test's verdict at each level and the weakest level at which it
held.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_racecheck.wire.isolation import LEVELS

PARAM = "_racecheck_isolation"
ID_PREFIX = "isolation="


def item_id(level: str) -> str:
    return f"{ID_PREFIX}{level}"


@pytest.fixture
def _racecheck_isolation(request: pytest.FixtureRequest) -> str | None:
    """This item's isolation level under ``--racecheck-isolation=all`` (or a comma list),
    which parametrizes every test that uses ``race``; None otherwise."""
    return getattr(request, "param", None)


def parametrize(metafunc: pytest.Metafunc, levels: tuple[str, ...]) -> None:
    """One item per level for a test that races, unless its marker names its own level."""
    if len(levels) < 2 or PARAM not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("race")
    if marker is not None and marker.kwargs.get("isolation") is not None:
        return
    metafunc.parametrize(
        PARAM, list(levels), ids=[item_id(level) for level in levels], indirect=True
    )


def split_nodeid(nodeid: str) -> tuple[str, str] | None:
    """``(test without the level, level)`` for an item of the matrix, else None."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    base, _, inner = nodeid[:-1].partition("[")
    for level in LEVELS:
        token = item_id(level)
        for rest in (
            inner.replace(f"-{token}-", "-", 1),
            inner.removeprefix(f"{token}-"),
            inner.removesuffix(f"-{token}"),
            "" if inner == token else inner,
        ):
            if rest != inner:
                return (f"{base}[{rest}]" if rest else base), level
    return None


class MatrixTable:
    """Collects each matrix item's verdict; prints the test x level table at the end."""

    def __init__(self, levels: tuple[str, ...]) -> None:
        self.levels = levels
        self.cells: dict[str, dict[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = split_nodeid(report.nodeid)
        if found is None:
            return
        test, level = found
        row = self.cells.setdefault(test, {})
        if report.when == "call" or (report.when == "setup" and not report.passed):
            verdict = report.outcome
            if hasattr(report, "wasxfail"):
                verdict = "xfail" if report.skipped else "XPASS"
            row[level] = verdict
        elif report.when == "teardown" and report.failed and row.get(level) == "passed":
            row[level] = "error"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.cells:
            return
        terminalreporter.write_sep("=", "racecheck isolation levels")
        for line in table_lines(self.cells, self.levels):
            terminalreporter.write_line(line)


def weakest_held(row: dict[str, str], levels: tuple[str, ...]) -> str:
    for level in levels:
        if row.get(level) == "passed":
            return level
    return "none"


def table_lines(cells: dict[str, dict[str, str]], levels: tuple[str, ...]) -> list[str]:
    """The test x level table, with the weakest level at which each test held."""
    rows = [("test", *levels, "weakest level that held")]
    for test, row in cells.items():
        rows.append((test, *(row.get(level, "-") for level in levels), weakest_held(row, levels)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
