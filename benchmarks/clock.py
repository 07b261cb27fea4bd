"""How long a 31-minute stall takes on the virtual clock, in real time.

    .venv/bin/python benchmarks/clock.py [times]     # default 10 races of each version

The race of ``tests/test_clock.py``: racer 0 takes a 30-minute lease and sleeps 31 minutes
before its work, racer 1 sleeps 30 minutes and 1 second and reclaims; 5 rounds per race, on a
SQLite file, ``clock="virtual"``. Without a token check both racers work as the holder (the
negative control must fail); with one, only the reclaimer does (the fix must pass). Prints the
verdicts and the real time of each race: start-up, the whole race, and per round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path

from pytest_racecheck import current_racer, runs
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.controller.blocking import race_probe
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec

LEASE = "nightly"
TTL = 30 * 60
ROUNDS = 5


def stalled_holder(db: SqliteDatabase, checked: bool) -> str:
    if current_racer() == 0:
        token = runs.lease_acquire(db, LEASE, ttl_seconds=TTL, now=time.time())
        time.sleep(31 * 60)
    else:
        time.sleep(30 * 60 + 1)
        token = runs.lease_acquire(db, LEASE, ttl_seconds=TTL, now=time.time())
    if token is None:
        return "no lease"
    try:
        if checked and not runs.lease_renew(db, LEASE, token, now=time.time()):
            return "lost the lease"
        with closing(db.connect()) as conn:
            conn.execute("INSERT INTO work (who) VALUES (?)", (f"racer {current_racer()}",))
        return "worked as the holder"
    finally:
        runs.lease_release(db, LEASE, token)


def one_race(db: SqliteDatabase, checked: bool) -> tuple[bool, float, float, float]:
    """Passed?, start-up, whole race and virtual time, in seconds."""
    probe, own = race_probe([], [db])
    spec = RaceSpec(
        fn=stalled_holder,
        args=(db, checked),
        processes=2,
        rounds=ROUNDS,
        timeout=120,
        clock="virtual",
        reset=lambda: db.executescript("DELETE FROM leases;\nDELETE FROM work;\n"),
    )
    try:
        result = run_race(spec, probe=probe)
    finally:
        own.close()
    passed = result.counts("worked as the holder") == [1] * ROUNDS
    return passed, result.startup_s, result.elapsed_s, result.virtual_s or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("times", type=int, nargs="?", default=10)
    times = parser.parse_args().times
    with tempfile.TemporaryDirectory() as tmp:
        db = SqliteDatabase(str(Path(tmp) / "clock.db"))
        runs.create_schema(db)
        db.executescript("CREATE TABLE work (id INTEGER PRIMARY KEY, who TEXT NOT NULL);")
        for checked in (False, True):
            races = [one_race(db, checked) for _ in range(times)]
            name = "token-checked" if checked else "unchecked (negative control)"
            passed = sum(r[0] for r in races)
            startup = statistics.median(r[1] for r in races)
            elapsed = [r[2] for r in races]
            per_round = statistics.median((r[2] - r[1]) / ROUNDS * 1000 for r in races)
            print(
                f"{name}: passed {passed}/{times}; real time per race median "
                f"{statistics.median(elapsed):.2f} s, max {max(elapsed):.2f} s (start-up median "
                f"{startup:.2f} s, {per_round:.0f} ms per round); virtual time per race "
                f"{races[0][3] / 60:.0f} min"
            )


if __name__ == "__main__":
    main()
