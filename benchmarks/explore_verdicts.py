"""Explore mode measured: verdicts repeated, interleavings per second, time to the first failure.

    .venv/bin/python benchmarks/explore_verdicts.py [times]      # default 20

For every strategy of ``pytest_racecheck.runs`` and of both example stories (the run manager,
the groomer's lease), on SQLite and on PostgreSQL: ``explore=50`` with 2 racers and no points
at all (each racer switches the code's own ``point()`` calls off in its ``racer_setup``), run
``times`` times. A broken strategy must fail every time, a correct one pass every time.

Then, for the broken ones, how soon each way finds the bug: the first failing interleaving
under explore, against plain stress rounds (2 racers, released together, stopped at the first
failing round, at most 2000 rounds). Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_racecheck import runs
from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.controller.blocking import race_probe
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.explore.choose import unreduced
from pytest_racecheck.results.result import RaceResult
from pytest_racecheck.results.rounds import Round

ROOT = Path(__file__).resolve().parent.parent
for example in ("run_manager", "groomer_lock"):
    sys.path.insert(0, str(ROOT / "examples" / example))

import groomer  # noqa: E402  # pyright: ignore[reportMissingImports]
import run_manager  # noqa: E402  # pyright: ignore[reportMissingImports]


def statements_only() -> None:
    """racer_setup: no user point anywhere; the SQL statements alone drive the explorer."""
    noop = lambda name: None  # noqa: E731
    runs.point = runs.broken.point = noop  # type: ignore[assignment]
    run_manager.point = noop  # type: ignore[assignment]
    groomer.point = noop  # type: ignore[assignment]


def manager_attempt(cls: Any, path: str) -> str:
    try:
        cls(path).start_run()
        return "created"
    except run_manager.RunAlreadyActive:
        return "refused"


class Case:
    """One strategy: how to set up, race and judge it."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        broken: bool,
        *,
        args: Callable[[Database], tuple[Any, ...]] = lambda db: (db,),
        schema: Callable[[Database], None] = lambda db: runs.create_schema(db),
        reset: Callable[[Database], Any] = runs.reset,
        check: Callable[[Database], Any] = lambda db: runs.active_count(db) == 1,
        judge: Callable[[Round], bool] | None = None,
        backends: tuple[str, ...] = ("sqlite", "postgres"),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.fn, self.broken = name, fn, broken
        self.args, self.schema, self.reset, self.check = args, schema, reset, check
        self.judge = judge or (lambda r: r.count(runs.CREATED) == 1 and not r.failed_plainly)
        self.backends, self.kwargs = backends, kwargs or {}

    def failed(self, result: RaceResult) -> list[int]:
        return [r.index for r in result.rounds if not self.judge(r)]


def manager_case(label: str, cls: Any, broken: bool, unique: bool = False) -> Case:
    def schema(db: Database) -> None:
        db.executescript(run_manager.SCHEMA)
        if unique:
            db.execute(run_manager.UNIQUE_ACTIVE)

    return Case(
        f"run_manager {label}",
        manager_attempt,
        broken,
        args=lambda db: (cls, db.path),  # type: ignore[attr-defined]
        schema=schema,
        reset=lambda db: db.execute("DELETE FROM runs"),
        check=lambda db: db.scalar("SELECT count(*) FROM runs WHERE status='running'") == 1,
        backends=("sqlite",),
    )


def groomer_case(label: str, fn: Any, broken: bool) -> Case:
    return Case(
        f"groomer {label}",
        fn,
        broken,
        schema=groomer.create_schema,
        reset=groomer.reset,
        check=lambda db: not groomer.groomed_twice(db),
        judge=lambda r: not r.failed_plainly,
    )


PG = ("postgres",)
CASES = [
    Case("runs.naive", runs.naive, True),
    Case("runs.in_process_lock", runs.in_process_lock, True),
    Case("runs.lease_as_first_written", runs.lease_as_first_written, True),
    Case(
        "runs.A catch", runs.A, False, schema=lambda db: runs.create_schema(db, unique_active=True)
    ),
    Case(
        "runs.A upsert",
        runs.A,
        False,
        schema=lambda db: runs.create_schema(db, unique_active=True),
        kwargs={"form": "upsert"},
    ),
    Case("runs.B", runs.B, False),
    Case("runs.B lock_table", runs.B, False, kwargs={"form": "lock_table"}, backends=PG),
    Case("runs.B advisory", runs.B, False, kwargs={"form": "advisory"}, backends=PG),
    Case(
        "runs.B serializable",
        runs.B,
        False,
        kwargs={"form": "serializable"},
        backends=("postgres",),
    ),
    Case("runs.C", runs.C, False),
    Case("runs.lease", runs.lease, False),
    manager_case("original", run_manager.RunManager, True),
    manager_case("A", run_manager.RunManagerA, False, unique=True),
    manager_case("B", run_manager.RunManagerB, False),
    manager_case("C", run_manager.RunManagerC, False),
    groomer_case("as first written", groomer.run_groomer_as_first_written, True),
    groomer_case("corrected", groomer.run_groomer, False),
]


