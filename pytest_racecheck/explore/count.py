"""How many interleavings the unreduced search has: the figure a reduction is measured by.

Exact by iteration over the racers' step counts up to :data:`EXACT_COUNT_STATES` states; beyond
that the multinomial (one racer at a time), a lower bound that costs nothing.
"""

from __future__ import annotations

import itertools
import math

EXACT_COUNT_STATES = 10_000
"""Above this many states (racers' step counts, each plus one, multiplied) the count of
interleavings is not computed exactly: it would cost the race more than it tells."""


def count_interleavings(steps: tuple[int, ...]) -> int:
    """Interleavings of racers with ``steps`` steps each, one racer or two at a time.

    Exact while the racers' states are few; beyond that, the one-racer-at-a-time orders alone
    (a multinomial coefficient), which is fewer: the count is then a lower bound."""
    if math.prod(n + 1 for n in steps) > EXACT_COUNT_STATES:
        return math.factorial(sum(steps)) // math.prod(math.factorial(n) for n in steps)
    return _count(steps)


def _count(steps: tuple[int, ...]) -> int:
    """Ways from the start to every state, states in an order where each comes after all it
    can be reached from (lexicographic: a step only ever adds)."""
    moves = [(i,) for i in range(len(steps))] + list(itertools.combinations(range(len(steps)), 2))
    ways: dict[tuple[int, ...], int] = {}
    for state in itertools.product(*(range(n + 1) for n in steps)):
        if not any(state):
            ways[state] = 1
            continue
        total = 0
        for move in moves:
            before = tuple(n - (i in move) for i, n in enumerate(state))
            if min(before) >= 0:
                total += ways[before]
        ways[state] = total
    return ways[steps]
