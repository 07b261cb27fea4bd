"""Start-up of a race through two popen execnet gateways beside one local host, and the release
skew each gives (docs/replica-gateways.md, docs/benchmarks.md).

    .venv/bin/python benchmarks/gateway_startup.py                 # 2 and 8 racers, 9 races
    .venv/bin/python benchmarks/gateway_startup.py --races 5 --sizes 8

Races go through the public ``run_race`` and the same pools the plugin uses. For each size and
each setting, one cold race first (the local racer hosts, or the gateways, their remote hosts
and their racer hosts, all ended before it, so nothing is ready), then ``--races`` 1-round races
back to back, each timed from the call to its return: median, min and max. Then one race of
``--rounds`` rounds of a function that does nothing: the release skew of its rounds (the spread
of the racers' release times, CLOCK_MONOTONIC, which one machine's popen gateways share),
median and 90th percentile. Settings:

- ``local``: ``replicas=1``, racers forked from this process's racer hosts (the default);
- ``2 popen gateways``: ``replicas=2`` with two ``popen`` gateways of this interpreter.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes import gateways, hosts

POPEN = f"popen//python={sys.executable}"


def nothing() -> int:
    return 1


def _race(processes: int, replicas: int, rounds: int = 1) -> tuple[float, list[int]]:
    began = time.monotonic()
    result = run_race(RaceSpec(fn=nothing, processes=processes, rounds=rounds, replicas=replicas))
    took = time.monotonic() - began
    expected = "gateways" if replicas > 1 else "hosted"
    assert result.racers == expected, result.racers
    return took, [r.release_skew_ns for r in result.rounds]


def _ms(values: list[float]) -> str:
    ms = [v * 1e3 for v in values]
    return f"median {statistics.median(ms):7.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f})"


def measure(processes: int, replicas: int, races: int, rounds: int) -> None:
    name = "local" if replicas == 1 else f"{replicas} popen gateways"
    hosts.end_all()
    gateways.pool.end_all()
    cold, _ = _race(processes, replicas)
    warm = [_race(processes, replicas)[0] for _ in range(races)]
    _, skews = _race(processes, replicas, rounds)
    us = sorted(s / 1e3 for s in skews)
    p90 = us[int(0.9 * (len(us) - 1))]
    print(f"{processes} racers, {name:18} cold {cold * 1e3:7.1f} ms   warm {_ms(warm)}")
    print(
        f"{'':10} {'':18} release skew over {len(us)} rounds: "
        f"median {statistics.median(us):.0f} us, p90 {p90:.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--races", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8])
    args = parser.parse_args()
    print(f"{platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    gateways.pool.configure([POPEN, POPEN])
    try:
        for processes in args.sizes:
            for replicas in (1, 2):
                measure(processes, replicas, args.races, args.rounds)
    finally:
        gateways.end_all()
        hosts.end_all()


if __name__ == "__main__":
    main()
