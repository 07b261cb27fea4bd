"""Every reference strategy of ``pytest_racecheck.runs``, raced on SQLite and on PostgreSQL.

The broken ones (``naive`` and ``in_process_lock``, the original bug) are expected failures that
must fail: with 8 racers, they create more than one run in most rounds on both databases, so 50
rounds are never all clean. The fixes cannot fail: their verdict does not depend on timing.

Each runs on one host and on two simulated replicas (``replicas=2``, four racers each): every
fix keeps its lock in the database, so none depends on the racers sharing a machine, and the
verdicts are the same.
"""

from __future__ import annotations

import pytest

from pytest_racecheck import runs

BROKEN = pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="check-then-act across processes"
)

CASES = [
    # (test id, strategy, keyword arguments, needs the unique index, backends, broken)
    ("naive", runs.naive, {}, False, ("sqlite", "postgres"), True),
    ("in_process_lock", runs.in_process_lock, {}, False, ("sqlite", "postgres"), True),
    ("A-catch", runs.A, {"form": "catch"}, True, ("sqlite", "postgres"), False),
    ("A-upsert", runs.A, {"form": "upsert"}, True, ("sqlite", "postgres"), False),
    ("B-immediate", runs.B, {"form": "immediate"}, False, ("sqlite",), False),
    ("B-lock_table", runs.B, {"form": "lock_table"}, False, ("postgres",), False),
    ("B-advisory", runs.B, {"form": "advisory"}, False, ("postgres",), False),
    ("B-serializable", runs.B, {"form": "serializable"}, False, ("postgres",), False),
    ("C", runs.C, {}, False, ("sqlite", "postgres"), False),
    ("lease", runs.lease, {}, False, ("sqlite", "postgres"), False),
]

PARAMS = [
    pytest.param(
        backend, strategy, kwargs, unique, id=f"{name}-{backend}", marks=[BROKEN] if broken else []
    )
    for name, strategy, kwargs, unique, backends, broken in CASES
    for backend in backends
]


@pytest.mark.race(processes=8, rounds=50)
@pytest.mark.parametrize("replicas", [1, 2], ids=["one_host", "two_replicas"])
@pytest.mark.parametrize(("backend", "strategy", "kwargs", "unique"), PARAMS)
def test_start_one_run(race, request, backend, strategy, kwargs, unique, replicas):
    db = request.getfixturevalue(f"{backend}_db")
    runs.create_schema(db, unique_active=unique)
    result = race(
        strategy,
        db,
        reset=lambda: runs.reset(db),
        check=lambda: runs.active_count(db) == 1,
        replicas=replicas,
        **kwargs,
    )
    result.assert_exactly_one(runs.CREATED)
