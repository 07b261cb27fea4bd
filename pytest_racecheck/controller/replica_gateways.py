"""Whether a race runs its racers on execnet gateways, and what such a race refuses.

A race with ``replicas=N > 1`` runs on the first ``N`` gateways of
``--racecheck-replica-gateways`` (:mod:`pytest_racecheck.processes.gateways`) when that option
is given, and on simulated hosts of this machine otherwise
(:mod:`pytest_racecheck.controller.replicas`). What needs the
racers on this machine is refused before any racer starts, with the reason:

- ``clock="virtual"``: the clock is a memory-mapped file every racer shares;
- a SQLite database with an ``ssh`` gateway: a SQLite file is one database only for processes
  that share its filesystem (``popen`` gateways share this machine's);
- a SQLite database with sync points, a schedule or explore: telling that a racer waits for
  SQLite's lock means reading its ``/proc`` entry, which is on the gateway's machine.
"""

from __future__ import annotations

from pytest_racecheck.controller.catalogs import race_databases
from pytest_racecheck.controller.errors import RaceError
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes.gateways import OPTION, is_local
from pytest_racecheck.processes.gateways import pool as gateway_pool
from pytest_racecheck.results.result import RaceResult


def on_gateways(spec: RaceSpec, result: RaceResult) -> bool:
    """True when the race's racers run on gateways; RaceError when it cannot run as asked."""
    if spec.replicas <= 1 or not gateway_pool.specs:
        return False  # one host, or simulated hosts
    where = f"race of {spec.fn_name} with replicas={spec.replicas}"
    try:
        gateway_pool.check(spec.replicas)
    except ValueError as exc:
        raise RaceError(f"{where}: {exc}", result) from None
    why = refusal(spec, gateway_pool.specs[: spec.replicas])
    if why is not None:
        raise RaceError(f"{where} on {OPTION}: {why}", result)
    return True


def refusal(spec: RaceSpec, specs: list[str]) -> str | None:
    """Why the race cannot run on these gateways, or None."""
    if spec.clock == "virtual":
        return (
            "clock='virtual' is a memory-mapped file of this machine that every racer "
            "shares; racers on gateways cannot map it. Use the real clock"
        )
    if not any(db.backend == "sqlite" for db in race_databases(spec)):
        return None
    remote = [s for s in specs if not is_local(s)]
    if remote:
        return (
            f"a SQLite database is one file, shared only by processes on one filesystem; "
            f"{remote[0]} is another machine. Race PostgreSQL (RACECHECK_POSTGRES_URL) there"
        )
    if spec.mode != "stress":
        return (
            f"{spec.mode} needs to tell a racer that waits for SQLite's lock, which the "
            "controller reads from the racer's /proc entry, on the gateway's machine. Race "
            "SQLite on gateways in stress rounds, or PostgreSQL (its server tells lock waits)"
        )
    return None
