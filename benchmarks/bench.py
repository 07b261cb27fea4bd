"""Measure pytest-racecheck's speed: the figures in docs/benchmarks.md.

    .venv/bin/python benchmarks/bench.py            # everything, about two minutes
    .venv/bin/python benchmarks/bench.py --quick    # fewer rounds

Prints one line per figure. PostgreSQL figures need the server binaries (or
RACECHECK_POSTGRES_URL); they are skipped otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_racecheck import point, runs
from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.controller.blocking import AnyProbe, ServerProbe, SqliteLockProbe
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes import spares
from pytest_racecheck.results.result import RaceResult


def noop() -> int:
    return 1


def rss_mib() -> float:
    """This process's resident memory (Linux), as a racer sees it from inside."""
    with open("/proc/self/status") as status:
        line = next(ln for ln in status if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def race(
    db: Database | None, fn: Callable[..., Any], rounds: int, probe: Any = None, **kwargs: Any
) -> RaceResult:
    args = (db,) if db is not None else ()
    spec = RaceSpec(
        fn=fn,
        args=args,
        processes=8,
        rounds=rounds,
        timeout=300,
        reset=(lambda: runs.reset(db)) if db is not None else None,
        check=(lambda: runs.active_count(db) == 1) if db is not None else None,
        **kwargs,
    )
    result = run_race(spec, probe=probe)
    if db is not None:
        result.assert_exactly_one(runs.CREATED)
    return result


def per_round_ms(result: RaceResult) -> float:
    return (result.elapsed_s - result.startup_s) / len(result.rounds) * 1000


@contextmanager
def postgres() -> Iterator[Any]:
    from pytest_racecheck.backends import postgres as pg

    url = os.environ.get("RACECHECK_POSTGRES_URL")
    with tempfile.TemporaryDirectory() as shared:
        if url:
            provider = pg.PostgresServer.external(url)
        else:
            bindir = pg.find_bindir(None)
            if bindir is None:
                yield None
                return
            started = time.perf_counter()
            provider = pg.PostgresServer.throwaway(Path(shared), bindir, watchdog=True)
            print(f"postgres server start-up: {time.perf_counter() - started:.2f} s")
        try:
            yield provider
        finally:
            provider.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--spares", type=int, default=0, help="spare groups kept (default 0)")
    options = parser.parse_args()
    rounds = 60 if options.quick else 300
    # The races here run back to back: spares started after one race would boot during the
    # next one's rounds and measure the machine's start-up, not the harness.
    spares.configure(options.spares)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )

    loops = 1_000_000
    cost = timeit.timeit(lambda: point("checked"), number=loops) / loops
    base = timeit.timeit(lambda: None, number=loops) / loops
    print(f"point() outside a race: {(cost - base) * 1e9:.0f} ns per call (call overhead removed)")

    sizes = [o.value for o in race(None, rss_mib, 3).rounds[-1].outcomes]
    print(
        f"memory: each racer {statistics.median(sizes):.0f} MiB resident (median of 8), "
        f"the controller (this process) {rss_mib():.0f} MiB"
    )

    bare = race(None, noop, rounds)
    print(f"8 racers start-up (spawn, to first release): {bare.startup_s:.2f} s")
    skews = [s / 1000 for s in bare.release_skews_ns]
    print(
        f"empty rounds: {1000 / per_round_ms(bare):.0f} rounds/s; release skew across 8 racers "
        f"p50 {percentile(skews, 0.5):.0f} us, p99 {percentile(skews, 0.99):.0f} us"
    )

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteDatabase.create(Path(tmp) / "bench.sqlite3")
        probe = AnyProbe([SqliteLockProbe(sqlite.path)])
        bench_db("sqlite", sqlite, rounds, probe)
        sqlite.close()

    with postgres() as provider:
        if provider is None:
            print("postgres: skipped, no server binaries")
            return
        times = []
        for _ in range(20):
            started = time.perf_counter()
            db = provider.create_database()
            times.append((time.perf_counter() - started) * 1000)
            provider.drop_database(db)
        print(
            f"postgres database per test: median {statistics.median(times):.1f} ms, "
            f"max {max(times):.1f} ms (20 created and dropped)"
        )
        db = provider.create_database()
        probe = AnyProbe([ServerProbe(provider.blocked_application_names)])
        bench_db("postgres", db, rounds, probe)
        provider.drop_database(db)


def bench_db(name: str, db: Database, rounds: int, probe: Any) -> None:
    strategies = [
        ("A", runs.A, True),
        ("B", runs.B, False),
        ("C", runs.C, False),
        ("lease", runs.lease, False),
    ]
    for label, fn, unique in strategies:
        runs.create_schema(db, unique_active=unique)
        free = race(db, fn, rounds, probe)
        met = race(db, fn, max(rounds // 3, 20), probe, meet_at="checked")
        skews = [s / 1000 for s in free.release_skews_ns]
        print(
            f"{name} {label}: {1000 / per_round_ms(free):.0f} rounds/s with 8 racers "
            f"(skew p50 {percentile(skews, 0.5):.0f} us, p99 {percentile(skews, 0.99):.0f} us); "
            f"meet_at='checked' adds {per_round_ms(met) - per_round_ms(free):.1f} ms per round"
        )


if __name__ == "__main__":
    main()
