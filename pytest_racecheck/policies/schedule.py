"""``schedule=``: replay one interleaving, step by step, and say when a step never ran."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_racecheck.clock.control import is_time_step, parse_duration
from pytest_racecheck.policies.coordinator import (
    CLOCK_STEP,
    JOINT,
    PROBE_INTERVAL_S,
    SLEEPER_PATIENCE_S,
    STEP,
    Coordinator,
    Step,
    format_step,
)
from pytest_racecheck.wire.messages import Statement


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
