"""The tree of choices the reduced search walks: one node per decision of a round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_racecheck.explore.search import Choice
from pytest_racecheck.sql.footprint import (
    Footprint,
)


@dataclass
class _Node:
    """A decision of the round: who was held where, what was tried, what is left to try."""

    pending: dict[int, Footprint]
    sleep: dict[Choice, Footprint]
    previous: int | None
    parent: _Node | None = None
    edge: Choice = ()
    """The choice at the parent that leads here."""
    depth: int = 0
    cost: int = 0
    """Preemptions on the way here (see :func:`_preempts`)."""
    backtrack: list[Choice] = field(default_factory=list)
    done: dict[Choice, Footprint] = field(default_factory=dict)
    retries: int = 0
    plans: list[tuple[Choice, ...]] = field(default_factory=list)
    """Sequences to run from here that end in a joint step (see ``DPOR._reverse``)."""
    planned: int = 0
    at_start: frozenset[int] = frozenset()
    """Racers still held at the round's start here."""
    shapes: dict[int, str] = field(default_factory=dict)
    """Each held racer's next statement, shortened (``INSERT runs``): a round that replays the
    way here and finds another statement has strayed from the tree (the program changed)."""

    def add(self, choice: Choice) -> None:
        if choice not in self.backtrack:
            self.backtrack.append(choice)

    def left(self) -> list[Choice]:
        """Choices still to try here, one racer before several at once (whose result is partly
        left to timing inside the database)."""
        left = [c for c in self.backtrack if c not in self.done and c not in self.sleep]
        return sorted(left, key=len)

    def step(self, choice: Choice) -> Footprint:
        return _combined([self.pending[racer] for racer in choice])

    def path(self) -> list[_Node]:
        nodes: list[_Node] = []
        node: _Node | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


def _preempts(node: _Node, choice: Choice) -> int:
    """1 for a switch away from a racer that could go on, or for a joint step; else 0."""
    return int(len(choice) > 1 or (node.previous in node.pending and choice != (node.previous,)))


def _combined(steps: Sequence[Footprint]) -> Footprint:
    """The footprint of several racers' statements released together."""
    result = steps[0]
    for other in steps[1:]:
        result = result.union(other)
    return result
