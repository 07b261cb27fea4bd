"""Isolation levels by name, and the database's refusals told apart from other errors.

The level names (PostgreSQL's words, weakest first) and the parsing of what a user wrote
(``isolation=``, the marker, ``--racecheck-isolation``) are here; so is the reading of a
racer's :class:`~pytest_racecheck.wire.outcome.RaisedError` as a refusal of the database
(a serialization failure, SQLSTATE 40001, or a deadlock, 40P01: the code needs a retry loop,
which is not a wrong result), and the classes a test names to allow them
(``allowed=[SerializationFailure]``), matched by ``RaisedError.is_instance``.

Setting a race's level is :mod:`pytest_racecheck.controller.isolation`'s; what the racers
did at it, :mod:`pytest_racecheck.results.isolation`'s.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_racecheck.wire.outcome import RaisedError

READ_COMMITTED = "read committed"
REPEATABLE_READ = "repeatable read"
SERIALIZABLE = "serializable"
LEVELS: tuple[str, ...] = (READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE)
"""PostgreSQL's levels, weakest first (its read uncommitted is read committed)."""
VALID = ", ".join(repr(level) for level in LEVELS)


def level_name(value: Any, where: str = "race()") -> str:
    """The level ``value`` names, in PostgreSQL's words: any case, underscores, hyphens or
    spaces (``"REPEATABLE_READ"`` is ``"repeatable read"``). Raises TypeError or ValueError
    naming ``where`` and listing the valid levels."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: isolation must be a string, one of {VALID}; got {value!r}")
    words = " ".join(re.split(r"[\s_\-]+", value.strip().lower()))
    if words not in LEVELS:
        raise ValueError(f"{where}: unknown isolation level {value!r}: use one of {VALID}")
    return words


def parse_levels(raw: Any, where: str) -> tuple[str, ...]:
    """The levels of ``--racecheck-isolation`` / ini ``racecheck_isolation``: one level,
    ``all``, or a comma list; weakest first, each once."""
    text = str(raw).strip()
    if text.lower() == "all":
        return LEVELS
    given = [part for part in text.split(",") if part.strip()]
    if not given:
        raise ValueError(f"{where}: give a level ({VALID}), a comma list of them, or all")
    chosen = {level_name(part, f"{where}: {part.strip()!r}") for part in given}
    return tuple(level for level in LEVELS if level in chosen)


# --- the database's refusals ----------------------------------------------------------------

REFUSALS = {
    "serialization failure": "40001",
    "deadlock": "40P01",
}
_REFUSAL_TYPES = {
    "serialization failure": (
        "SerializationFailure",  # psycopg 3, psycopg2.errors
        "SerializationError",  # asyncpg
        "TransactionRollbackError",  # psycopg2.extensions (its 40001's base; 40P01 too)
    ),
    "deadlock": ("DeadlockDetected", "DeadlockDetectedError"),
}
_REFUSAL_TEXT = {
    "serialization failure": ("could not serialize access",),
    "deadlock": ("deadlock detected",),
}


def refusal(error: RaisedError | None) -> str | None:
    """``"serialization failure"`` or ``"deadlock"`` when the racer's exception was the
    database refusing the transaction (SQLSTATE 40001 or 40P01), through any driver or ORM
    (Django and SQLAlchemy wrap the driver's error; its message stays); else None."""
    if error is None:
        return None
    text = error.message.lower()
    for kind in ("deadlock", "serialization failure"):
        if any(t in text for t in _REFUSAL_TEXT[kind]):
            return kind
    short = {name.rsplit(".", 1)[-1] for name in error.mro}
    for kind in ("deadlock", "serialization failure"):
        if short & set(_REFUSAL_TYPES[kind]):
            return kind
    return None


class RefusedByDatabase(Exception):
    """Allow any refusal of the database: ``allowed=[RefusedByDatabase]``.

    Never raised: assertion helpers match it by name against what a racer raised, whatever
    its driver (psycopg, psycopg2, asyncpg, Django, SQLAlchemy)."""

    kind = "refused"


class SerializationFailure(RefusedByDatabase):
    """Allow serialization failures (SQLSTATE 40001): ``allowed=[SerializationFailure]``."""

    kind = "serialization failure"


class DeadlockDetected(RefusedByDatabase):
    """Allow deadlocks the database broke (SQLSTATE 40P01): ``allowed=[DeadlockDetected]``."""

    kind = "deadlock"


def allows(error: RaisedError, allowed: type[BaseException]) -> bool:
    """Whether ``allowed`` (one of the classes above) accepts what a racer raised."""
    if not (isinstance(allowed, type) and issubclass(allowed, RefusedByDatabase)):
        return False
    kind = refusal(error)
    return kind is not None and allowed.kind in ("refused", kind)
