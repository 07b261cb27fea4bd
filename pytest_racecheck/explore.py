"""Explore mode: the controller chooses, at every point, which racer goes next.

With explore, every SQL statement a racer sends is a point (see :mod:`statements`), and so is
every user :func:`~pytest_racecheck.point`. A racer is held at each one. Whenever every racer is
*still* (held at a point, finished, or blocked waiting for a lock) the explorer picks which held
racers to release: one, or several at once, so that a race inside a single statement (two
overlapping ``INSERT ... WHERE NOT EXISTS``) still gets its chance. The released racer runs its
statement for real, in the real database, until it is still again.

Two searches choose:

``exhaustive``
    (2 or 3 racers) every interleaving, a round each, fewest preemptions first: first the
    serial orders, then every order with one switch away from a racer that could have gone on,
    then two, ... Most real races need one or two such switches (a check-then-act needs one), so
    they come early. When the tree of choices is used up the race stops and says it was
    exhausted: every interleaving of the racers' points ran.
``pct``
    (4 or more racers) probabilistic concurrency testing: random racer priorities, and d - 1
    points in the round where the running racer drops to the lowest priority. A bug of depth d
    is found with probability at least 1/(n k^(d-1)) per round (n racers, k steps); d cycles
    through 1, 2, 3 so nobody has to guess it. Seeded: the same seed gives the same choices.

Each round's steps are recorded in the ``schedule=`` format, so a failing interleaving is
replayed with ``race(..., schedule=result.failing_schedule)``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pytest_racecheck.meeting import PROBE_INTERVAL_S, Coordinator, format_step
from pytest_racecheck.protocol import Statement

EXHAUSTIVE_MAX_RACERS = 3
REDUCED_MAX_RACERS = 4
Choice = tuple[int, ...]
"""Racers released together at one decision (usually one)."""


class Search(Protocol):
    """Picks the racers to release at each decision of a round."""

    name: str

    def begin(self) -> None: ...

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice: ...

    def end(self) -> None: ...

    def done(self) -> bool:
        """No interleaving is left to try."""
        ...

    def exhausted(self) -> bool:
        """Done, and every interleaving of the racers' points was tried."""
        ...


def _options(enabled: Sequence[int], previous: int | None) -> list[tuple[Choice, int]]:
    """Every choice at a decision, with its cost in preemptions.

    Switching away from the racer that just ran, while it could go on, is a preemption; so is
    releasing several racers at once (which is how a race inside one statement is tried).
    """
    options: list[tuple[Choice, int]] = [
        ((r,), int(previous is not None and previous in enabled and r != previous)) for r in enabled
    ]
    if len(enabled) >= 2:
        options.append((tuple(enabled), 1))
    return options


def _default(enabled: Sequence[int], previous: int | None) -> Choice:
    """Without a reason to switch, the racer that just ran goes on."""
    return (previous,) if previous is not None and previous in enabled else (enabled[0],)


@dataclass
class Exhaustive:
    """Every interleaving once, as a search over the tree of choices, fewest preemptions first.

    A round follows a prefix of choices and then the default (no switch). Every decision the
    round reached beyond its prefix adds its other choices to the frontier, keyed by the
    preemptions they cost; the next round takes the cheapest. The tree is assumed to repeat
    itself (the same choices give the same decisions); where a round strays from it (a prefix
    choice is not possible) it is counted, and the race is then not called exhausted.
    """

    name: str = "exhaustive"
    frontier: list[tuple[int, int, tuple[Choice, ...]]] = field(default_factory=list)
    prefix: tuple[Choice, ...] = ()
    taken: list[Choice] = field(default_factory=list)
    decisions: list[tuple[list[tuple[Choice, int]], int]] = field(default_factory=list)
    diverged: int = 0
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.frontier.append((0, next(self._counter), ()))

    def begin(self) -> None:
        _, _, self.prefix = heapq.heappop(self.frontier)
        self.taken, self.decisions = [], []

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice:
        options = _options(enabled, previous)
        i = len(self.taken)
        choice = _default(enabled, previous)
        if i < len(self.prefix):
            wanted = self.prefix[i]
            if any(wanted == o for o, _ in options):
                choice = wanted
            else:
                self.diverged += 1
        cost = next(c for o, c in options if o == choice)
        self.taken.append(choice)
        self.decisions.append((options, cost))
        return choice

    def end(self) -> None:
        spent = 0
        for i, (options, cost) in enumerate(self.decisions):
            if i >= len(self.prefix):
                for option, option_cost in options:
                    if option != self.taken[i]:
                        heapq.heappush(
                            self.frontier,
                            (
                                spent + option_cost,
                                next(self._counter),
                                (*self.taken[:i], option),
                            ),
                        )
            spent += cost

    def done(self) -> bool:
        return not self.frontier

    def exhausted(self) -> bool:
        return self.done() and not self.diverged


