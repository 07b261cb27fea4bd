"""How a race breaks down, as the user sees it: one exception class per cause.

Each carries the rounds that completed before the breakdown (``result``), so a report can show
them.
"""

from __future__ import annotations

import signal

from pytest_racecheck.results.result import RaceResult


class RaceError(Exception):
    """The race itself broke down: a racer died, hung, or could not start.

    ``result`` holds the rounds that completed before the breakdown.
    """

    def __init__(self, message: str, result: RaceResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class RacerDied(RaceError):
    """A racer process ended while the race still needed it."""


class RaceTimeout(RaceError):
    """The race did not finish within its timeout."""


class RaceStalled(RaceTimeout):
    """Start-up or a round went ``stall_timeout`` seconds without progress: a hang, told from
    a slow machine (which keeps moving) long before the race's ``timeout=``."""


class RacerSetupFailed(RaceError):
    """A racer could not load the function it was to race, or its racer_setup raised."""


class ServerDied(RaceError):
    """A database server the race used died during it (its throwaway PostgreSQL's postmaster
    is gone): the racers' errors are its consequence, not the code's."""


class RaceNotForced(RaceError):
    """A held target (meet_at, pause_after, pause_before) was never reached by any racer."""


class ScheduleNotFollowed(RaceNotForced):
    """A step of ``schedule=`` did not run in some round: that round replayed something else."""


class NothingExplored(RaceNotForced):
    """An explored racer reached no point in any round: there was nothing to order."""


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