@contextmanager
def databases() -> Iterator[dict[str, tuple[Callable[[], Database], Callable[..., Any]]]]:
    """Per backend: make a fresh database, and the probe for it."""
    made: dict[str, tuple[Callable[[], Database], Callable[..., Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def sqlite() -> Database:
            return SqliteDatabase.create(Path(tmp) / f"db{next(counter)}.sqlite3")

        made["sqlite"] = (
            sqlite,
            lambda db: race_probe([], [db])[0],
        )
        provider = None
        try:
            from pytest_racecheck.backends import postgres

            bindir = postgres.find_bindir(None)
            if os.environ.get("RACECHECK_POSTGRES_URL"):
                provider = postgres.PostgresServer.external(os.environ["RACECHECK_POSTGRES_URL"])
            elif bindir is not None:
                provider = postgres.PostgresServer.throwaway(Path(tmp), bindir)
        except Exception as exc:  # PostgreSQL is optional here: say so and go on
            print(f"PostgreSQL left out: {exc}", file=sys.stderr)
        if provider is not None:
            pg = provider
            made["postgres"] = (
                pg.create_database,
                lambda db: race_probe([], [db])[0],
            )
        try:
            yield made
        finally:
            if provider is not None:
                provider.close()


def race(
    case: Case,
    db: Database,
    probe: Any,
    *,
    processes: int = 2,
    reduce: bool = True,
    **how: Any,
) -> RaceResult:
    """One race of ``case`` with every user point off; ``how`` is explore=, rounds= and such;
    ``reduce=False`` explores it with the unreduced search (:func:`unreduced`)."""
    spec = RaceSpec(
        fn=case.fn,
        args=case.args(db),
        kwargs=case.kwargs,
        processes=processes,
        timeout=300,
        reset=lambda: case.reset(db),
        check=lambda: case.check(db),
        racer_setup=statements_only,
        **how,
    )
    with contextlib.nullcontext() if reduce else unreduced():
        return run_race(spec, probe=probe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "times", nargs="?", type=int, default=20, help="races per strategy and database"
    )
    times = parser.parse_args().times
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    verdicts: list[str] = [
        f"| strategy | database | expected | verdicts (of {times}) | interleavings run | "
        "exhausted | first failing interleaving | interleavings/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    speed: list[str] = [
        "| bug | database | explore: first failing interleaving | explore: seconds to it | "
        "stress: first failing round (median, max of 5) | stress: seconds to it (median) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with databases() as backends:
        for case in CASES:
            for backend in case.backends:
                if backend not in backends:
                    continue
                make, probe_for = backends[backend]
                db = make()
                case.schema(db)
                probe = probe_for(db)
                right, rounds, exhausted, first, rates = 0, [], 0, [], []
                for _ in range(times):
                    started = time.monotonic()
                    result = race(case, db, probe, explore=50, seed=1)
                    bad = case.failed(result)
                    right += bool(bad) == case.broken
                    rounds.append(len(result.rounds))
                    exhausted += result.exhausted
                    if bad:
                        first.append(bad[0])
                    run_s = time.monotonic() - started - result.startup_s
                    rates.append(len(result.rounds) / run_s)
                verdicts.append(
                    f"| {case.name} | {backend} | {'fail' if case.broken else 'pass'} | "
                    f"{right}/{times} right | {min(rounds)}-{max(rounds)} | "
                    f"{exhausted}/{times} | {min(first) if first else '-'} | "
                    f"{statistics.median(rates):.0f} |"
                )
                print(verdicts[-1], flush=True)
                if case.broken:
                    speed.append(stress_row(case, backend, db, probe))
                    print(speed[-1], flush=True)
                for p in getattr(probe, "probes", []):
                    if hasattr(p, "close"):
                        p.close()
                db.close()
    print("\n".join(["", *verdicts, "", *speed]))


def stress_row(case: Case, backend: str, db: Database, probe: Any) -> str:
    explored = race(case, db, probe, explore=50, seed=1, stop_early=True)
    first = case.failed(explored)
    explore_s = explored.elapsed_s - explored.startup_s
    found, seconds = [], []
    for _ in range(5):
        result = race(case, db, probe, rounds=2000, stop_early=True)
        bad = case.failed(result)
        found.append(bad[0] if bad else 2001)
        seconds.append(result.elapsed_s - result.startup_s)
    never = sum(1 for f in found if f > 2000)
    stress_first = f"{statistics.median(found):.0f}, {max(found)}" + (
        f" ({never} of 5 never failed in 2000)" if never else ""
    )
    return (
        f"| {case.name} | {backend} | {first[0] if first else 'none'} | {explore_s:.2f} | "
        f"{stress_first} | {statistics.median(seconds):.2f} |"
    )


if __name__ == "__main__":
    main()
