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

from pytest_racecheck.meeting import PROBE_INTERVAL_S, Coordinator, Overlap, format_step
from pytest_racecheck.outcomes import RaceResult
from pytest_racecheck.points import START_POINT
from pytest_racecheck.protocol import Statement

EXHAUSTIVE_MAX_RACERS = 3
REDUCED_MAX_RACERS = 4
Choice = tuple[int, ...]
"""Racers released together at one decision (usually one)."""


class Search(Protocol):
    """Picks the racers to release at each decision of a round.

    A round is ``begin()``, one ``choose()`` per decision (every racer still, some held at a
    point: ``enabled`` are those, ``previous`` the racer the last single step released), then
    ``end()``. A search knows orders only: what happens inside a step that releases several
    racers together is the :class:`Explorer`'s business (it retries such steps and asks the
    database to hold them), so a search need not model timing at all.
    """

    name: str

    def begin(self) -> None: ...

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice: ...

    def end(self) -> None: ...

    def done(self) -> bool:
        """No order is left that this search would still try: the race may stop."""
        ...

    def exhausted(self) -> bool:
        """Done because every order of the racers' points ran: the search's whole space was
        covered and no round strayed from what the search expected (a search that samples,
        or that saw the code take another path, is never exhausted). It says nothing about
        timing inside a joint step: the Explorer adds that before it calls a race exhausted."""
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
    def search_name(self) -> str:
        return self.search.name

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
        count = getattr(self.search, "without_reduction", None)
        return count() if count is not None else None

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
        tell = getattr(self.search, "arrived", None)  # a search that reads statements
        if tell is not None:
            tell(racer, statement, start=start)
        return self._decide()

    def started(self, racer: int, effects: tuple[str, ...]) -> None:
        if not effects:
            # A start that did nothing outside its racer needs no place in the schedule: a
            # replay that lets it go freely replays the same interleaving.
            step = format_step([(racer, START_POINT)])
            for steps in (self.taken, self.log):
                if step in steps:
                    steps.remove(step)
        tell = getattr(self.search, "started", None)
        if tell is not None:
            tell(racer, bool(effects))

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
