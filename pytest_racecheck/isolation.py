"""Isolation levels: race unmodified code at read committed, repeatable read or serializable.

A race given ``isolation=`` (or ``@pytest.mark.race(isolation=...)``, ``--racecheck-isolation``,
ini ``racecheck_isolation``) sets its PostgreSQL database's ``default_transaction_isolation``
for the race (``ALTER DATABASE ... SET``) and puts the old value back after it. Racers open
their connections inside the race, so every transaction they begin without naming a level
runs at the one asked, whatever the driver; code that names its own level
(``BEGIN ISOLATION LEVEL ...``, ``SET TRANSACTION ISOLATION LEVEL ...``) keeps it, and the
report says so when its statements were seen (explore mode, schedules, sync points).

SQLite runs every transaction serializable: asking it for another level is an error.

The rest of the module names what the database refused (serialization failures, SQLSTATE
40001, and deadlocks, 40P01: the code needs a retry loop, which is not a wrong result) and
holds Hermitage's anomaly catalogue with the weakest PostgreSQL level that prevents each.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_racecheck.backends.base import Database

if TYPE_CHECKING:
    from pytest_racecheck.outcomes import RaceResult, RaisedError

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


# --- which database, and setting it --------------------------------------------------------


@dataclass
class Plan:
    """Where a race's level goes: the level, who asked for it, the PostgreSQL databases."""

    level: str | None
    source: str = ""
    databases: list[Any] = field(default_factory=list)
    """PostgresDatabase handles whose default the race sets."""
    note: str | None = None
    """Why the level was not applied (SQLite, or no database known), when it was not."""
    previous: dict[str, str | None] = field(default_factory=dict)
    """Per database name: the ``default_transaction_isolation`` it had for the database
    (None: not set for it), put back after the race."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "source": self.source,
            "databases": [db.name for db in self.databases],
            "note": self.note,
        }


class SkipLevel(Exception):
    """A run-wide level (command line, ini, the matrix) that cannot apply to this race's
    database (SQLite at a level other than serializable): the test is skipped, saying so."""


def plan(
    level: str | None,
    source: str,
    race_handles: Sequence[Database],
    hook_handles: Sequence[Database],
    fixture_handles: Sequence[Database],
) -> Plan:
    """Decide where ``level`` goes, before any racer starts.

    The databases are those whose handles the race hands its racers (arguments, values the
    function captured); without any, those ``reset`` and ``check`` use; without any, the
    test's database fixtures (``postgres_db``, ``race_db``, ``sqlite_db``). Every PostgreSQL
    database among them gets the level. Raises ValueError when the level cannot apply:
    SQLite at another level than serializable, or no database to set it on (the message says
    what to pass). ``source`` names who asked; a run-wide source (``--racecheck-isolation``,
    the ini key) raises :class:`SkipLevel` for SQLite, and leaves a race that knows no
    database alone (a file lock race has no isolation level).
    """
    if level is None:
        return Plan(None)
    run_wide = source.startswith(("--", "ini"))
    handles = list(race_handles) or list(hook_handles) or list(fixture_handles)
    postgres = [db for db in handles if db.backend == "postgres"]
    sqlite = [db for db in handles if db.backend == "sqlite"]
    if postgres:
        return Plan(level, source, postgres)
    if sqlite:
        if level == SERIALIZABLE:
            return Plan(level, source, [], note="SQLite: every transaction is serializable")
        message = (
            f"{source}: isolation={level!r} on SQLite: SQLite runs every transaction "
            "serializable (one writer at a time) and has no other level; use "
            "isolation='serializable' or race a PostgreSQL database"
        )
        if run_wide:
            raise SkipLevel(message)
        raise ValueError(message)
    if run_wide:
        return Plan(level, source, [], note="no database known to the race: not applied")
    raise ValueError(
        f"{source}: isolation={level!r}: cannot tell which PostgreSQL database to set it on. "
        "Pass its handle to race() (race(fn, postgres_db, ...), or a closure over it), use "
        "the postgres_db fixture in the test, or make a handle of your database with "
        "pytest_racecheck.database(url)"
    )


def _setting_query() -> str:
    return (
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
        "ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0"
    )


def _read_previous(conn: Any) -> str | None:
    row = conn.execute(_setting_query()).fetchone()
    for entry in row[0] if row and row[0] else []:
        name, _, value = entry.partition("=")
        if name == "default_transaction_isolation":
            return value
    return None


def _alter(conn: Any, value: str | None) -> None:
    from psycopg import sql

    name = conn.execute("SELECT current_database()").fetchone()[0]
    if value is None:
        stmt = sql.SQL("ALTER DATABASE {} RESET default_transaction_isolation").format(
            sql.Identifier(name)
        )
    else:
        stmt = sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = {}").format(
            sql.Identifier(name), sql.Literal(value)
        )
    conn.execute(stmt)


@contextlib.contextmanager
def applied(chosen: Plan) -> Iterator[Plan]:
    """Set the plan's level as its databases' default for the race, and put the old one back
    afterwards, whatever happened. New connections take it; connections opened before (the
    test process's own, for ``reset`` and ``check``) keep theirs."""
    if chosen.level is None or not chosen.databases:
        yield chosen
        return
    done: list[Any] = []
    try:
        for db in chosen.databases:
            try:
                with db.connect() as conn:
                    chosen.previous[db.name] = _read_previous(conn)
                    _alter(conn, chosen.level)
            except Exception as exc:
                raise ValueError(
                    f"{chosen.source}: could not set isolation={chosen.level!r} on the "
                    f"PostgreSQL database {db.name!r} ({type(exc).__name__}: {exc}). "
                    "ALTER DATABASE ... SET needs the database's owner (or a superuser)"
                ) from None
            done.append(db)
        yield chosen
    finally:
        for db in done:
            with contextlib.suppress(Exception), db.connect() as conn:
                _alter(conn, chosen.previous.get(db.name))


# --- what the racers did --------------------------------------------------------------------

_NAMED = re.compile(
    r"\b(?:BEGIN|START\s+TRANSACTION|SET\s+(?:SESSION\s+CHARACTERISTICS\s+AS\s+)?TRANSACTION)"
    r"\b[^;]*?\bISOLATION\s+LEVEL\s+(READ\s+UNCOMMITTED|READ\s+COMMITTED|REPEATABLE\s+READ|"
    r"SERIALIZABLE)",
    re.IGNORECASE,
)
_DEFAULT_SET = re.compile(
    r"\bSET\s+(?:SESSION\s+)?default_transaction_isolation\s*(?:=|TO)\s*'?([a-z ]+)",
    re.IGNORECASE,
)


def levels_named(sql: str | None) -> list[str]:
    """The isolation levels a statement names for its own transactions."""
    if not sql:
        return []
    found = [" ".join(m.group(1).lower().split()) for m in _NAMED.finditer(sql)]
    found += [" ".join(m.group(1).lower().split()) for m in _DEFAULT_SET.finditer(sql)]
    return found


def named_in(rounds: Iterable[Any]) -> list[str]:
    """Every level the racers' statements named, in the rounds whose steps were kept."""
    seen: list[str] = []
    for rnd in rounds:
        for outcome in rnd.outcomes:
            for step in outcome.steps:
                for level in levels_named(step.sql):
                    if level not in seen:
                        seen.append(level)
    return seen


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


def refused_counts(rounds: Iterable[Any]) -> tuple[dict[str, int], int]:
    """How many racers the database refused, per kind, and in how many rounds."""
    counts: dict[str, int] = {}
    in_rounds = 0
    for rnd in rounds:
        kinds = [k for o in rnd.outcomes if (k := refusal(o.error)) is not None]
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
        in_rounds += bool(kinds)
    return counts, in_rounds


def summary(result: RaceResult) -> dict[str, Any] | None:
    """The race's isolation data for the JSON report: the level set (or None), the levels the
    code named itself, and what the database refused."""
    rounds = list(result._rounds)
    counts, in_rounds = refused_counts(rounds)
    info = dict(result.isolation or {})
    if not info and not counts:
        return None
    return {
        "level": info.get("level"),
        "source": info.get("source"),
        "databases": info.get("databases", []),
        "note": info.get("note"),
        "named_by_code": info.get("named_by_code", []),
        "statements_seen": info.get("statements_seen", False),
        "refused": counts,
        "refused_rounds": in_rounds,
        "wrong_result_rounds": sum(1 for r in rounds if not r.check_held),
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def failure_text(result: RaceResult) -> str:
    """Lines for a failed assertion's message: the level, the levels the code named itself,
    and the racers the database refused apart from the wrong results."""
    data = summary(result)
    if data is None:
        return ""
    lines = []
    if data["level"] is not None:
        where = ", ".join(data["databases"])
        where = f" on {where}" if where else (f"; {data['note']}" if data["note"] else "")
        lines.append(f"isolation: {data['level']} (set by {data['source']}{where})")
    if data["named_by_code"]:
        lines.append(
            "isolation named by the code itself, which keeps it: "
            + ", ".join(data["named_by_code"])
        )
    if data["refused"]:
        kinds = ", ".join(
            f"{_plural(n, kind)} (SQLSTATE {REFUSALS[kind]})"
            for kind, n in sorted(data["refused"].items())
        )
        lines.append(
            f"refused by the database: the code needs a retry loop: {kinds} in "
            f"{_plural(data['refused_rounds'], 'round')}; wrong results (check() did not "
            f"hold): {_plural(data['wrong_result_rounds'], 'round')}. Allow them with "
            "allowed=[pytest_racecheck.SerializationFailure] (or DeadlockDetected, "
            "RefusedByDatabase) once the code retries"
        )
    return "".join("\n" + line for line in lines)


# --- Hermitage's catalogue ------------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    code: str
    name: str
    prevented_by: str
    """The weakest PostgreSQL level that prevents it (Hermitage's PostgreSQL column)."""


HERMITAGE: tuple[Anomaly, ...] = (
    Anomaly("G0", "write cycles (dirty write)", READ_COMMITTED),
    Anomaly("G1a", "aborted reads (dirty read)", READ_COMMITTED),
    Anomaly("G1b", "intermediate reads (dirty read)", READ_COMMITTED),
    Anomaly("G1c", "circular information flow (dirty read)", READ_COMMITTED),
    Anomaly("OTV", "observed transaction vanishes", READ_COMMITTED),
    Anomaly("PMP", "predicate-many-preceders", REPEATABLE_READ),
    Anomaly("P4", "lost update", REPEATABLE_READ),
    Anomaly("G-single", "read skew (single anti-dependency cycle)", REPEATABLE_READ),
    Anomaly("G2-item", "write skew", SERIALIZABLE),
    Anomaly("G2", "anti-dependency cycles (phantom, predicate write skew)", SERIALIZABLE),
)
"""M. Kleppmann's Hermitage (github.com/ept/hermitage): PostgreSQL prevents G0 to OTV at
every level, PMP, P4 and G-single from repeatable read, G2-item and G2 only at serializable."""
BY_CODE = {a.code: a for a in HERMITAGE}

# The names anomaly.py gives, in Hermitage's words.
FOR_NAME = {
    "lost update": "P4",
    "write skew": "G2-item",
    "phantom": "G2",
    "stale read": "G-single",
}


def hermitage(name: str, one_transaction: bool) -> dict[str, Any]:
    """Hermitage's code for an anomaly anomaly.py named, and the weakest PostgreSQL level
    that prevents it. ``one_transaction``: the reads and writes that make it were, racer by
    racer, in one transaction; if not, no isolation level can help (each statement is a
    transaction of its own), and ``prevented_by`` says what does."""
    code = FOR_NAME.get(name)
    if code is None:
        return {"hermitage": None, "prevented_by": None}
    if not one_transaction:
        return {
            "hermitage": code,
            "prevented_by": "no isolation level: the reads and writes are in separate "
            "transactions; make them one transaction (or take a lock)",
        }
    return {"hermitage": code, "prevented_by": BY_CODE[code].prevented_by}


def record(result: RaceResult, chosen: Plan, mode: str) -> None:
    """Put the race's level on its result, with the levels its code named itself where its
    statements were seen (explore mode, schedules, sync points; stress rounds see none)."""
    if chosen.level is None:
        return
    rounds = list(result._rounds)
    seen = any(o.steps for r in rounds for o in r.outcomes)
    result.isolation = {
        **chosen.as_dict(),
        "named_by_code": named_in(rounds) if seen else [],
        "statements_seen": seen,
        "mode": mode,
    }