@dataclass
class PCT:
    """Probabilistic concurrency testing with the bug depth cycling through 1, 2, 3."""

    processes: int
    seed: int
    name: str = "pct"
    max_depth: int = 3
    joint_probability: float = 0.1
    rounds: int = 0
    steps_seen: int = 0
    rng: random.Random = field(init=False)
    priority: dict[int, int] = field(default_factory=dict)
    change_points: dict[int, int] = field(default_factory=dict)
    step: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def begin(self) -> None:
        depth = 1 + self.rounds % self.max_depth
        self.rounds += 1
        order = list(range(self.processes))
        self.rng.shuffle(order)
        self.priority = {racer: depth + rank for rank, racer in enumerate(order)}
        horizon = max(self.steps_seen, 2 * self.processes)
        points = self.rng.sample(range(1, horizon + 1), min(depth - 1, horizon))
        # the j-th change point drops the running racer below every initial priority
        self.change_points = {step: depth - 1 - j for j, step in enumerate(sorted(points))}
        self.step = 0

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice:
        self.step += 1
        if len(enabled) >= 2 and self.rng.random() < self.joint_probability:
            return tuple(enabled)
        racer = max(enabled, key=lambda r: self.priority[r])
        if self.step in self.change_points:
            self.priority[racer] = self.change_points[self.step]
            racer = max(enabled, key=lambda r: self.priority[r])
        return (racer,)

    def end(self) -> None:
        self.steps_seen = max(self.steps_seen, self.step)

    def done(self) -> bool:
        return False

    def exhausted(self) -> bool:
        return False


def make_search(processes: int, seed: int, reduce: bool = True) -> Search:
    """The reduced search (:mod:`pytest_racecheck.dpor`) up to REDUCED_MAX_RACERS racers, PCT
    beyond; ``reduce=False`` is the unreduced search of before (kept for comparisons)."""
    if reduce:
        # imported here: dpor builds on this module's PCT
        from pytest_racecheck.dpor import DPOR, ConflictPCT

        return DPOR() if processes <= REDUCED_MAX_RACERS else ConflictPCT(processes, seed)
    if processes <= EXHAUSTIVE_MAX_RACERS:
        return Exhaustive()
    return PCT(processes, seed)


@dataclass
class Explorer(Coordinator):
    """Holds every racer at every point and lets the search pick who goes next."""

    processes: int
    search: Search
    at: dict[int, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    waiting_in_db: set[int] = field(default_factory=set)
    previous: int | None = None
    log: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)

    hold_all = True

    @property
    def search_name(self) -> str:
        return self.search.name

    def start_round(self) -> None:
        self.search.begin()
        self.at, self.done, self.waiting_in_db = {}, set(), set()
        self.previous, self.log, self.taken = None, [], []

    def end_round(self) -> None:
        self.search.end()

    def search_done(self) -> bool:
        return self.search.done()

    def exhausted(self) -> bool:
        return self.search.exhausted()

    def without_reduction(self) -> int | None:
        count = getattr(self.search, "without_reduction", None)
        return count() if count is not None else None

    def arrived(self, racer: int, name: str, statement: Statement | None = None) -> list[int]:
        self.waiting_in_db = set()
        self.at[racer] = name
        tell = getattr(self.search, "arrived", None)  # a search that reads statements
        if tell is not None:
            tell(racer, statement)
        return self._decide()

    def finished(self, racer: int) -> list[int]:
        self.waiting_in_db = set()
        self.done.add(racer)
        self.at.pop(racer, None)
        return self._decide()

    def blocked(self, racers: set[int]) -> list[int]:
        newly = racers - set(self.at) - self.done - self.waiting_in_db
        self.waiting_in_db = racers - set(self.at) - self.done
        for racer in sorted(newly):
            self.log.append(f"    racer {racer} waits (on a lock, or outside the database)")
        return self._decide()

    def _still(self) -> bool:
        return len(set(self.at) | self.done | self.waiting_in_db) == self.processes

    def _decide(self) -> list[int]:
        if not self.at or not self._still():
            return []
        enabled = sorted(self.at)
        choice = self.search.choose(enabled, self.previous)
        parts = [(racer, self.at.pop(racer)) for racer in choice]
        step = format_step(parts)
        self.taken.append(step)
        self.log.append(step)
        self.previous = choice[0] if len(choice) == 1 else None
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
