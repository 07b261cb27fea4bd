"""pytest-racecheck: cross-process race conditions, made testable."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from pytest_racecheck.backends.address import database
    from pytest_racecheck.backends.base import Database
    from pytest_racecheck.backends.postgres import PostgresDatabase, PostgresServer
    from pytest_racecheck.backends.sqlite import SqliteDatabase
    from pytest_racecheck.controller.errors import (
        RaceError,
        RaceNotForced,
        RacerDied,
        RacerSetupFailed,
        RaceStalled,
        RaceTimeout,
        ServerDied,
    )
    from pytest_racecheck.instrument.points import point
    from pytest_racecheck.plugin.race_fixture import Race, RaceResultNeverChecked
    from pytest_racecheck.processes.racer import current_racer
    from pytest_racecheck.results.result import RaceResult
    from pytest_racecheck.results.rounds import Round
    from pytest_racecheck.wire.isolation import (
        DeadlockDetected,
        RefusedByDatabase,
        SerializationFailure,
    )
    from pytest_racecheck.wire.outcome import Outcome, RaisedError

# Loaded on first use: helper processes that import a submodule (the PostgreSQL watchdog runs
# as ``python -I -m pytest_racecheck.backends.postgres.watchdog``) must not load the harness.
_HOMES = {
    "database": "backends.address",
    "Database": "backends.base",
    "PostgresDatabase": "backends.postgres",
    "SqliteDatabase": "backends.sqlite",
    "Race": "plugin.race_fixture",
    "RaceResultNeverChecked": "plugin.race_fixture",
    "PostgresServer": "backends.postgres",
    "RaceNotForced": "controller.errors",
    "DeadlockDetected": "wire.isolation",
    "RefusedByDatabase": "wire.isolation",
    "SerializationFailure": "wire.isolation",
    "Outcome": "wire.outcome",
    "RaceResult": "results.result",
    "RaisedError": "wire.outcome",
    "Round": "results.rounds",
    "point": "instrument.points",
    "RaceError": "controller.errors",
    "RacerDied": "controller.errors",
    "RacerSetupFailed": "controller.errors",
    "RaceStalled": "controller.errors",
    "RaceTimeout": "controller.errors",
    "ServerDied": "controller.errors",
    "current_racer": "processes.racer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Database",
    "DeadlockDetected",
    "Outcome",
    "PostgresDatabase",
    "PostgresServer",
    "Race",
    "RaceError",
    "RaceNotForced",
    "RaceResult",
    "RaceResultNeverChecked",
    "RaceStalled",
    "RaceTimeout",
    "RacerDied",
    "RacerSetupFailed",
    "RaisedError",
    "RefusedByDatabase",
    "Round",
    "SerializationFailure",
    "ServerDied",
    "SqliteDatabase",
    "current_racer",
    "database",
    "point",
]
