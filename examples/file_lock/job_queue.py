"""Claiming a job under a file lock: the lock lives outside the database.

Two workers of a small service pick the next job from a queue table. They share a host, so the
author guarded the claim with a :class:`filelock.FileLock` beside the database instead of a
database lock. Whether that is right depends on what the lock covers:

- ``claim_check_under_lock`` holds the file lock for the look-up only and writes after letting
  go of it: a check-then-act, only with a different lock. Two workers both see the job free and
  both claim it.
- ``claim_under_lock`` holds the file lock across the look-up and the write: correct on one
  host, whatever the database is, and wrong as soon as the service runs on two machines: each
  has its own lock file, so each machine's worker holds "the" lock at once.
- ``claim_in_database`` needs no lock outside the database: one conditional ``UPDATE`` takes
  the job only if it is still free, and the database lets one worker do that, on any host.

The harness cannot see inside ``flock``: a worker waiting for the file lock is asleep in the
kernel, neither at a point nor using CPU, and that is how it is told apart from a worker that
is merely slow.
"""

from __future__ import annotations

from filelock import FileLock

from pytest_racecheck import current_racer, point
from pytest_racecheck.backends.base import Database

SCHEMA = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY, claimed_by INTEGER);
CREATE TABLE claims (job_id INTEGER NOT NULL, worker INTEGER NOT NULL);
"""

CLAIMED = "claimed"
NOTHING = "nothing to do"


def reset(db: Database) -> None:
    db.execute("DELETE FROM claims")
    db.execute("DELETE FROM jobs")
    db.execute("INSERT INTO jobs (id, claimed_by) VALUES (1, NULL)")


def claims(db: Database) -> int:
    return db.scalar("SELECT count(*) FROM claims")


def next_free_job(db: Database) -> int | None:
    return db.scalar("SELECT id FROM jobs WHERE claimed_by IS NULL ORDER BY id LIMIT 1")


def _claim(db: Database, job: int) -> None:
    worker = current_racer() or 0
    db.execute(f"UPDATE jobs SET claimed_by = {worker} WHERE id = {job}")
    db.execute(f"INSERT INTO claims (job_id, worker) VALUES ({job}, {worker})")


def claim_check_under_lock(db: Database, lock_path: str) -> str:
    with FileLock(lock_path):
        job = next_free_job(db)
    point("checked")
    if job is None:
        return NOTHING
    _claim(db, job)
    return CLAIMED


def claim_under_lock(db: Database, lock_path: str) -> str:
    with FileLock(lock_path):
        job = next_free_job(db)
        point("checked")
        if job is None:
            return NOTHING
        _claim(db, job)
        return CLAIMED


def claim_in_database(db: Database, lock_path: str) -> str:
    """``lock_path`` is unused: the database is the lock."""
    worker = current_racer() or 0
    point("checked")
    taken = db.execute(
        f"UPDATE jobs SET claimed_by = {worker} "
        "WHERE id = (SELECT min(id) FROM jobs WHERE claimed_by IS NULL) AND claimed_by IS NULL "
        "RETURNING id"
    )
    if not taken:
        return NOTHING
    db.execute(f"INSERT INTO claims (job_id, worker) VALUES ({taken[0][0]}, {worker})")
    return CLAIMED
