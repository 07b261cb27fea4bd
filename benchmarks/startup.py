"""Start-up of a race: racer hosts (the default), fresh racers, spares (docs/benchmarks.md).

    .venv/bin/python benchmarks/startup.py                    # every setting, gaps 0, 0.3, 3
    .venv/bin/python benchmarks/startup.py --gaps 0.3 --races 9
    .venv/bin/python benchmarks/startup.py --repeats 3 --races 3  # settings interleaved
    .venv/bin/python benchmarks/startup.py --examples         # also time `dev.py examples`

Races go through the public ``run_race`` and the same host and spare pools the plugin uses.
For each size (8 and 2 racers, ``spawn``), each gap and each setting: one race to start the
session (hosts and spares ended first, so nothing is ready), then ``--races`` 1-round races,
each timed from the call to its return; the median, min and max are printed. The gap is the
seconds between races (a test's own fixtures and body; 0 is races back to back). With
``--repeats N`` every (size, gap) runs the settings in turn N times (A, B, C, D, A, B, ...) and
pools each setting's races: the machine's load then weighs on every setting alike. The settings:

- ``defaults``: racers forked from racer hosts;
- ``defaults+spares``: the same with ``--racecheck-spares=1`` (spares serve fresh racers
  only, so this shows that turning them on costs the default nothing);
- ``fresh``: ``fresh_racers=True``, a new interpreter per racer per race (what every race
  did before hosts: the cold start);
- ``fresh+spares``: fresh racers with one spare group per size, used only once ready;
- ``replicas=2``: racers forked from racer hosts into two simulated hosts, made for the race
  (docs/replicas.md).

The memory of waiting hosts and spares is the sum of their resident sets (VmRSS) and of their
proportional sets (Pss, shared pages divided among the processes sharing them), from /proc,
2 s after a race.
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

from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes import hosts, spares

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = (
    ("defaults", False, 0, 1),
    ("defaults+spares", False, 1, 1),
    ("fresh", True, 0, 1),
    ("fresh+spares", True, 1, 1),
    ("replicas=2", False, 0, 2),
)
"""(name, fresh_racers, spare groups per size, replicas)."""


def nothing() -> int:
    return 1


def _end_all() -> None:
    spares.end_all()
    hosts.end_all()


def race_times(
    processes: int, fresh: bool, limit: int, races: int, gap: float, replicas: int = 1
) -> list[float]:
    """The timed races of one session; the spare pool's counts are in ``spares.pool.stats``."""
    spares.configure(limit)
    _end_all()
    spares.pool.stats = spares.PoolStats()
    spec = RaceSpec(
        fn=nothing,
        processes=processes,
        rounds=1,
        timeout=120,
        fresh_racers=fresh,
        replicas=replicas,
    )
    run_race(spec)  # the session's first race: nothing is ready yet
    times = []
    for _ in range(races):
        time.sleep(gap)
        started = time.perf_counter()
        result = run_race(spec)
        times.append(time.perf_counter() - started)
        assert len(result.rounds) == 1
    _end_all()
    return times


def _kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _memory(pids: list[int]) -> tuple[int, float, float]:
    rss = sum(_kib(p, "status", "VmRSS") for p in pids) / 1024
    pss = sum(_kib(p, "smaps_rollup", "Pss") for p in pids) / 1024
    return len(pids), rss, pss


def waiting_memory(processes: int, fresh: bool) -> tuple[int, float, float]:
    """(processes, sum of VmRSS MiB, sum of Pss MiB) of the hosts, or of one spare group,
    waiting after a race of ``processes`` racers."""
    spares.configure(1 if fresh else 0)
    _end_all()
    run_race(RaceSpec(fn=nothing, processes=processes, rounds=1, timeout=120, fresh_racers=fresh))
    time.sleep(2.0)
    found = _memory(spares.pool.pids("spawn", processes) if fresh else hosts.pool.pids())
    _end_all()
    return found


def examples_time(*options: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "examples", *options],
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--races", type=int, default=7, help="timed races per session")
    parser.add_argument(
        "--repeats", type=int, default=1, help="sessions per setting, the settings in turn"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figures")
    parser.add_argument("--gaps", default="0,0.3,3", help="seconds between races, a list")
    parser.add_argument("--sizes", default="8,2")
    parser.add_argument("--settings", default=",".join(s[0] for s in SETTINGS))
    parser.add_argument("--examples", action="store_true", help="also time dev.py examples")
    args = parser.parse_args()
    chosen = [s for s in SETTINGS if s[0] in args.settings.split(",")]
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at start; {args.repeats} x {args.races} races "
        "per figure"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for gap in (float(g) for g in args.gaps.split(",")):
            times: dict[str, list[float]] = {name: [] for name, *_ in chosen}
            used: dict[str, list[int]] = {name: [0, 0, 0] for name, *_ in chosen}
            for _ in range(args.repeats):
                for name, fresh, limit, replicas in chosen:
                    times[name] += race_times(size, fresh, limit, args.races, gap, replicas)
                    counts = spares.pool.stats
                    for i, n in enumerate((counts.started, counts.used, counts.discarded)):
                        used[name][i] += n
            for name, found in times.items():
                started, taken, discarded = used[name]
                print(
                    f"{size} racers, gap {gap:g} s, {name}: median "
                    f"{statistics.median(found) * 1000:.0f} ms, min {min(found) * 1000:.0f}, "
                    f"max {max(found) * 1000:.0f}, {len(found)} races; spare groups "
                    f"{started} started, {taken} used, {discarded} discarded "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    for size in (int(s) for s in args.sizes.split(",")) if not args.no_memory else ():
        for what, fresh in (("hosts", False), ("spares", True)):
            n, rss, pss = waiting_memory(size, fresh)
            print(f"memory of {n} waiting {what}: VmRSS {rss:.0f} MiB in all, Pss {pss:.0f} MiB")
    if args.examples:
        for options in ((), ("--racecheck-fresh-racers",)):
            print(f"dev.py examples {' '.join(options)}: {examples_time(*options):.1f} s")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
