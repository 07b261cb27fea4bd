"""The controller's side of sync points: when a racer held at a point may pass.

A coordinator is told what racers do (arrived at a point, finished, blocked in the database) and
answers with the racers to let pass. ``meet_at`` holds every racer at one point until all are
there; a schedule lets racers pass points one step at a time, in a given order, in the style of
PostgreSQL's isolation tester. A racer blocked in the database, waiting for a lock that another
racer holds, can make no progress until that racer moves: both policies count it as arrived.

What a probe says about blocked racers is true at the instant of the probe only: a racer that
arrives or returns may have released a lock that others were waiting for. So every such event
forgets the last probe, and only a fresh one can count a racer as blocked again.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pytest_racecheck.clock import is_time_step, parse_duration
from pytest_racecheck.outcomes import RaceResult
from pytest_racecheck.points import START_POINT, pause_point_name, resolve_target
from pytest_racecheck.protocol import Statement

PROBE_INTERVAL_S = 0.001
"""How often the controller asks whether racers are blocked, while a meeting waits on them."""

SLEEPER_PATIENCE_S = 5.0
"""How long a schedule waits for a racer asleep on a timer whose step is next, before it takes
it for a poller waiting on a lock (only a schedule that does not fit the code gets there)."""


class Overlap(Protocol):
    """Holds a joint step's statements in the database (see :mod:`pytest_racecheck.overlap`)."""

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

    def held_points(self, racer: int) -> dict[str, int]:
        return {}

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


@dataclass
class MeetAt(Coordinator):
    """Every racer reaches ``name`` (or returns, or blocks) before any passes it."""

    name: str
    processes: int
    held: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    waiting_in_db: set[int] = field(default_factory=set)
    met: bool = False
    reached_rounds: int = 0
    reached: bool = False

    def held_points(self, racer: int) -> dict[str, int]:
        return {self.name: 1}

    def start_round(self) -> None:
        self.held, self.done, self.waiting_in_db, self.met = set(), set(), set(), False
        self.reached = False

    def end_round(self) -> None:
        self.reached_rounds += self.reached

    def targets_reached(self) -> dict[str, int]:
        return {self.name: self.reached_rounds}

    def arrived(self, racer: int, name: str, statement: Statement | None = None) -> list[int]:
        self.reached = True
        if self.met:
            return [racer]
        self.held.add(racer)
        self.waiting_in_db = set()
        return self._meet()

    def finished(self, racer: int) -> list[int]:
        self.done.add(racer)
        self.held.discard(racer)
        self.waiting_in_db = set()
        return self._meet()

    def blocked(self, racers: set[int], asleep: frozenset[int] = frozenset()) -> list[int]:
        self.waiting_in_db = racers - self.held - self.done
        return self._meet()

    def _meet(self) -> list[int]:
        if self.met or len(self.held | self.done | self.waiting_in_db) < self.processes:
            return []
        self.met = True
        return sorted(self.held)

    def poll_interval(self) -> float | None:
        return PROBE_INTERVAL_S if (self.held or self.done) and not self.met else None

    def describe_wait(self) -> str:
        if self.met:
            return ""
        missing = set(range(self.processes)) - self.held - self.done - self.waiting_in_db
        return f"racers {sorted(missing)} to reach point {self.name!r}" if missing else ""


STEP = re.compile(r"^\s*(\d+)\s*:\s*(\S.*?)\s*$")
JOINT = " & "
"""Joins the parts of a step that releases several racers at once: '0:INSERT runs & 1:...'."""

Step = tuple[tuple[int, str], ...]
CLOCK_STEP = -1
"""The racer number of a step that moves the clock (``"+31m"``): it is nobody's step."""


def format_step(parts: Sequence[tuple[int, str]]) -> str:
    return JOINT.join(name if racer == CLOCK_STEP else f"{racer}:{name}" for racer, name in parts)


