"""Probabilistic concurrency testing: random priorities and d - 1 change points per round.

A bug of depth d is found with probability at least 1/(n k^(d-1)) per round (n racers, k
steps); :class:`ConflictPCT` counts change points among conflicting steps only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_racecheck.explore.search import Choice, OrderOnly
from pytest_racecheck.sql.catalog import Catalog
from pytest_racecheck.sql.conflict import step_footprint
from pytest_racecheck.sql.footprint import EVERYTHING, Footprint, dependent
from pytest_racecheck.wire.messages import Statement


@dataclass
class PCT(OrderOnly):
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


@dataclass
class ConflictPCT(PCT):
    """PCT whose change points are counted among conflicting steps only."""

    name: str = "pct"
    next_steps: dict[int, Footprint] = field(default_factory=dict)
    catalogs: Mapping[str, Catalog] = field(default_factory=dict)
    _catalog_source: Callable[[], Mapping[str, Catalog]] | None = None

    def use_catalog(self, catalogs: Callable[[], Mapping[str, Catalog]]) -> None:
        self._catalog_source = catalogs

    def begin(self) -> None:
        self.catalogs = self._catalog_source() if self._catalog_source is not None else {}
        super().begin()

    def arrived(self, racer: int, statement: Statement | None, start: bool = False) -> None:
        known = statement is not None and not start and not statement.outside
        catalog = self.catalogs.get(statement.database) if statement is not None else None
        self.next_steps[racer] = (
            step_footprint(statement.sql, catalog=catalog)  # type: ignore[union-attr]
            if known
            else EVERYTHING
        )

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice:
        pending = [self.next_steps.get(r, EVERYTHING) for r in enabled]
        conflicting = any(dependent(a, b) for i, a in enumerate(pending) for b in pending[i + 1 :])
        if not conflicting:  # no order of these steps can matter: no change point here
            racer = max(enabled, key=lambda r: self.priority[r])
            return (racer,)
        return super().choose(enabled, previous)
