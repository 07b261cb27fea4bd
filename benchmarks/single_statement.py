"""Races inside one statement on PostgreSQL, explored: flagged every time, or never exhausted.

    .venv/bin/python benchmarks/single_statement.py [times]      # default 20

Two racers each send one autocommit statement that checks and inserts at once:
``INSERT ... SELECT ... WHERE NOT EXISTS`` and ``MERGE ... WHEN NOT MATCHED THEN INSERT``, into
a table with a ``serial`` key and no unique index (the bug). Each is explored with
``explore=50``, ``times`` times, twice: as the plugin runs it (a joint step's inserts held in
the database after their snapshot), and with that hold switched off (joint steps left to
timing, retried while the budget lasts). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from pytest_racecheck.controller.blocking import AnyProbe, race_probe
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.results.result import RaceResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explore_verdicts import databases

SCHEMA = "CREATE TABLE runs (id serial PRIMARY KEY, status text NOT NULL, owner int)"
FORMS = {
    "INSERT ... SELECT ... WHERE NOT EXISTS": (
        "INSERT INTO runs (status, owner) SELECT 'running', 1"
        " WHERE NOT EXISTS (SELECT 1 FROM runs WHERE status = 'running')"
    ),
    "MERGE ... WHEN NOT MATCHED THEN INSERT": (
        "MERGE INTO runs r USING (SELECT 'running' AS status) s ON r.status = s.status"
        " WHEN NOT MATCHED THEN INSERT (status, owner) VALUES (s.status, 1)"
    ),
}


def start(dsn: str, sql: str) -> str:
    import psycopg

    conn: Any = psycopg.connect(dsn, autocommit=True)  # sql is built here, not user text
    with conn:
        return "created" if conn.execute(sql).rowcount == 1 else "refused"


class NoHold(AnyProbe):
    """The race's probe without its overlap holds: joint steps are left to timing."""

    def holds(self) -> list[Any]:
        return []


def explore(db: Any, sql: str, held: bool) -> RaceResult:
    probe = race_probe([], [db])[0]
    if not held:
        probe = NoHold(probe.probes)
    spec = RaceSpec(
        fn=start,
        args=(db.dsn, sql),
        processes=2,
        explore=50,
        timeout=300,
        reset=lambda: db.execute("DELETE FROM runs"),
        check=lambda: db.scalar("SELECT count(*) FROM runs WHERE status = 'running'") == 1,
    )
    try:
        return run_race(spec, probe=probe)
    finally:
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("times", nargs="?", type=int, default=20, help="explored races per row")
    times = parser.parse_args().times
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print(
        "| statement | hold | flagged | called exhausted | rounds (median) "
        "| first failing round (median) | held / timing-dependent joint steps |"
    )
    print("|---|---|---|---|---|---|---|")
    with databases() as made:
        if "postgres" not in made:
            sys.exit("PostgreSQL is needed: install its binaries or set RACECHECK_POSTGRES_URL")
        make_db, _ = made["postgres"]
        for label, sql in FORMS.items():
            for held in (True, False):
                flagged = exhausted = 0
                rounds, firsts, holds, timed = [], [], 0, 0
                for _ in range(times):
                    db = make_db()
                    db.executescript(SCHEMA)
                    result = explore(db, sql, held)
                    bad = [r.index for r in result._rounds if not r.check_held]
                    flagged += bool(bad)
                    exhausted += result.exhausted
                    rounds.append(result.rounds_run)
                    if bad:
                        firsts.append(bad[0])
                    holds += result.overlaps_held
                    timed += result.timing_dependent
                first = f"{statistics.median(firsts):g}" if firsts else "-"
                print(
                    f"| `{label}` | {'on' if held else 'off'} | {flagged}/{times} "
                    f"| {exhausted}/{times} | {statistics.median(rounds):g} | {first} "
                    f"| {holds} / {timed} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
