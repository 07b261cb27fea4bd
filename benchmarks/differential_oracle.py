"""The differential oracle of explore's reduced search, on real SQLite and PostgreSQL.

    .venv/bin/python benchmarks/differential_oracle.py [--programs 500] [--backends sqlite,postgres]
        [--families plain,view,...] [--search reduced|blind] [--first-seed 0] [--show 3]

For each database, ``--programs`` programs of ``tests/oracle/programs.py`` (the families in
turn: program i is family i mod F, seed i div F), each raced twice on the same database: under
explore's reduced search and under the full enumeration of its interleavings (one racer at a
time). A mismatch is an outcome set (every racer's return value, and the tables and marker
files the round left) that the full enumeration reached and the reduced search did not. A
program where either search was not exhausted is skipped, not counted as a pass.
``--search blind`` replaces the reduced search by one told that nothing conflicts: the
oracle's own check that it can fail.

Prints a Markdown table per database (programs run, skipped, mismatches, seconds, per family)
and the first ``--show`` mismatching programs of each family.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from oracle.programs import MAX_ORDERS, create_schema, families, generate  # noqa: E402  # pyright: ignore[reportMissingImports]
from oracle.runner import Verdict, compare  # noqa: E402  # pyright: ignore[reportMissingImports]

from pytest_racecheck.backends.sqlite import SqliteDatabase  # noqa: E402


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[Any]:
    """A fresh database of ``backend`` with the oracle's schema, removed afterwards."""
    if backend == "sqlite":
        db = SqliteDatabase.create(tmp / "oracle.sqlite3")
        create_schema(db)
        yield db
        return
    from pytest_racecheck.backends import postgres

    if os.environ.get("RACECHECK_POSTGRES_URL"):
        server = postgres.PostgresServer.external(os.environ["RACECHECK_POSTGRES_URL"])
    else:
        bindir = postgres.find_bindir(None)
        if bindir is None:
            raise SystemExit("no PostgreSQL binaries found: set RACECHECK_POSTGRES_URL")
        server = postgres.PostgresServer.throwaway(tmp, bindir)
    try:
        db = server.create_database()
        try:
            create_schema(db)
            yield db
        finally:
            server.drop_database(db)
    finally:
        server.close()


def run_backend(
    backend: str,
    count: int,
    chosen: list[str],
    searches: tuple[str, ...],
    first_seed: int,
    max_orders: int,
    on_verdict: Callable[[Verdict, float], None],
) -> None:
    names = [f for f in families(backend) if f in chosen]
    with tempfile.TemporaryDirectory(prefix="racecheck-oracle-") as tmp:
        workdir = Path(tmp, "files")
        workdir.mkdir()
        with database(backend, Path(tmp)) as db:
            for i in range(count):
                family, seed = names[i % len(names)], first_seed + i // len(names)
                program = generate(family, backend, seed, max_orders)
                started = time.monotonic()
                verdict = compare(program, db, str(workdir), searches)
                on_verdict(verdict, time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--programs", type=int, default=500, help="programs per database")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--families", default=",".join(families("postgres")))
    parser.add_argument("--search", choices=("reduced", "blind"), default="reduced")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--max-orders",
        type=int,
        default=MAX_ORDERS,
        help="at most this many interleavings a program (the suite's programs: 35)",
    )
    parser.add_argument("--show", type=int, default=2, help="mismatching programs shown a family")
    parser.add_argument(
        "--repeat-full",
        action="store_true",
        help="run the full enumeration twice per program and count programs whose two runs "
        "reached different sets (timing-dependent programs)",
    )
    args = parser.parse_args()
    chosen = args.families.split(",")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start; "
        f"search {args.search} against the full enumeration, {args.programs} programs a "
        f"database, seeds from {args.first_seed}",
        flush=True,
    )
    for backend in args.backends.split(","):
        bench(backend, args, chosen)


def bench(backend: str, args: argparse.Namespace, chosen: list[str]) -> None:
    """Race ``args.programs`` programs on one database and print its table."""
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    shown: dict[str, int] = defaultdict(int)
    examples: list[str] = []
    started = time.monotonic()

    def on_verdict(verdict: Verdict, seconds: float) -> None:
        family = verdict.program.family
        row = stats[family]
        row["programs"] += 1
        row["seconds"] += seconds
        row["reduced rounds"] += verdict.runs[verdict.reduced].rounds
        row["full rounds"] += verdict.runs["full"].rounds
        if verdict.unstable:
            row["unstable"] += 1
            examples.append("UNSTABLE " + verdict.explain())
        if verdict.skipped:
            row["skipped"] += 1
        elif verdict.mismatch:
            row["mismatches"] += 1
            if shown[family] < args.show:
                shown[family] += 1
                examples.append(verdict.explain())
        status = "skipped" if verdict.skipped else "MISMATCH" if verdict.mismatch else "ok"
        status += " UNSTABLE" if verdict.unstable else ""
        print(
            f"  {backend} {family} seed {verdict.program.seed}: {status} ({seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    searches = (args.search, "full", *(("full#2",) if args.repeat_full else ()))
    run_backend(
        backend, args.programs, chosen, searches, args.first_seed, args.max_orders, on_verdict
    )
    total = time.monotonic() - started
    print(f"\n### {backend}: {args.programs} programs in {total:.0f} s\n")
    print(
        "| family | programs | skipped | mismatches | reduced rounds | full rounds "
        "| seconds |" + (" full twice, unequal |" if args.repeat_full else "")
    )
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if args.repeat_full else ""))
    sums: dict[str, float] = defaultdict(float)
    for family, row in stats.items():
        for key, value in row.items():
            sums[key] += value
        print(
            f"| {family} | {row['programs']:.0f} | {row['skipped']:.0f} "
            f"| {row['mismatches']:.0f} | {row['reduced rounds']:.0f} "
            f"| {row['full rounds']:.0f} | {row['seconds']:.0f} |"
            + (f" {row['unstable']:.0f} |" if args.repeat_full else "")
        )
    print(
        f"| all | {sums['programs']:.0f} | {sums['skipped']:.0f} | {sums['mismatches']:.0f} "
        f"| {sums['reduced rounds']:.0f} | {sums['full rounds']:.0f} "
        f"| {sums['seconds']:.0f} |" + (f" {sums['unstable']:.0f} |" if args.repeat_full else "")
    )
    if examples:
        print(f"\nmismatching programs ({backend}, the first {args.show} of each family):\n")
        print("```")
        print("\n".join(examples))
        print("```")


if __name__ == "__main__":
    main()
