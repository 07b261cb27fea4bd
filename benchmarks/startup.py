"""Start-up of a race, with and without spare racers (docs/benchmarks.md, "Start-up").

    .venv/bin/python benchmarks/startup.py              # races only (about a minute)
    .venv/bin/python benchmarks/startup.py --examples   # also time `python3 dev.py examples`

Races go through the public ``run_race`` and the same spare pool the plugin uses. For each
size (8 and 2 racers, ``spawn``) and each setting (spares off, spares on): one race to start
the session, then ``--races`` 1-round races, each timed from the call to its return; the
median is printed. ``--gap`` seconds pass between races (a test's own fixtures and body; 0 is
races back to back, where a spare group has only the previous race's shutdown to start in).
The spares' memory is the sum of their resident sets (VmRSS) and of their proportional sets
(Pss, shared pages divided among the processes sharing them), from /proc, once they waited
``--gap`` seconds (at least 2) after a race.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pytest_racecheck import spares
from pytest_racecheck.race import run_race
from pytest_racecheck.spec import RaceSpec

ROOT = Path(__file__).resolve().parent.parent


def nothing() -> int:
    return 1


def race_times(processes: int, limit: int, races: int, gap: float) -> list[float]:
    spares.configure(limit)
    spares.end_all()
    spec = RaceSpec(fn=nothing, processes=processes, rounds=1, timeout=120)
    run_race(spec)  # the session's first race: nothing is ready yet
    times = []
    for _ in range(races):
        time.sleep(gap)
        started = time.perf_counter()
        result = run_race(spec)
        times.append(time.perf_counter() - started)
        assert len(result.rounds) == 1
    spares.end_all()
    return times


def _kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def spare_memory(processes: int, wait: float) -> tuple[int, float, float]:
    """(spares, sum of VmRSS MiB, sum of Pss MiB) of one group of ``processes`` spares."""
    spares.configure(1)
    spares.end_all()
    run_race(RaceSpec(fn=nothing, processes=processes, rounds=1, timeout=120))
    time.sleep(max(wait, 2.0))
    pids = spares.pool.pids("spawn", processes)
    rss = sum(_kib(p, "status", "VmRSS") for p in pids) / 1024
    pss = sum(_kib(p, "smaps_rollup", "Pss") for p in pids) / 1024
    spares.end_all()
    return len(pids), rss, pss


def examples_time(spares_option: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "examples", f"--racecheck-spares={spares_option}"],
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--races", type=int, default=9, help="timed races per figure")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between races")
    parser.add_argument("--examples", action="store_true", help="also time dev.py examples")
    parser.add_argument("--sizes", default="8,2")
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at start; gap {args.gap:g} s, "
        f"{args.races} races per figure"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for limit in (0, 1):
            times = race_times(size, limit, args.races, args.gap)
            print(
                f"{size} racers, spares {'on ' if limit else 'off'}: median "
                f"{statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f}, "
                f"max {max(times) * 1000:.0f}",
                flush=True,
            )
    for size in (int(s) for s in args.sizes.split(",")):
        n, rss, pss = spare_memory(size, args.gap)
        print(f"memory of {n} waiting spares: VmRSS {rss:.0f} MiB in all, Pss {pss:.0f} MiB")
    if args.examples:
        for option in ("0", "1"):
            print(f"dev.py examples --racecheck-spares={option}: {examples_time(option):.1f} s")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