def parse_schedule(steps: Sequence[str], processes: int) -> list[Step]:
    """``["0:checked", "1:checked & 2:checked"]`` into racer/point pairs, checked."""
    if isinstance(steps, str) or not steps:
        raise ValueError(
            "race(): schedule must be a non-empty list of 'racer:point' steps, "
            f"e.g. ['0:checked', '1:checked'], got {steps!r}"
        )
    parsed: list[Step] = []
    for step in steps:
        if is_time_step(step):
            parse_duration(step)  # a bad duration fails here
            parsed.append(((CLOCK_STEP, step.strip()),))
            continue
        parts = step.split(JOINT) if isinstance(step, str) else [None]
        pairs = []
        for part in parts:
            match = STEP.match(part) if isinstance(part, str) else None
            if match is None:
                raise ValueError(
                    f"race(): schedule step {step!r} is not 'racer:point' (or several joined "
                    f"by {JOINT.strip()!r}), e.g. '0:checked'"
                )
            racer = int(match.group(1))
            if racer >= processes:
                raise ValueError(
                    f"race(): schedule step {step!r} names racer {racer}, but racers are "
                    f"numbered 0 to {processes - 1}"
                )
            pairs.append((racer, match.group(2)))
        if len({r for r, _ in pairs}) != len(pairs):
            raise ValueError(f"race(): schedule step {step!r} names a racer twice")
        parsed.append(tuple(pairs))
    return parsed


