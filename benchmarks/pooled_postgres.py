"""A pooled PostgreSQL race beside a hand-written harness doing the same rounds: the figures of
docs/benchmarks.md, "A pooled PostgreSQL race beside a hand-written harness".

    .venv/bin/python benchmarks/pooled_postgres.py                    # 6 paired runs
    .venv/bin/python benchmarks/pooled_postgres.py --pairs 2 --rounds 100
    .venv/bin/python benchmarks/pooled_postgres.py --profile          # cProfile the controller

Both sides run the same rounds on one throwaway server: ``reset`` (``DELETE``) in the test
process, all racers released at once, each racer's call, ``check`` (a count) in the test
process. Each racer keeps a SQLAlchemy engine (its ``QueuePool``, one connection) across rounds
and starts one run with strategy A (a partial unique index, ``INSERT ... ON CONFLICT DO
NOTHING``). The plugin's race is set up as the ``race`` fixture sets it up on ``postgres_db``
(its probes, the server check after every round); the harness is ``multiprocessing`` processes
and a ``Barrier`` that the controller joins, results on a ``Queue``. Rounds per second are
counted from the end of the first round (its calls import SQLAlchemy and connect) to the end
of the last; the pairs alternate which side runs first.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_racecheck.backends import postgres as pg
from pytest_racecheck.backends.address import handles_in
from pytest_racecheck.controller.blocking import BackendProbe, ServerProbe, race_probe
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec

SCHEMA = """
CREATE TABLE runs (id serial PRIMARY KEY, status text NOT NULL);
CREATE UNIQUE INDEX one_running ON runs (status) WHERE status = 'running';
"""
START = (
    "INSERT INTO runs (status) VALUES ('running') "
    "ON CONFLICT (status) WHERE status = 'running' DO NOTHING RETURNING id"
)

_engine: Any = None


def start_run(url: str) -> str:
    """One racer's call: a connection from the racer's own pool, one transaction."""
    global _engine
    if _engine is None:
        import sqlalchemy

        _engine = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0)
    with _engine.begin() as conn:
        created = conn.exec_driver_sql(START).first()
    return "created" if created else "refused"


class Database:
    """The test process's side: reset and check on one kept connection."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.conn = db.connect()
        self.conn.autocommit = True

    def reset(self) -> None:
        self.conn.execute("DELETE FROM runs")

    def check(self) -> bool:
        row = self.conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()
        return row is not None and row[0] == 1


class Window:
    """From the end of the first round (whose calls import SQLAlchemy and connect: start-up,
    not rounds) to the end of the last."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.bad = 0

    def check(self, check: Callable[[], bool]) -> Callable[[], bool]:
        def timed() -> bool:
            ok = check()
            self.bad += not ok
            self.ends.append(time.perf_counter())
            return ok

        return timed

    def rate(self) -> float:
        return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


def plugin_side(
    server: pg.PostgresServer, where: Database, processes: int, rounds: int
) -> tuple[float, int]:
    """The race as the ``race`` fixture runs it on ``postgres_db``."""
    window = Window()
    url = where.db.url
    spec = RaceSpec(
        fn=start_run,
        args=(url,),
        processes=processes,
        rounds=rounds,
        timeout=600,
        reset=where.reset,
        check=window.check(where.check),
        # the fixture's per-round look: did the server die in this round?
        on_round=lambda result: server.server_died(),
    )
    registered = [ServerProbe(server.blocked_application_names), BackendProbe(where.db.connect)]
    probe, own = race_probe(registered, handles_in(spec.fn, spec.args, spec.kwargs))
    try:
        result = run_race(spec, probe)
    finally:
        own.close()
        registered[1].close()
    assert result.rounds_run == rounds
    return window.rate(), window.bad


def _harness_racer(url: str, barrier: Any, results: Any, rounds: int) -> None:
    for _ in range(rounds):
        barrier.wait()
        try:
            results.put(start_run(url))
        except Exception as exc:
            results.put(f"{type(exc).__name__}: {exc}")


def harness_side(where: Database, processes: int, rounds: int) -> tuple[float, int]:
    """The same rounds by hand: processes started ahead (spawn), a barrier, a queue."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    racers = [
        ctx.Process(target=_harness_racer, args=(where.db.url, barrier, results, rounds))
        for _ in range(processes)
    ]
    for racer in racers:
        racer.start()
    window = Window()
    reset, check = where.reset, window.check(where.check)
    try:
        for _ in range(rounds):
            reset()
            barrier.wait(timeout=60)
            outcomes = [results.get(timeout=60) for _ in range(processes)]
            if outcomes.count("created") != 1:
                window.bad += 1
            check()
    finally:
        for racer in racers:
            racer.join(10)
            if racer.is_alive():
                racer.kill()
                racer.join()
    return window.rate(), window.bad


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="cProfile one plugin race")
    args = parser.parse_args()
    bindir = pg.find_bindir(None)
    if bindir is None:
        print("no PostgreSQL server binaries: nothing to measure")
        return 1
    with (
        tempfile.TemporaryDirectory() as shared,
        pg.PostgresServer.throwaway(Path(shared), bindir) as server,
    ):
        db = server.create_database()
        db.executescript(SCHEMA)
        where = Database(db)
        try:
            if args.profile:
                profiler = cProfile.Profile()
                profiler.runcall(plugin_side, server, where, args.processes, args.rounds)
                stats = pstats.Stats(profiler).sort_stats("tottime")
                stats.print_stats(25)
                return 0
            print(
                f"{args.processes} racers, {args.rounds} rounds per side, "
                f"{args.pairs} pairs; Python {sys.version.split()[0]}"
            )
            ratios, plugin, harness = [], [], []
            for pair in range(args.pairs):
                sides = ["plugin", "harness"] if pair % 2 == 0 else ["harness", "plugin"]
                got: dict[str, float] = {}
                for side in sides:
                    if side == "plugin":
                        rate, bad = plugin_side(server, where, args.processes, args.rounds)
                    else:
                        rate, bad = harness_side(where, args.processes, args.rounds)
                    assert bad == 0, f"{side}: {bad} rounds broke strategy A"
                    got[side] = rate
                plugin.append(got["plugin"])
                harness.append(got["harness"])
                ratios.append(got["plugin"] / got["harness"])
                print(
                    f"pair {pair + 1}: plugin {got['plugin']:.0f} rounds/s, "
                    f"harness {got['harness']:.0f} rounds/s, "
                    f"ratio {ratios[-1]:.2f}"
                )
            print(
                f"median: plugin {statistics.median(plugin):.0f} rounds/s, harness "
                f"{statistics.median(harness):.0f} rounds/s, ratio "
                f"{statistics.median(ratios):.2f} (range {min(ratios):.2f} to "
                f"{max(ratios):.2f})"
            )
        finally:
            where.conn.close()
            server.drop_database(db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
