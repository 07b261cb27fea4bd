"""The unreduced search: every interleaving once, fewest preemptions first.

Kept for comparisons and as the oracle the reduced search is checked against.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_racecheck.explore.search import Choice, OrderOnly, _default, _options


@dataclass
class Exhaustive(OrderOnly):
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
