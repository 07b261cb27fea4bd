"""Which search explore runs for a number of racers: the reduced search, or PCT beyond it."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from pytest_racecheck.explore.dpor import DPOR
from pytest_racecheck.explore.exhaustive import Exhaustive
from pytest_racecheck.explore.pct import PCT, ConflictPCT
from pytest_racecheck.explore.search import EXHAUSTIVE_MAX_RACERS, REDUCED_MAX_RACERS, Search

_REDUCE: contextvars.ContextVar[bool] = contextvars.ContextVar("racecheck_reduce", default=True)


@contextlib.contextmanager
def unreduced() -> Iterator[None]:
    """Races explored inside this block run the unreduced search (every interleaving).

    A documented internal for comparisons: the benchmarks and the differential oracle race one
    program both ways and compare what each reached. The search is made in the test process,
    so the block only has to surround the ``race(...)`` call.
    """
    token = _REDUCE.set(False)
    try:
        yield
    finally:
        _REDUCE.reset(token)


def make_search(processes: int, seed: int, reduce: bool | None = None) -> Search:
    """The reduced search (:mod:`pytest_racecheck.explore.dpor`) up to REDUCED_MAX_RACERS racers,
    PCT beyond; ``reduce=False`` (or :func:`unreduced`) is the unreduced search: every
    interleaving, as exhaustive enumeration up to EXHAUSTIVE_MAX_RACERS racers."""
    if reduce is None:
        reduce = _REDUCE.get()
    if reduce:
        return DPOR() if processes <= REDUCED_MAX_RACERS else ConflictPCT(processes, seed)
    if processes <= EXHAUSTIVE_MAX_RACERS:
        return Exhaustive()
    return PCT(processes, seed)
