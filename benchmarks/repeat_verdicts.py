"""Run the 3-round deterministic races many times and count the verdicts.

    .venv/bin/python benchmarks/repeat_verdicts.py [times]     # default 100

Each broken strategy must fail every time (all racers create a run in every round, because the
meeting at "checked" lets nobody write before everyone has checked); each fix must pass every
time. The lease as first written runs one exact interleaving instead: both racers find the lock
free, racer 0 takes it and is held at its run check, racer 1 then inserts the lock row too.
Prints one line per strategy and database.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from pytest_racecheck import runs
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.controller.blocking import AnyProbe, ServerProbe, SqliteLockProbe
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec

MEET = {"processes": 4, "meet_at": "checked"}
INTERLEAVE = {
    "processes": 2,
    "schedule": ["0:lease_checked", "1:lease_checked", "0:checked", "1:checked"],
}
CASES: list[tuple[str, Any, bool, bool, dict[str, Any]]] = [
    # name, strategy, unique index, broken, how the race is made deterministic
    ("naive", runs.naive, False, True, MEET),
    ("in_process_lock", runs.in_process_lock, False, True, MEET),
    ("lease_as_first_written", runs.lease_as_first_written, False, True, INTERLEAVE),
    ("A", runs.A, True, False, MEET),
    ("B", runs.B, False, False, MEET),
    ("C", runs.C, False, False, MEET),
    ("lease", runs.lease, False, False, MEET),
]


def verdict(db: Any, probe: Any, strategy: Any, unique: bool, how: dict[str, Any]) -> bool:
    runs.create_schema(db, unique_active=unique)
    spec = RaceSpec(
        fn=strategy,
        args=(db,),
        rounds=3,
        timeout=120,
        reset=lambda: runs.reset(db),
        check=lambda: runs.active_count(db) == 1,
        **how,
    )
    try:
        run_race(spec, probe=probe).assert_exactly_one(runs.CREATED)
    except AssertionError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "times", nargs="?", type=int, default=100, help="races per strategy and database"
    )
    times = parser.parse_args().times
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteDatabase.create(Path(tmp) / "v.sqlite3")
        backends: list[tuple[str, Any, Any]] = [
            ("sqlite", sqlite, AnyProbe([SqliteLockProbe(sqlite.path)]))
        ]
        provider = None
        from pytest_racecheck.backends import postgres

        bindir = postgres.find_bindir(None)
        if bindir is not None:
            provider = postgres.PostgresServer.throwaway(Path(tmp), bindir)
            pg = provider.create_database()
            probe = AnyProbe([ServerProbe(provider.blocked_application_names)])
            backends.append(("postgres", pg, probe))
        try:
            for name, strategy, unique, broken, how in CASES:
                for backend, db, probe in backends:
                    passed = sum(verdict(db, probe, strategy, unique, how) for _ in range(times))
                    expected = 0 if broken else times
                    mark = "ok" if passed == expected else "UNEXPECTED"
                    print(
                        f"{name:24} {backend:8} passed {passed:3}/{times}, "
                        f"failed {times - passed:3}/{times}  {mark}",
                        flush=True,
                    )
        finally:
            for _, db, _ in backends:
                db.close()
            if provider is not None:
                provider.close()


if __name__ == "__main__":
    main()
