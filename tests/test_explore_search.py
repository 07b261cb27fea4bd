"""The explorer's searches on a model of racers: every interleaving once, cheapest first.

These run no process: the subject is the choice logic. A racer of the model is a number of
steps left; a choice takes one step from each racer it names.
"""

from __future__ import annotations

from math import comb

import pytest

from pytest_racecheck.explore.exhaustive import Exhaustive
from pytest_racecheck.explore.pct import PCT
from pytest_racecheck.explore.search import Search


def delannoy(m: int, n: int) -> int:
    """Paths from (0, 0) to (m, n) with steps right, up and diagonal."""
    return sum(comb(m, k) * comb(n, k) * 2**k for k in range(min(m, n) + 1))


def run_model(search: Search, steps: list[int], rounds: int) -> list[tuple[tuple[int, ...], ...]]:
    """Drive ``search`` over a model whose racers have ``steps`` steps each."""
    paths = []
    for _ in range(rounds):
        if search.exhausted():
            break
        search.begin()
        left = list(steps)
        previous: int | None = None
        path = []
        while any(left):
            enabled = [r for r, n in enumerate(left) if n]
            choice = search.choose(enabled, previous)
            assert set(choice) <= set(enabled)
            for r in choice:
                left[r] -= 1
            previous = choice[0] if len(choice) == 1 else None
            path.append(choice)
        search.end()
        paths.append(tuple(path))
    return paths


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 2), (3, 2), (4, 4)])
def test_exhaustive_runs_every_interleaving_of_two_racers_once(m: int, n: int) -> None:
    search = Exhaustive()
    paths = run_model(search, [m, n], rounds=10_000)
    assert search.exhausted()
    assert len(paths) == len(set(paths)) == delannoy(m, n)


def test_exhaustive_three_racers_counts_every_interleaving() -> None:
    search = Exhaustive()
    paths = run_model(search, [2, 1, 1], rounds=10_000)
    assert search.exhausted()
    assert len(paths) == len(set(paths))
    singles = [p for p in paths if all(len(c) == 1 for c in p)]
    assert len(singles) == 4 * 3 * 2 // 2  # 4! / (2! 1! 1!)


def preemptions(path: tuple[tuple[int, ...], ...], steps: list[int]) -> int:
    left, previous, cost = list(steps), None, 0
    for choice in path:
        enabled = [r for r, n in enumerate(left) if n]
        if len(choice) > 1 or (previous in enabled and choice != (previous,)):
            cost += 1
        for r in choice:
            left[r] -= 1
        previous = choice[0] if len(choice) == 1 else None
    return cost


def test_exhaustive_takes_the_fewest_preemptions_first() -> None:
    """A check-then-act needs one preemption: it must come before any two-preemption order."""
    steps = [4, 4]
    paths = run_model(Exhaustive(), steps, rounds=10_000)
    costs = [preemptions(p, steps) for p in paths]
    assert costs == sorted(costs)
    assert costs[:2] == [0, 0]  # the two serial orders
    check_then_act = ((0,), (1,), (1,), (1,), (1,), (0,), (0,), (0,))
    assert paths.index(check_then_act) < 15


def test_exhaustive_that_strays_from_its_tree_is_not_called_exhausted() -> None:
    search = Exhaustive()
    run_model(search, [2, 2], rounds=3)
    search.begin()
    search.prefix = ((5,),)  # a choice the next round cannot make
    search.choose([0, 1], None)
    search.end()
    while search.frontier:
        search.begin()
        search.end()
    assert search.diverged == 1
    assert search.done()  # nothing left to try: the race stops here
    assert not search.exhausted()  # but it does not claim to have tried everything


def test_pct_is_reproducible_from_its_seed() -> None:
    first = run_model(PCT(4, seed=7), [3, 3, 3, 3], rounds=30)
    again = run_model(PCT(4, seed=7), [3, 3, 3, 3], rounds=30)
    other = run_model(PCT(4, seed=8), [3, 3, 3, 3], rounds=30)
    assert first == again
    assert first != other
    assert len(set(first)) > 10  # it does vary the interleaving


def test_pct_cycles_the_depth_and_finds_a_depth_two_order() -> None:
    """Racer 1 must run between racer 0's first and second step: depth 2, found within 60."""
    paths = run_model(PCT(4, seed=1), [2, 2, 2, 2], rounds=60)

    def interleaved(path: tuple[tuple[int, ...], ...]) -> bool:
        flat = [r for c in path for r in c]
        first0 = flat.index(0)
        second0 = len(flat) - 1 - flat[::-1].index(0)
        return 1 in flat[first0 + 1 : second0]

    assert any(interleaved(p) for p in paths)
