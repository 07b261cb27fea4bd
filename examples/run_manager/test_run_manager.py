"""Race the run manager's start_run across processes: the original fails, A, B and C hold.

The original is an expected failure that must fail (``strict=True``): if the harness ever
stopped catching it, this suite would go red. With 8 racers released together, the original
creates several runs in most rounds (see docs/benchmarks.md), so 50 rounds never all pass.
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


@pytest.mark.race(processes=8, rounds=50)
@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param("original", marks=pytest.mark.xfail(strict=True, reason="the original bug")),
        "A",
        "B",
        "C",
    ],
)
def test_one_active_run(race, sqlite_db, strategy):
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
        reset=lambda: sqlite_db.execute("DELETE FROM runs"),
        check=lambda: sqlite_db.scalar("SELECT count(*) FROM runs WHERE status='running'") == 1,
        timeout=60,
    )
    result.assert_exactly_one("created")
