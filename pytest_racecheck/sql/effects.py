"""What a statement does to the data, as far as its text shows: read or write, which table,
which rows (``WHERE id = 1``), transaction control, advisory locks.

Enough to name an anomaly from a failing round (:mod:`pytest_racecheck.results.anomaly`): a
statement it cannot place is ``other``, and rows it cannot tell are ``None`` (the whole table,
or a predicate). The rows come from :mod:`.statement`, the parse explore's search reads too, so
the anomaly names and the search agree on which rows a statement names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.sql.statement import rows_named

READ, INSERT, UPDATE, DELETE = "read", "insert", "update", "delete"
BEGIN, COMMIT, ROLLBACK = "begin", "commit", "rollback"
LOCK, UNLOCK, OTHER = "lock", "unlock", "other"
WRITES = (INSERT, UPDATE, DELETE)


@dataclass(frozen=True)
class Effect:
    kind: str
    table: str | None = None
    rows: tuple[tuple[str, str], ...] | None = None
    """Column = literal pairs of the WHERE clause: the rows touched, where the text says."""
    reads_too: bool = False
    """A write that checks the table first (``INSERT ... WHERE NOT EXISTS``, ``ON CONFLICT``)."""
    lock_key: str | None = None
    """The key of a session-level advisory lock taken or released."""

    @property
    def writes(self) -> bool:
        return self.kind in WRITES

    @property
    def reads(self) -> bool:
        return self.kind == READ or self.reads_too


_ADVISORY = re.compile(r"\bpg_(try_)?advisory_(unlock|lock)(_shared)?\s*\((?P<key>[^)]*)\)", re.I)
_FROM = re.compile(r"\bFROM\b", re.I)
_CHECKS_FIRST = re.compile(r"\bNOT\s+EXISTS\b|\bON\s+CONFLICT\b|\bSELECT\b", re.I)


def effect(sql: str) -> Effect:
    """The effect of one statement's text."""
    short = short_sql(sql)
    verb, _, table = short.partition(" ")
    table = table.lower() or None
    if verb == "SELECT":
        lock = _ADVISORY.search(sql)
        if lock is not None:
            kind = UNLOCK if lock.group(2).lower() == "unlock" else LOCK
            return Effect(kind, lock_key=" ".join(lock.group("key").split()))
        if not _FROM.search(sql):
            return Effect(OTHER)
        return Effect(READ, table, rows_named(sql))
    if verb in ("INSERT", "REPLACE", "MERGE"):
        return Effect(INSERT, table, None, reads_too=bool(_CHECKS_FIRST.search(sql)))
    if verb == "UPDATE":
        return Effect(UPDATE, table, rows_named(sql))
    if verb == "DELETE":
        return Effect(DELETE, table, rows_named(sql))
    if verb == "BEGIN":
        return Effect(BEGIN)
    if short == "COMMIT":
        return Effect(COMMIT)
    if short == "ROLLBACK":
        return Effect(ROLLBACK)
    return Effect(OTHER)


def same_rows(
    a: tuple[tuple[str, str], ...] | None, b: tuple[tuple[str, str], ...] | None
) -> bool | None:
    """True when both name the same row, False when they name different ones, None when the
    text does not tell (either side is a predicate or the whole table)."""
    if a is None or b is None:
        return None
    mine, theirs = dict(a), dict(b)
    shared = set(mine) & set(theirs)
    if not shared:
        return None
    return all(mine[c] == theirs[c] for c in shared)
