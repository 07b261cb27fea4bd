"""Explore mode: the controller chooses, at every point, which racer goes next.

With explore, every SQL statement a racer sends is a point (see :mod:`statements`), and so is
every user :func:`~pytest_racecheck.point`. A racer is held at each one. Whenever every racer is
*still* (held at a point, finished, or blocked waiting for a lock) the explorer picks which held
racers to release: one, or several at once, so that a race inside a single statement (two
overlapping ``INSERT ... WHERE NOT EXISTS``) still gets its chance. The released racer runs its
statement for real, in the real database, until it is still again.

The search (:mod:`pytest_racecheck.explore`) chooses: the reduced search (DPOR, up to 4
racers: one interleaving of each class of orders that differ only in statements that commute,
and it says when nothing is left), or PCT beyond (random priorities with change points among
conflicting steps, seeded). The explorer adds what a search does not model: steps that
release several racers together, held in the database where it can, retried where timing
decides.

Each round's steps are recorded in the ``schedule=`` format, so a failing interleaving is
replayed with ``race(..., schedule=result.failing_schedule)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pytest_racecheck.explore.search import Choice, Search
from pytest_racecheck.instrument.points import START_POINT
from pytest_racecheck.policies.coordinator import (
    PROBE_INTERVAL_S,
    Coordinator,
    Overlap,
    format_step,
)
from pytest_racecheck.results.result import RaceResult
from pytest_racecheck.sql.catalog import Catalog
from pytest_racecheck.wire.messages import Statement

JOINT_TRIES = 2
"""How often a round whose joint step was left to timing runs in a row (then again, in turn with
the others, once the search is done and budget is left)."""


@dataclass
class Explorer(Coordinator):
    """Holds every racer at every point and lets the search pick who goes next.

    A joint step (several racers released together) is the only place where timing decides
    something: whether their statements overlap inside the database. Where the database can
    hold them (an :class:`Overlap`), every released racer stops after its snapshot and before
    its write, the hold is let go once all are still, and the step counts as held. Otherwise
    the step is *timing-dependent*: its round runs again (:data:`JOINT_TRIES` in a row, then in
    turn while the budget lasts), and the race is never called exhausted.
    """

    processes: int
    search: Search
    at: dict[int, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    waiting_in_db: set[int] = field(default_factory=set)
    previous: int | None = None
    log: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)
    overlap: Overlap | None = None
    holding: Choice | None = None
    timed: int = 0
    """Joint steps left to timing, over every round."""
    held: int = 0
    """Joint steps the database held, over every round."""
    round_timed: int = 0
    path: list[Choice] = field(default_factory=list)
    replay: tuple[Choice, ...] | None = None
    pending: list[tuple[Choice, ...]] = field(default_factory=list)
    timed_paths: dict[tuple[Choice, ...], int] = field(default_factory=dict)
    """Paths whose joint step was left to timing, with the rounds that ran them."""
    decisions: int = 0
    """Decisions made over the whole race (0: no racer ever reached a point)."""
    at_start: set[int] = field(default_factory=set)
    """Racers held at their start now."""

    hold_all = True

    @property
    def search_name(self) -> str | None:
        return self.search.name

    def use_catalog(self, catalogs: Callable[[], Mapping[str, Catalog]]) -> None:
        self.search.use_catalog(catalogs)

    def use_overlap(self, overlap: Overlap | None) -> None:
        self.overlap = overlap

    def start_round(self) -> None:
        self.replay = None
        if self.pending:
            self.replay = self.pending.pop(0)
        elif self.search.done() and self.timed_paths:
            paths = sorted(self.timed_paths, key=lambda p: self.timed_paths[p])
            self.replay = paths[0]
        else:
            self.search.begin()
        self.at, self.done, self.waiting_in_db = {}, set(), set()
        self.at_start = set()
        self.previous, self.log, self.taken = None, [], []
        self.holding, self.round_timed, self.path = None, 0, []

    def end_round(self) -> None:
        self.release_hold()
        path = tuple(self.path)
        if self.replay is None:
            self.search.end()
        if self.round_timed:
            tries = self.timed_paths.get(path, 0) + 1
            self.timed_paths[path] = tries
            if self.replay is None:
                self.pending.extend([path] * (JOINT_TRIES - 1))
        else:
            self.timed_paths.pop(path, None)  # held this time: deterministic now

    def release_hold(self) -> set[int]:
        """Let go of a hold still taken (end of round, or the race breaking down)."""
        if self.holding is None or self.overlap is None:
            return set()
        step, self.holding = self.holding, None
        held = self.overlap.release()
        if set(step) <= held:
            self.held += 1
            self.log.append(
                f"    racers {', '.join(map(str, step))} held after their snapshot, then let "
                "go together (overlap held by the database)"
            )
        else:
            self._timed(step)
        return held

    def _timed(self, step: Choice) -> None:
        self.timed += 1
        self.round_timed += 1
        self.log.append(
            f"    racers {', '.join(map(str, step))} overlapped as timing let them "
            "(timing-dependent step)"
        )

    def search_done(self) -> bool:
        return self.search.done() and not self.pending and not self.timed_paths

    def exhausted(self) -> bool:
        return self.search.exhausted() and not self.timed_paths

    def account(self, result: RaceResult) -> None:
        self.release_hold()
        # With no decision at all there was nothing to order (NothingExplored says so); with
        # points let through on other threads, some statements ran outside the search.
        result.every_order = self.search.exhausted() and bool(self.decisions)
        result.exhausted = result.every_order and self.exhausted() and not result.unheld_points
        result.timing_dependent = self.timed
        result.overlaps_held = self.held

    def without_reduction(self) -> int | None:
        return self.search.without_reduction()

    def arrived(self, racer: int, name: str, statement: Statement | None = None) -> list[int]:
        return self._arrived(racer, name, statement, start=False)

    def arrived_at_start(self, racer: int) -> list[int]:
        self.at_start.add(racer)
        return self._arrived(racer, START_POINT, None, start=True)

    def _arrived(
        self, racer: int, name: str, statement: Statement | None, start: bool
    ) -> list[int]:
        self.waiting_in_db = set()
        self.at[racer] = name
        self.search.arrived(racer, statement, start=start)
        return self._decide()

    def started(self, racer: int, effects: tuple[str, ...]) -> None:
        if not effects:
            # A start that did nothing outside its racer needs no place in the schedule: a
            # replay that lets it go freely replays the same interleaving.
            step = format_step([(racer, START_POINT)])
            for steps in (self.taken, self.log):
                if step in steps:
                    steps.remove(step)
        self.search.started(racer, bool(effects))

    def finished(self, racer: int) -> list[int]:
        self.waiting_in_db = set()
        self.done.add(racer)
        self.at.pop(racer, None)
        return self._decide()

    def blocked(self, racers: set[int], asleep: frozenset[int] = frozenset()) -> list[int]:
        newly = racers - set(self.at) - self.done - self.waiting_in_db
        self.waiting_in_db = racers - set(self.at) - self.done
        holding = set(self.holding or ())
        for racer in sorted(newly):
            if racer not in holding:
                self.log.append(f"    racer {racer} waits (on a lock, or outside the database)")
        return self._decide()

    def _still(self) -> bool:
        return len(set(self.at) | self.done | self.waiting_in_db) == self.processes

    def _choose(self, enabled: list[int]) -> Choice:
        if self.replay is None:
            return self.search.choose(enabled, self.previous)
        i = len(self.path)
        if i < len(self.replay) and set(self.replay[i]) <= set(enabled):
            return self.replay[i]
        return (self.previous,) if self.previous in enabled else (enabled[0],)

    def _decide(self) -> list[int]:
        if not self._still():
            return []
        if self.holding is not None:
            # Every racer of the joint step is held after its snapshot or got past the hold:
            # let go, and wait until the held ones are still again.
            held = self.release_hold()
            self.waiting_in_db -= held
            if held:
                return []
        if not self.at:
            return []
        enabled = sorted(self.at)
        choice = self._choose(enabled)
        if not set(choice) <= self.at_start:  # starts alone order nothing the racers did
            self.decisions += 1
        self.at_start -= set(choice)
        self.path.append(choice)
        parts = [(racer, self.at.pop(racer)) for racer in choice]
        step = format_step(parts)
        self.taken.append(step)
        self.log.append(step)
        self.previous = choice[0] if len(choice) == 1 else None
        if len(choice) > 1:
            if self.overlap is not None and self.overlap.hold():
                self.holding = choice
            else:
                self._timed(choice)
        return list(choice)

    def poll_interval(self) -> float | None:
        return PROBE_INTERVAL_S if not self._still() or not self.at else None

    def describe_wait(self) -> str:
        moving = set(range(self.processes)) - set(self.at) - self.done - self.waiting_in_db
        return f"racers {sorted(moving)} to reach their next statement" if moving else ""

    def trace(self) -> tuple[str, ...]:
        return tuple(self.log)

    def steps_taken(self) -> tuple[str, ...]:
        return tuple(self.taken)