@dataclass
class Schedule(Coordinator):
    """Racers pass points one step at a time, in the order of ``steps``.

    Before each step every racer is still: held at a point, finished, or blocked in the
    database. A step whose racer is blocked cannot run now; it is marked as waiting on a lock,
    the schedule moves on, and the racer passes that point as soon as it gets there. A step of
    several racers releases them together.

    A step is a promise: every step must run in every round, or the round replayed something
    else. A step whose racer had returned, was held at another point, or never came to the
    point it waited for is recorded in :meth:`missed`, and the controller fails the race.
    """

    steps: list[Step]
    processes: int
    position: int = 0
    at: dict[int, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    waiting_in_db: set[int] = field(default_factory=set)
    owed: dict[tuple[int, str], int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)
    misses: list[tuple[int, str, int, str]] = field(default_factory=list)
    asleep_since: dict[int, float] = field(default_factory=dict)

    def held_points(self, racer: int) -> dict[str, int]:
        return dict(Counter(name for step in self.steps for r, name in step if r == racer))

    def start_round(self) -> None:
        self.position, self.at, self.done = 0, {}, set()
        self.waiting_in_db, self.owed, self.log, self.taken = set(), {}, [], []
        self.misses, self.asleep_since = [], {}

    def end_round(self) -> None:
        for (racer, name), number in sorted(self.owed.items(), key=lambda item: item[1]):
            self._miss(number, racer, name, "waited on a lock, then never came to that point")
        self.owed = {}

    def missed(self) -> list[tuple[int, str, int, str]]:
        return list(self.misses)

    def _miss(self, number: int, racer: int, name: str, where: str) -> None:
        self.misses.append((number, f"{racer}:{name}", racer, where))

    def arrived(self, racer: int, name: str, statement: Statement | None = None) -> list[int]:
        self.waiting_in_db = set()
        if (racer, name) in self.owed:
            del self.owed[(racer, name)]
            self.log.append(f"{racer}:{name}   (after waiting on a lock)")
            self.taken.append(f"{racer}:{name}")
            return [racer]
        for (r, owed_name), number in list(self.owed.items()):
            if r == racer:  # it came to another point first: the owed step cannot run now
                del self.owed[(r, owed_name)]
                self._miss(number, r, owed_name, f"held at {name!r}")
        self.at[racer] = name
        return self._advance()

    def finished(self, racer: int) -> list[int]:
        self.done.add(racer)
        self.at.pop(racer, None)
        self.waiting_in_db = set()
        return self._advance()

    def blocked(self, racers: set[int], asleep: frozenset[int] = frozenset()) -> list[int]:
        # A racer asleep on a timer whose step is next is waited for: it sleeps on purpose
        # (work between two statements), or the schedule was recorded while it did not wait
        # here. Only a schedule that is wrong waits SLEEPER_PATIENCE_S for a poller.
        now = time.monotonic()
        self.asleep_since = {r: t for r, t in self.asleep_since.items() if r in asleep}
        patient: set[int] = set()
        if self.position < len(self.steps):
            for racer, _ in self.steps[self.position]:
                if racer in asleep:
                    since = self.asleep_since.setdefault(racer, now)
                    if now - since < SLEEPER_PATIENCE_S:
                        patient.add(racer)
        self.waiting_in_db = racers - set(self.at) - self.done - patient
        return self._advance()

    def _still(self) -> bool:
        return len(set(self.at) | self.done | self.waiting_in_db) == self.processes

    def _advance(self) -> list[int]:
        released: list[int] = []
        while self.position < len(self.steps) and self._still():
            step = self.steps[self.position]
            self.position += 1
            if step[0][0] == CLOCK_STEP:
                if self.on_clock is not None:
                    self.on_clock(parse_duration(step[0][1]))
                self.log.append(step[0][1])
                self.taken.append(step[0][1])
                continue
            ready = [(r, n) for r, n in step if self.at.get(r) == n]
            for racer, name in step:
                if (racer, name) in ready:
                    continue
                if racer in self.waiting_in_db:
                    self.owed[(racer, name)] = self.position
                    self.log.append(f"{racer}:{name}   waits on a lock")
                elif racer in self.done:
                    self.log.append(f"{racer}:{name}   not reached: racer {racer} had returned")
                    self._miss(self.position, racer, name, "had returned")
                else:
                    where = self.at.get(racer)
                    self.log.append(
                        f"{racer}:{name}   not reached: racer {racer} was held at {where!r}"
                    )
                    self._miss(self.position, racer, name, f"held at {where!r}")
            if ready:
                for racer, _ in ready:
                    del self.at[racer]
                    released.append(racer)
                self.log.append(format_step(ready))
                self.taken.append(format_step(ready))
                break  # let them run until every racer is still again
        if self.position >= len(self.steps):
            released.extend(sorted(self.at))
            for racer in sorted(self.at):
                self.log.append(f"{racer}:{self.at[racer]}   (schedule done, released)")
            self.at.clear()
        return released

    def poll_interval(self) -> float | None:
        return PROBE_INTERVAL_S if self.position < len(self.steps) and not self._still() else None

    def describe_wait(self) -> str:
        if self.position >= len(self.steps):
            return ""
        step = format_step(self.steps[self.position])
        return f"step {self.position + 1} ({step}) of the schedule"

    def trace(self) -> tuple[str, ...]:
        return tuple(self.log)

    def steps_taken(self) -> tuple[str, ...]:
        return tuple(self.taken)


def make_coordinator(
    processes: int,
    meet_at: str | None = None,
    pause_after: str | None = None,
    pause_before: str | None = None,
    schedule: Sequence[str] | None = None,
) -> Coordinator:
    """The policy that the race's arguments ask for; conflicting arguments are refused."""
    pauses = [(w, t) for w, t in (("after", pause_after), ("before", pause_before)) if t]
    chosen = [n for n, v in (("meet_at", meet_at), ("schedule", schedule)) if v is not None] + [
        f"pause_{w}" for w, _ in pauses
    ]
    if len(chosen) > 1:
        raise ValueError(
            f"race(): use one of meet_at, pause_after, pause_before, schedule; got {chosen}"
        )
    if schedule is not None:  # an empty schedule is refused, not raced freely
        return Schedule(parse_schedule(schedule, processes), processes)
    if pauses:
        where, target = pauses[0]
        resolve_target(target)  # a wrong name fails here, not in every racer
        return MeetAt(pause_point_name(where, target), processes)
    if meet_at is not None:
        if not isinstance(meet_at, str) or not meet_at:
            raise ValueError(f"race(): meet_at must be a point name, got {meet_at!r}")
        return MeetAt(meet_at, processes)
    return Coordinator()
