"""Setting a race's isolation level: which database gets it, and for how long.

A race given ``isolation=`` (or ``@pytest.mark.race(isolation=...)``, ``--racecheck-isolation``,
ini ``racecheck_isolation``) sets its PostgreSQL database's ``default_transaction_isolation``
for the race (``ALTER DATABASE ... SET``) and puts the old value back after it. Racers open
their connections inside the race, so every transaction they begin without naming a level
runs at the one asked, whatever the driver; code that names its own level
(``BEGIN ISOLATION LEVEL ...``, ``SET TRANSACTION ISOLATION LEVEL ...``) keeps it, and the
report says so when its statements were seen (explore mode, schedules, sync points).

SQLite runs every transaction serializable: asking it for another level is an error.
The level names and the refusals are :mod:`pytest_racecheck.wire.isolation`'s; what the
racers did at the level, :mod:`pytest_racecheck.results.isolation`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_racecheck.backends.base import Database
from pytest_racecheck.results.isolation import recorded
from pytest_racecheck.wire.isolation import SERIALIZABLE

if TYPE_CHECKING:
    from pytest_racecheck.results.result import RaceResult


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


def record(result: RaceResult, chosen: Plan, mode: str) -> None:
    """Put the race's level on its result, with the levels its code named itself where its
    statements were seen (explore mode, schedules, sync points; stress rounds see none)."""
    if chosen.level is None:
        return
    result.isolation = recorded(result._rounds, chosen.as_dict(), mode)
