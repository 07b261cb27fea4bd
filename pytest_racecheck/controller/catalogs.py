"""The catalogs of a race's databases, as explore's search reads them before every round.

A race's databases are the handles it hands its racers (arguments, values the function
captured) and those its ``reset=`` and ``check=`` use. Each is read through
:func:`pytest_racecheck.sql.catalog.read`, which reads the schema again only after DDL; on
PostgreSQL one connection is kept for the race, so a round's look-up is one small query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from pytest_racecheck.backends.address import handles_in
from pytest_racecheck.backends.base import Database
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.sql.catalog import Catalog, read


def race_databases(spec: RaceSpec) -> list[Database]:
    found = handles_in(spec.fn, spec.args, spec.kwargs)
    for hook in (spec.reset, spec.check):
        found += [db for db in handles_in(hook, (), {}) if db not in found]
    return found


class RaceCatalogs:
    """Called once per round: the catalog of each backend's first database, by backend.

    A database whose catalog cannot be read is left out: its statements keep their text's
    footprints, and any function they call conflicts with everything. Such footprints may miss
    what the database does, so the race is then never called exhausted (:attr:`unread`).
    """

    def __init__(self, databases: Sequence[Database]) -> None:
        self._databases = list(databases)
        self._connections: dict[int, Any] = {}
        self.unread: list[str] = []
        """Why a database's catalog could not be read (at most one line each)."""

    def __call__(self) -> dict[str, Catalog]:
        found: dict[str, Catalog] = {}
        for i, db in enumerate(self._databases):
            if db.backend in found:
                continue
            try:
                found[db.backend] = read(db, connection=self._connection(i, db))
            except Exception as exc:
                self._drop(i)
                why = f"{db.backend}: {type(exc).__name__}: {exc}"[:300]
                if why not in self.unread:
                    self.unread.append(why)
        return found

    def _connection(self, i: int, db: Database) -> Any:
        if db.backend != "postgres":
            return None
        if i not in self._connections:
            import psycopg

            self._connections[i] = psycopg.connect(getattr(db, "dsn", ""), autocommit=True)
        return self._connections[i]

    def _drop(self, i: int) -> None:
        conn = self._connections.pop(i, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        for i in list(self._connections):
            self._drop(i)
