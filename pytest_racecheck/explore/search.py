"""What every explore search is: the protocol the explorer drives, and the choices it offers.

A search knows orders only. What happens inside a step that releases several racers together
is the explorer's business (:mod:`pytest_racecheck.policies.explore`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pytest_racecheck.sql.catalog import Catalog
from pytest_racecheck.wire.messages import Statement

EXHAUSTIVE_MAX_RACERS = 3


REDUCED_MAX_RACERS = 4


Choice = tuple[int, ...]
"""Racers released together at one decision (usually one)."""


class Search(Protocol):
    """Picks the racers to release at each decision of a round.

    A round is ``begin()``, one ``choose()`` per decision (every racer still, some held at a
    point: ``enabled`` are those, ``previous`` the racer the last single step released), then
    ``end()``. A search knows orders only: what happens inside a step that releases several
    racers together is the :class:`Explorer`'s business (it retries such steps and asks the
    database to hold them), so a search need not model timing at all.
    """

    name: str

    def begin(self) -> None: ...

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice: ...

    def end(self) -> None: ...

    def done(self) -> bool:
        """No order is left that this search would still try: the race may stop."""
        ...

    def exhausted(self) -> bool:
        """Done because every order of the racers' points ran: the search's whole space was
        covered and no round strayed from what the search expected (a search that samples,
        or that saw the code take another path, is never exhausted). It says nothing about
        timing inside a joint step: the Explorer adds that before it calls a race exhausted."""
        ...

    def arrived(self, racer: int, statement: Statement | None, start: bool = False) -> None:
        """``racer`` is held before ``statement`` (None: a user point; ``start``: its round's
        start). A search that orders by what statements touch reads them here."""
        ...

    def started(self, racer: int, outside: bool) -> None:
        """``racer``'s start is over; ``outside`` when it acted outside its process."""
        ...

    def without_reduction(self) -> int | None:
        """How many interleavings the unreduced search has for the steps seen, if known."""
        ...

    def use_catalog(self, catalogs: Callable[[], Mapping[str, Catalog]]) -> None:
        """Where this search finds its databases' catalogs (by backend), read each round."""
        ...


class OrderOnly:
    """The do-nothing answers of a search that orders racers without reading statements."""

    def arrived(self, racer: int, statement: Statement | None, start: bool = False) -> None:
        pass

    def started(self, racer: int, outside: bool) -> None:
        pass

    def without_reduction(self) -> int | None:
        return None

    def use_catalog(self, catalogs: Callable[[], Mapping[str, Catalog]]) -> None:
        pass


def _options(enabled: Sequence[int], previous: int | None) -> list[tuple[Choice, int]]:
    """Every choice at a decision, with its cost in preemptions.

    Switching away from the racer that just ran, while it could go on, is a preemption; so is
    releasing several racers at once (which is how a race inside one statement is tried).
    """
    options: list[tuple[Choice, int]] = [
        ((r,), int(previous is not None and previous in enabled and r != previous)) for r in enabled
    ]
    if len(enabled) >= 2:
        options.append((tuple(enabled), 1))
    return options


def _default(enabled: Sequence[int], previous: int | None) -> Choice:
    """Without a reason to switch, the racer that just ran goes on."""
    return (previous,) if previous is not None and previous in enabled else (enabled[0],)
