"""``meet_at=``: every racer reaches a point before any passes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_racecheck.policies.coordinator import PROBE_INTERVAL_S, Coordinator
from pytest_racecheck.wire.messages import Statement


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
