"""Time to a verdict, explore mode beside frontrun 0.7's cross-process DPOR, in one run.

    .venv/bin/pip install 'frontrun[process]==0.7.*'   # into the worktree's .venv only
    .venv/bin/python benchmarks/frontrun_side_by_side.py [times]      # default 3

frontrun is not a dependency of this project: it is the closest peer tool, measured here on
the same reference strategies of ``pytest_racecheck.runs`` (:data:`REFERENCE`), the same databases
(SQLite, and PostgreSQL 15 on the plugin's throwaway server), 2 racers and the same budget of
50 interleavings. On our side: ``race(explore=50)`` with every user point off, as in
explore_verdicts.py. On frontrun's: ``frontrun.explore(execution="process",
max_executions=50, total_timeout=30)`` with its other defaults (DPOR, preemption bound 2,
stop at the first failure), whose ``setup`` resets the tables and returns the database handle,
which each worker process receives; the invariant is the one of our ``check`` (exactly one
active run).

The two tools run in turn (ours, frontrun, ours, frontrun...), so the machine's load falls on
both alike. The time is the wall time of the whole call, start-up of the processes included:
what a test waits for its verdict.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

from explore_verdicts import CASES, Case, databases, race

from pytest_racecheck import runs
from pytest_racecheck.backends.base import Database

BUDGET = 50
TOTAL_TIMEOUT_S = 30.0
"""frontrun's own cap on one exploration (``total_timeout``): a stalled worker costs it its
``deadlock_timeout`` (15 s) each time, and one exploration of the lease on SQLite took 280 s
uncapped; the whole comparison has to fit in minutes."""
NAMES = (
    "runs.naive",
    "runs.lease_as_first_written",
    "runs.A catch",
    "runs.B",
    "runs.C",
    "runs.lease",
)
REFERENCE = [c for c in CASES if c.name in NAMES]
"""The reference strategies: the naive check-then-insert, the lease as first written, A, B (its
default form: BEGIN IMMEDIATE on SQLite, LOCK TABLE on PostgreSQL), C and the lease."""


def frontrun_race(case: Case, db: Database) -> tuple[str, int, Any, float]:
    """One frontrun exploration: its verdict, interleavings, whether exhausted, seconds."""
    import frontrun  # pyright: ignore[reportMissingImports]

    fn, kwargs = case.fn, case.kwargs

    def setup() -> Database:
        runs.reset(db)
        return db

    def worker(handle: Database) -> Any:
        return fn(handle, **kwargs)

    started = time.monotonic()
    result = frontrun.explore(
        setup=setup,
        workers=worker,
        count=2,
        invariant=lambda handle: runs.active_count(handle) == 1,
        execution="process",
        max_executions=BUDGET,
        total_timeout=TOTAL_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    holds = result.property_holds
    verdict = "pass" if holds else "fail" if holds is False else "inconclusive"
    why = result.failure_kind or result.inconclusive_reason
    if why and holds is not True:
        verdict += f" ({str(why).split(':')[0][:40]})"
    return verdict, result.num_explored, getattr(result, "exhausted", None), seconds


def ours(case: Case, db: Database, probe: Any) -> tuple[str, int, bool, float]:
    started = time.monotonic()
    result = race(case, db, probe, explore=BUDGET, seed=1)
    seconds = time.monotonic() - started
    verdict = "fail" if case.failed(result) else "pass"
    return verdict, len(result.rounds), result.exhausted, seconds


def summary(runs_: list[tuple[str, int, Any, float]]) -> list[str]:
    verdicts = sorted({r[0] for r in runs_})
    counts = sorted({r[1] for r in runs_})
    exhausted = sum(1 for r in runs_ if r[2])
    return [
        "/".join(verdicts) + f" ({len(runs_)} of {len(runs_)})"
        if len(verdicts) == 1
        else ", ".join(f"{v} {sum(1 for r in runs_ if r[0] == v)}" for v in verdicts),
        "-".join(str(c) for c in (counts[0], counts[-1]) if c is not None)
        if counts[0] != counts[-1]
        else str(counts[0]),
        f"{exhausted}/{len(runs_)}",
        f"{statistics.median(r[3] for r in runs_):.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("times", nargs="?", type=int, default=3, help="races per row and tool")
    times = parser.parse_args().times
    import frontrun  # pyright: ignore[reportMissingImports]

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, frontrun {frontrun.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    started = time.monotonic()
    table = [
        "| strategy | database | expected | racecheck: verdict | interleavings | exhausted "
        f"| seconds (median of {times}) | frontrun: verdict | interleavings | exhausted "
        "| seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with databases() as backends:
        for case in REFERENCE:
            for backend in case.backends:
                make, probe_for = backends[backend]
                db = make()
                case.schema(db)
                probe = probe_for(db)
                mine: list[tuple[str, int, Any, float]] = []
                theirs: list[tuple[str, int, Any, float]] = []
                for _ in range(times):
                    mine.append(ours(case, db, probe))
                    try:
                        theirs.append(frontrun_race(case, db))
                    except Exception as exc:  # a tool's refusal is a result too: record it
                        theirs.append((f"error: {type(exc).__name__}: {exc}"[:120], 0, None, 0.0))
                for p in getattr(probe, "probes", []):
                    if hasattr(p, "close"):
                        p.close()
                db.close()
                expected = "fail" if case.broken else "pass"
                table.append(
                    f"| {case.name} | {backend} | {expected} | "
                    + " | ".join([*summary(mine), *summary(theirs)])
                    + " |"
                )
                print(table[-1], flush=True)
    print("\n".join(["", *table]))
    print(
        f"\n{time.monotonic() - started:.0f} s in all; load average {os.getloadavg()[0]:.1f} "
        "at the end"
    )


if __name__ == "__main__":
    main()
