"""The same race, made deterministic: every racer checks before any racer acts.

``pause_after="run_manager:get_active_run"`` holds each racer right after its check, without
touching the code under test, until every racer has checked (or is provably waiting on a
database lock, or has returned). The original then creates one run per racer in every round, so
3 rounds are enough for a verdict that cannot vary; A, B and C make the others wait on the lock
(or fail at the unique index) instead, and pass.
"""

from __future__ import annotations

import pytest
from run_manager import (
    SCHEMA,
    UNIQUE_ACTIVE,
    RunAlreadyActive,
    RunManager,
    RunManagerA,
    RunManagerB,
    RunManagerC,
)

MANAGERS = {"original": RunManager, "A": RunManagerA, "B": RunManagerB, "C": RunManagerC}


@pytest.mark.race(processes=4, rounds=3)
@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param("original", marks=pytest.mark.xfail(strict=True, reason="the original bug")),
        "A",
        "B",
        "C",
    ],
)
def test_one_active_run_paused_after_the_check(race, sqlite_db, strategy):
    sqlite_db.executescript(SCHEMA)
    if strategy == "A":
        sqlite_db.execute(UNIQUE_ACTIVE)
    manager = MANAGERS[strategy]

    def attempt():
        try:
            manager(sqlite_db.path).start_run()
            return "created"
        except RunAlreadyActive:
            return "refused"

    result = race(
        attempt,
        pause_after="run_manager:get_active_run",
        reset=lambda: sqlite_db.execute("DELETE FROM runs"),
        check=lambda: sqlite_db.scalar("SELECT count(*) FROM runs WHERE status='running'") == 1,
    )
    result.assert_exactly_one("created")
