"""A race's settings: one frozen dataclass holds the defaults, one function validates them.

The plugin fills a :class:`RaceSettings` from the ini file, the command line and the
``race`` marker; ``race()`` arguments override it;
:class:`~pytest_racecheck.controller.spec.RaceSpec` takes its defaults from it. Keeping the
defaults and the rules here means the four places agree by construction.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import multiprocess as _multiprocess

from pytest_racecheck.clock.control import validate_clock
from pytest_racecheck.processes.hosts import HOST_CAPACITY
from pytest_racecheck.wire.isolation import level_name

multiprocess: Any = _multiprocess  # an untyped package
START_METHODS = ("spawn", "fork", "forkserver")
MAX_EXPLORE_RACERS = 8


@dataclass(frozen=True)
class RaceSettings:
    """What a race may be told from outside its call: marker, command line, ini."""

    processes: int = 4
    rounds: int = 50
    timeout: float = 60.0
    start_method: str = "spawn"
    explore: int | None = None
    """Interleavings to explore, one per round; None runs plain stress rounds."""
    seed: int | None = None
    """Seed of the explorer's random choices; None picks one and reports it."""
    clock: str = "real"
    """The racers' clock: "real", or "virtual" (see :mod:`pytest_racecheck.clock.control`)."""
    stall_timeout: float = 10.0
    """Seconds start-up or a round may go without progress (no racer sent a message, ran a
    statement or used CPU) before the race fails as hung; ``timeout`` stays the outer bound."""
    fresh_racers: bool = False
    """Spawn a fresh interpreter for every racer of every race, instead of forking racers
    from the session's racer hosts (``spawn`` only: see :mod:`pytest_racecheck.processes.hosts`)."""

    isolation: str | None = None
    """The isolation level of every transaction the racers begin on the race's PostgreSQL
    database without naming one (see :mod:`pytest_racecheck.controller.isolation`); None
    leaves the database's own default."""
    replicas: int = 1
    """Hosts the racers are spread over (racer ``i`` on host ``i mod replicas``); 1 runs them
    on this one. Simulated hosts of this machine, each with its own hostname, process IDs,
    ``/tmp``, ``/var/tmp``, ``/run`` and ``/dev/shm`` (see
    :mod:`pytest_racecheck.processes.replicas`); with ``--racecheck-replica-gateways``, that
    many execnet gateways (see :mod:`pytest_racecheck.processes.gateways`)."""
    host_paths: tuple[str, ...] = ()
    """More paths each simulated host has its own of (absolute; no effect with one host)."""

    def replace(self, **changes: Any) -> RaceSettings:
        """A copy with ``changes`` applied; None values are ignored (not given)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULTS = RaceSettings()
NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RaceSettings))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_settings(settings: RaceSettings, where: str = "race()") -> None:
    """Raise TypeError or ValueError naming the bad setting and how to fix it.

    ``where`` names what the user set, and starts the message: ``race()`` for the call's
    arguments, the option (``--racecheck-processes=1``), the ini key or the marker otherwise.
    """
    for name in ("processes", "rounds"):
        value = getattr(settings, name)
        if not _is_int(value):
            raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if settings.processes < 2:
        raise ValueError(
            f"{where}: processes must be at least 2 (a race needs two racers), "
            f"got {settings.processes}"
        )
    if settings.rounds < 1:
        raise ValueError(f"{where}: rounds must be at least 1, got {settings.rounds}")
    timeout = settings.timeout
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"{where}: timeout must be a number of seconds, got {timeout!r}")
    if not timeout > 0:
        raise ValueError(f"{where}: timeout must be more than 0 seconds, got {timeout!r}")
    available = multiprocess.get_all_start_methods()
    if settings.start_method not in START_METHODS or settings.start_method not in available:
        raise ValueError(
            f"{where}: unknown start method {settings.start_method!r}: use one of "
            f"{', '.join(m for m in START_METHODS if m in available)}"
        )
    stall = settings.stall_timeout
    if not isinstance(stall, (int, float)) or isinstance(stall, bool):
        raise TypeError(f"{where}: stall_timeout must be a number of seconds, got {stall!r}")
    if not stall > 0:
        raise ValueError(f"{where}: stall_timeout must be more than 0 seconds, got {stall!r}")
    if settings.explore is not None:
        if not _is_int(settings.explore):
            raise TypeError(
                f"{where}: explore must be an int (interleavings to try), got {settings.explore!r}"
            )
        if settings.explore < 1:
            raise ValueError(f"{where}: explore must be at least 1, got {settings.explore}")
        if settings.processes > MAX_EXPLORE_RACERS:
            raise ValueError(
                f"{where}: explore works with 2 to {MAX_EXPLORE_RACERS} racers, "
                f"got processes={settings.processes}"
            )
    if not isinstance(settings.fresh_racers, bool):
        raise TypeError(
            f"{where}: fresh_racers must be True or False, got {settings.fresh_racers!r}"
        )
    if settings.seed is not None and not _is_int(settings.seed):
        raise TypeError(f"{where}: seed must be an int, got {settings.seed!r}")
    validate_clock(settings.clock, where)
    _validate_replicas(settings, where)
    if settings.isolation is not None:
        level_name(settings.isolation, where)


def host_paths(value: Any) -> tuple[str, ...]:
    """``host_paths`` as a tuple of path strings (any sequence of str or PathLike)."""
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
        return (value,)  # type: ignore[return-value]  # validation names it
    return tuple(os.fspath(p) if isinstance(p, os.PathLike) else p for p in value)


def _validate_replicas(settings: RaceSettings, where: str) -> None:
    replicas = settings.replicas
    if not _is_int(replicas):
        raise TypeError(f"{where}: replicas must be an int (simulated hosts), got {replicas!r}")
    if replicas < 1:
        raise ValueError(f"{where}: replicas must be at least 1, got {replicas}")
    if replicas > settings.processes:
        raise ValueError(
            f"{where}: replicas={replicas} is more hosts than racers (processes="
            f"{settings.processes}): a host without a racer races nothing"
        )
    if replicas > 1 and (settings.start_method != "spawn" or settings.fresh_racers):
        raise ValueError(
            f"{where}: replicas= forks each racer into its host from the session's racer "
            f"hosts: it needs start_method='spawn' and fresh_racers=False"
        )
    if replicas > 1 and settings.processes > HOST_CAPACITY:
        raise ValueError(
            f"{where}: replicas= works with at most {HOST_CAPACITY} racers, "
            f"got processes={settings.processes}"
        )
    paths = host_paths(settings.host_paths)
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path) or path.rstrip("/") == "":
            raise ValueError(
                f"{where}: host_paths takes absolute directory paths (each host gets its own "
                f"empty one), got {path!r}"
            )
