"""pytest-racecheck: cross-process race conditions, made testable."""

from pytest_racecheck.outcomes import Outcome, RaceResult, RaisedError, Round
from pytest_racecheck.points import point
from pytest_racecheck.race import RaceError, RacerDied, RacerSetupFailed, RaceTimeout
from pytest_racecheck.racer import current_racer

__all__ = [
    "Outcome",
    "RaceError",
    "RaceResult",
    "RaceTimeout",
    "RacerDied",
    "RacerSetupFailed",
    "RaisedError",
    "Round",
    "current_racer",
    "point",
]
