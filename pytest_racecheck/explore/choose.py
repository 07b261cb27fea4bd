"""Which search explore runs for a number of racers: the reduced search, or PCT beyond it."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

from pytest_racecheck.explore.dpor import DPOR
from pytest_racecheck.explore.exhaustive import Exhaustive
from pytest_racecheck.explore.pct import PCT, ConflictPCT
from pytest_racecheck.explore.search import EXHAUSTIVE_MAX_RACERS, REDUCED_MAX_RACERS, Search

SearchFactory = Callable[[int, int], Search]
"""Makes a race's search from its number of racers and its seed."""

_FACTORY: contextvars.ContextVar[SearchFactory | None] = contextvars.ContextVar(
    "racecheck_search", default=None
)


@contextlib.contextmanager
def searching(factory: SearchFactory) -> Iterator[None]:
    """Races explored inside this block use the search ``factory`` makes.

    A documented internal for comparisons: the benchmarks and the differential oracle race one
    program with two searches and compare what each reached. The search is made in the test
    process, so the block only has to surround the ``race(...)`` call.
    """
    token = _FACTORY.set(factory)
    try:
        yield
    finally:
        _FACTORY.reset(token)


def unreduced() -> contextlib.AbstractContextManager[None]:
    """Races explored inside this block run the unreduced search (every interleaving)."""
    return searching(lambda processes, seed: make_search(processes, seed, reduce=False))


def make_search(processes: int, seed: int, reduce: bool | None = None) -> Search:
    """The reduced search (:mod:`pytest_racecheck.explore.dpor`) up to REDUCED_MAX_RACERS racers,
    PCT beyond; ``reduce=False`` (or :func:`unreduced`) is the unreduced search: every
    interleaving, as exhaustive enumeration up to EXHAUSTIVE_MAX_RACERS racers."""
    factory = _FACTORY.get()
    if reduce is None and factory is not None:
        return factory(processes, seed)
    if reduce is not False:
        return DPOR() if processes <= REDUCED_MAX_RACERS else ConflictPCT(processes, seed)
    if processes <= EXHAUSTIVE_MAX_RACERS:
        return Exhaustive()
    return PCT(processes, seed)
