"""A file lock outside the database, raced four ways on both databases.

Why the verdicts cannot vary:

- ``meet_at="checked"`` holds every worker after its look-up until every worker has looked
  (or is waiting, asleep, for the file lock). With the lock around the look-up only, every
  worker then claims the one job: three claims in every round. With the lock around both, the
  others wait for the file lock while the first is held; the harness sees them asleep with no
  CPU used and counts them, so the meeting opens and the first worker claims alone. Without
  that, the meeting would hang until the timeout.
- ``pause_after="filelock:FileLock.release"`` does the same without a point in the code: every
  worker is held right after it lets go of the file lock (a method ``FileLock`` inherits).
- ``explore=`` tries the interleavings of two workers' statements, and the order in which they
  take the file lock before their first statement: racers are let go from their start one at
  a time, and a start that takes a file lock is tried in every order (docs/explore.md, "The
  round's start"). The broken claim fails in 40 of the 50 interleavings and the correct claim
  is exhausted after 8, on both databases, in every run (measured 3 runs of each).
"""

from __future__ import annotations

import pytest
from job_queue import (
    CLAIMED,
    SCHEMA,
    claim_check_under_lock,
    claim_in_database,
    claim_under_lock,
    claims,
    reset,
)

from pytest_racecheck.backends.base import Database

HOW = {
    "explore": {"processes": 2, "explore": 50, "seed": 1},
    "meet_at": {"processes": 3, "rounds": 3, "meet_at": "checked"},
    "paused": {"processes": 3, "rounds": 3, "pause_after": "filelock:FileLock.release"},
}

STRATEGIES = [
    pytest.param(
        claim_check_under_lock,
        marks=pytest.mark.xfail(
            strict=True, raises=AssertionError, reason="the lock covers the check only"
        ),
        id="check-under-lock",
    ),
    pytest.param(claim_under_lock, id="claim-under-lock"),
]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_claim_per_job(race, race_db: Database, tmp_path, strategy, how) -> None:
    race_db.executescript(SCHEMA)
    result = race(
        strategy,
        race_db,
        str(tmp_path / "claim.lock"),
        reset=lambda: reset(race_db),
        check=lambda: claims(race_db) == 1,
        timeout=60,
        **HOW[how],
    )
    result.assert_exactly_one(CLAIMED)


# --- the same service on two machines -------------------------------------------------------

ACROSS = [
    pytest.param(claim_under_lock, 1, id="file-lock-one-host"),
    pytest.param(
        claim_under_lock,
        2,
        marks=pytest.mark.xfail(
            strict=True, raises=AssertionError, reason="each replica has its own lock file"
        ),
        id="file-lock-two-replicas",
    ),
    pytest.param(claim_in_database, 1, id="database-one-host"),
    pytest.param(claim_in_database, 2, id="database-two-replicas"),
]


@pytest.mark.parametrize(("strategy", "replicas"), ACROSS)
def test_one_claim_across_replicas(race, race_db: Database, tmp_path, strategy, replicas) -> None:
    """The lock file lives in a directory of the machine (``/var/lock/job_queue`` in
    production); ``host_paths`` gives each simulated host its own. Four workers, two per host
    with ``replicas=2``.

    Why the verdicts cannot vary: ``meet_at="checked"`` holds each worker after its look-up
    until every worker has looked or sleeps on a lock. On one host the file lock lets one
    worker look at a time, and the next one sees the claim. On two, each host's first worker
    holds its own host's lock: both look, both are held, both claim, in every round. The
    database's conditional update lets one worker take the job wherever it runs.
    """
    race_db.executescript(SCHEMA)
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    result = race(
        strategy,
        race_db,
        str(lock_dir / "claim.lock"),
        reset=lambda: reset(race_db),
        check=lambda: claims(race_db) == 1,
        processes=4,
        rounds=3,
        meet_at="checked",
        replicas=replicas,
        host_paths=[lock_dir],
        timeout=60,
    )
    result.assert_exactly_one(CLAIMED)
