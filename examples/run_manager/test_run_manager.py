"""Race the run manager's start_run across processes: the original fails, A, B and C hold.

The original is an expected failure that must fail (``strict=True``): if the harness ever
stopped catching it, this suite would go red. Each strategy is raced two ways:

- ``stress``: 8 racers released together, 50 rounds. The original creates several runs in most
  rounds, so 50 rounds never all pass.
- ``paused``: ``pause_after="run_manager:get_active_run"`` holds each racer right after its
  check, without touching the code under test, until every racer has checked (or is waiting on
  a database lock, or has returned). The original then creates one run per racer in every
  round: 3 rounds give a verdict that cannot vary. A, B and C make the others wait on the lock
  (or fail at the unique index) instead, and pass.
- ``explored``: no point and no pause at all (the code's own ``point("checked")`` is switched
  off in each racer): ``explore=50`` holds 2 racers at every SQL statement and tries their
  interleavings, fewest switches first. The original fails at the first interleaving with one
  switch between the check and the insert (within the first 5 of at most 50), and A, B and C
  have no failing interleaving. The search is deterministic: the verdict cannot vary.
"""

from __future__ import annotations

import pytest
import run_manager
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


def statements_only() -> None:
    """racer_setup: switch the code's own sync point off; SQL statements alone drive explore."""
    run_manager.point = lambda name: None  # type: ignore[assignment]


HOW = {
    "stress": {"processes": 8, "rounds": 50},
    "paused": {"processes": 4, "rounds": 3, "pause_after": "run_manager:get_active_run"},
    "explored": {"processes": 2, "explore": 50, "seed": 1, "racer_setup": statements_only},
}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param(
            "original",
            marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason="the original bug"),
        ),
        "A",
        "B",
        "C",
    ],
)
def test_one_active_run(race, sqlite_db, strategy, how):
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
        **HOW[how],
    )
    result.assert_exactly_one("created")
