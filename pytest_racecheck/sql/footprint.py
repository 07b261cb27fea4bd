"""Which steps can affect each other: a read set and a write set per step.

Explore's search (:mod:`pytest_racecheck.explore.dpor`) needs to know when two steps of different
racers *commute*: running them in either order leaves the database and both racers in the same
state. That holds when neither writes anything the other reads or writes. Each step gets a
:class:`Footprint`: the tables it reads and writes, narrowed to rows where an equality predicate
on a literal names them (``WHERE name = 'start_run'``). The statement's text gives a first
footprint (:mod:`.statement`); the database's catalog widens it to what the database does
beyond the text (:mod:`.conflict`, :mod:`.catalog`).

Where nothing can tell, the footprint is :data:`EVERYTHING` (it conflicts with every other
step). What conflict means when the database decides visibility is written down in
docs/explore.md ("Which steps commute"): in short, a write and a read of the same rows conflict
even when the write's transaction has not committed yet, because the order can still decide
what waits for what and which snapshot sees what.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

Key = frozenset[tuple[str, str]]
"""Known column values of the rows touched: ``{("name", "'start_run'")}``; empty: any row."""

Item = tuple[str, Key]
"""A table and the rows of it that a statement touches."""


@dataclass(frozen=True)
class Footprint:
    """What one step reads and writes; ``everything`` conflicts with every other step."""

    reads: frozenset[Item] = frozenset()
    writes: frozenset[Item] = frozenset()
    inserts: frozenset[str] = frozenset()
    """Tables the step inserts into: two inserts into one table never commute (ids, uniques)."""
    everything: bool = False
    reads_then_writes: bool = False
    """It writes after reading rows it does not write through a query of its own (``INSERT ...
    SELECT ... WHERE NOT EXISTS``, an ``UPDATE`` with a subquery): the shape of a race inside
    one statement. A plain ``INSERT``, an upsert or an ``UPDATE ... WHERE`` on the rows it
    writes waits for a conflicting row's lock and then sees it: as if in some order."""
    overlaps: bool = False
    """It can race with another statement *inside* the database, so releasing both at once can
    give what no order of the two gives: a PostgreSQL statement outside an explicit transaction
    (see :func:`step_footprint`)."""
    outside: bool = False
    """A racer's start (from its release to its first point) that acted outside its process:
    opened a file, took a file lock, connected (see
    :mod:`pytest_racecheck.instrument.start_effects`). Two such starts never commute: they may want
    the same lock or file."""
    inert: bool = False
    """A racer's start that did nothing outside its process: it commutes with every step, even
    one that conflicts with everything."""
    events: frozenset[tuple[str, str]] = frozenset()
    """(table, INSERT | UPDATE | DELETE) for each write the text makes: what fires triggers and
    foreign-key actions, looked up in the catalog."""
    changes: frozenset[tuple[str, str]] = frozenset()
    """(table, column) an UPDATE sets: two writes of a unique column collide on any rows."""
    calls: frozenset[str] = frozenset()
    """Functions called that are not known built-ins: the catalog may know their bodies."""
    peeks: bool = False
    """It may read, unseen, what acts outside the racer change (a file checked with a stat,
    which raises no audit event): it conflicts with every step that acts outside."""

    def union(self, other: Footprint) -> Footprint:
        return Footprint(
            self.reads | other.reads,
            self.writes | other.writes,
            self.inserts | other.inserts,
            self.everything or other.everything,
            self.reads_then_writes or other.reads_then_writes,
            self.overlaps and other.overlaps,
            self.outside or other.outside,
            self.inert and other.inert,
            self.events | other.events,
            self.changes | other.changes,
            self.calls | other.calls,
            self.peeks or other.peeks,
        )

    def describe(self) -> str:
        if self.everything:
            return "conflicts with everything"
        if self.outside:
            return "acts outside the racer (a file, a lock, a connection)"

        def show(items: frozenset[Item]) -> str:
            return ", ".join(sorted(t + _show_key(k) for t, k in items)) or "-"

        return f"reads {show(self.reads)}; writes {show(self.writes)}"


EVERYTHING = Footprint(everything=True)
LOCAL = Footprint()
OUTSIDE = Footprint(outside=True)
"""A racer's start that acted outside its process, or whose effects are not known yet."""
INERT = Footprint(inert=True)
"""A racer's start that did nothing outside its process."""
UNKNOWN_BODY = Footprint(everything=True, reads_then_writes=True)
"""A call whose body is not known (a function, a procedure, a trigger that does not parse): it
conflicts with everything, and it may check and then write inside one statement."""


def _show_key(key: Key) -> str:
    return "[" + ", ".join(f"{c}={v}" for c, v in sorted(key)) + "]" if key else ""


def _rows_overlap(a: Key, b: Key) -> bool:
    """Rows known by ``a`` and by ``b`` can be the same rows unless a column differs (values are
    compared as :func:`~.statement.same_value` spells them: ``'1'`` and ``1`` name one row)."""
    known = dict(a)
    return all(known.get(column, value) == value for column, value in b)


ALL_TABLES = "*"
"""A read of every table: the statement that takes a transaction's snapshot."""
SQLITE_WRITE_LOCK = "<sqlite write lock>"
"""Written by every SQLite statement that writes: SQLite has one writer at a time."""


def touches(writes: frozenset[Item], items: frozenset[Item]) -> bool:
    return any(
        (t == u or u == ALL_TABLES) and _rows_overlap(k, m) for t, k in writes for u, m in items
    )


@lru_cache(maxsize=1 << 16)  # asked for every pair of a round's steps, every round
def dependent(a: Footprint, b: Footprint) -> bool:
    """Whether two steps of different racers may not commute."""
    if a.inert or b.inert:
        return False
    if a.everything or b.everything:
        return True
    if a.inserts & b.inserts or (a.outside and (b.outside or b.peeks)) or (b.outside and a.peeks):
        return True
    return touches(a.writes, b.reads | b.writes) or touches(b.writes, a.reads)
