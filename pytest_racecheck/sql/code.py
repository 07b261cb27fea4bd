"""What a piece of code names, as plain values: the unit the catalog's closure follows.

A :class:`Body` is what one statement, trigger or function names directly (tables read, tables
written with the event their triggers see, functions called); :data:`EVERYTHING` is the answer
when that cannot be known. :mod:`pytest_racecheck.sql.bodies` reads bodies from SQL text,
:mod:`pytest_racecheck.sql.schema` follows them through a database's catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

EVENTS: Final = ("INSERT", "UPDATE", "DELETE")


class Everything:
    """The answer when an effect cannot be known: it conflicts with every statement."""

    _instance: Everything | None = None

    def __new__(cls) -> Everything:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EVERYTHING"

    def __reduce__(self) -> tuple[type[Everything], tuple[()]]:
        return (Everything, ())  # stays the one sentinel across pickling


EVERYTHING: Final = Everything()


@dataclass(frozen=True)
class Body:
    """What one piece of code names directly: before views, triggers and calls are followed.

    ``writes`` pairs a table with the event (INSERT, UPDATE, DELETE) that the triggers of that
    table will see; ``calls`` are function names, resolved against the catalog later (a name the
    catalog does not hold is a built-in, taken to touch no table).
    """

    reads: frozenset[str] = frozenset()
    writes: frozenset[tuple[str, str]] = frozenset()
    calls: frozenset[str] = frozenset()


Code = Body | Everything


def merge(parts: Iterable[Code]) -> Code:
    """The union of several bodies; one unknown part makes the whole unknown."""
    reads: set[str] = set()
    writes: set[tuple[str, str]] = set()
    calls: set[str] = set()
    for part in parts:
        if isinstance(part, Everything):
            return EVERYTHING
        reads |= part.reads
        writes |= part.writes
        calls |= part.calls
    return Body(frozenset(reads), frozenset(writes), frozenset(calls))
