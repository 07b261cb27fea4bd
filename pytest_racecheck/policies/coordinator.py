"""The controller's side of sync points: when a racer held at a point may pass.

:class:`Coordinator` is the protocol every policy implements, with the do-nothing answers of
stress mode; :mod:`.meet_at`, :mod:`.schedule` and :mod:`.explore` override what they need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pytest_racecheck.instrument.points import START_POINT
from pytest_racecheck.results.result import RaceResult
from pytest_racecheck.sql.catalog import Catalog
from pytest_racecheck.wire.messages import Statement

PROBE_INTERVAL_S = 0.001
"""How often the controller asks whether racers are blocked, while a meeting waits on them."""


SLEEPER_PATIENCE_S = 5.0
"""How long a schedule waits for a racer asleep on a timer whose step is next, before it takes
it for a poller waiting on a lock (only a schedule that does not fit the code gets there)."""


class Overlap(Protocol):
    """Holds a joint step's statements in the database (see
    :mod:`pytest_racecheck.controller.overlap`)."""

    def hold(self) -> bool:
        """Take the hold before the step's racers are released; False if nothing can be held."""
        ...

    def release(self) -> set[int]:
        """Let go; return the racers that were held by it (stopped after their snapshot)."""
        ...


class Coordinator:
    """No points held: racers run freely. The base of the other policies."""

    hold_all = False
    """Hold racers at every point they reach, whatever its name (explore mode)."""
    on_clock: Callable[[float], None] | None = None
    """Moves the race's virtual clock by so many seconds (set by the controller)."""

    @property
    def search_name(self) -> str | None:
        """Explore mode: the search that chooses the interleavings ('dpor', 'pct', ...)."""
        return None

    def held_points(self, racer: int) -> dict[str, int]:
        return {}

    def use_catalog(self, catalogs: Callable[[], Mapping[str, Catalog]]) -> None:
        """Where the race's databases' catalogs are read (explore's footprints need them)."""

    def start_round(self) -> None:
        pass

    def end_round(self) -> None:
        pass

    def search_done(self) -> bool:
        """No round is left to run (explore mode, after the last interleaving)."""
        return False

    def exhausted(self) -> bool:
        """Done because every interleaving ran (explore mode)."""
        return False

    def without_reduction(self) -> int | None:
        """How many interleavings an unreduced search has for the steps seen (explore mode)."""
        return None

    def use_overlap(self, overlap: Overlap | None) -> None:
        """A way to hold a joint step's statements in the database (explore mode uses it)."""

    def account(self, result: RaceResult) -> None:
        """Write what the policy knows about the whole race into ``result`` (explore mode:
        whether the search was exhausted, what was left to timing)."""

    def targets_reached(self) -> dict[str, int]:
        """Each held target, with the number of rounds in which some racer reached it."""
        return {}

    def steps_taken(self) -> tuple[str, ...]:
        """This round's steps in the ``schedule=`` format, for replay."""
        return ()

    def missed(self) -> list[tuple[int, str, int, str]]:
        """Steps of this round's plan that did not run (a schedule's): for each, its number
        (from 1), its text, its racer and where that racer was instead. Empty when every step
        ran; the controller then fails the race, since the round replayed nothing."""
        return []

    def arrived(self, racer: int, name: str, statement: Statement | None = None) -> list[int]:
        """``racer`` is held at point ``name`` (``statement``: what it is, if it is one)."""
        return [racer]

    def arrived_at_start(self, racer: int) -> list[int]:
        """``racer`` is held at the round's start (a schedule that names it, explore)."""
        return self.arrived(racer, START_POINT)

    def started(self, racer: int, effects: tuple[str, ...]) -> None:
        """``racer``, let go from the round's start, reached its first point; ``effects``: what
        it did outside its process on the way (explore mode reads it)."""

    def finished(self, racer: int) -> list[int]:
        return []

    def blocked(self, racers: set[int], asleep: frozenset[int] = frozenset()) -> list[int]:
        """``racers`` are blocked now; ``asleep`` are those of them seen only asleep on a
        timer (``time.sleep``, or a poller between two looks at a lock)."""
        return []

    def poll_interval(self) -> float | None:
        """Seconds between blocked probes while the policy waits; None when it need not probe."""
        return None

    def describe_wait(self) -> str:
        return ""

    def trace(self) -> tuple[str, ...]:
        return ()


STEP = re.compile(r"^\s*(\d+)\s*:\s*(\S.*?)\s*$")


JOINT = " & "
"""Joins the parts of a step that releases several racers at once: '0:INSERT runs & 1:...'."""


Step = tuple[tuple[int, str], ...]


CLOCK_STEP = -1
"""The racer number of a step that moves the clock (``"+31m"``): it is nobody's step."""


def format_step(parts: Sequence[tuple[int, str]]) -> str:
    return JOINT.join(name if racer == CLOCK_STEP else f"{racer}:{name}" for racer, name in parts)
