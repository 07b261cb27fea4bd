"""Statements as implicit sync points: every SQL statement sent through a hooked driver.

The drivers: sqlite3, aiosqlite, psycopg 3 (sync and async), psycopg2 and asyncpg.

:func:`install` makes each statement a :func:`pytest_racecheck.instrument.points.point`, reached
just before the statement runs, with no change to the code under test. Django and SQLAlchemy reach
the drivers through ``Database.connect`` / ``dbapi.connect`` and the psycopg classes at call
time, so their statements are covered too. A point is named ``"<short sql> @ <file>:<line>"``
(``INSERT runs @ run_manager.py:52``), where file:line is the first frame outside the driver,
the ORMs, contextlib/functools, asyncio and this plugin's plumbing: the line a person wrote.

Outside a race (``points._racer is None``) every hook returns after one global lookup: no name
is computed and nothing is recorded. What remains costs about 1.1 to 1.3 microseconds per
sqlite3 statement on the development machine (Python 3.11): about 0.8 for SQLite building the
traced text and calling back into Python, the rest for the Python-level ``execute`` of the
connection and cursor subclasses. A psycopg call pays one extra Python call (an async one, one
extra coroutine frame).

The drivers' hooks live apart, each with its own switch: :mod:`.sqlite_trace` (sqlite3),
:mod:`.aiosqlite_hooks` (aiosqlite, on top of sqlite3's), :mod:`.psycopg_hooks` (psycopg 3,
sync and async), :mod:`.psycopg2_hooks` and :mod:`.asyncpg_hooks`; :mod:`.pg_backends` takes
the PostgreSQL drivers' reports of connections and backends, :mod:`.patching` puts hooks in
and takes them out, and :mod:`.naming` names the points. psycopg2, asyncpg and aiosqlite are
patched when first imported: a racer pays for the drivers its code uses; one that is not
installed is left out.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.statements import (
    aiosqlite_hooks,
    asyncpg_hooks,
    pg_backends,
    psycopg2_hooks,
    psycopg_hooks,
    sqlite_trace,
)
from pytest_racecheck.statements.naming import statement_point_name

__all__ = ["install", "installed", "short_sql", "statement_point_name", "uninstall"]

_installed = False
# aiosqlite's hook relays what sqlite3's traces: sqlite3 first.
_DRIVERS = (sqlite_trace, aiosqlite_hooks, psycopg_hooks, psycopg2_hooks, asyncpg_hooks)


def install(
    on_backend_pid: Callable[[int], None] | None = None,
    on_connect: Callable[[], None] | None = None,
) -> None:
    """Make every SQL statement sent through a hooked driver in this process a sync point.

    Call it in a racer before the code under test opens connections. ``on_backend_pid`` is
    called with each new PostgreSQL backend pid as its connection is made (or, for a
    connection made otherwise, before its first point); ``on_connect`` as a PostgreSQL
    connection starts to be made. Calling it again only replaces the callbacks.
    """
    global _installed
    pg_backends.configure(on_backend_pid, on_connect)
    for driver in _DRIVERS:
        driver.install()
    _installed = True


def uninstall() -> None:
    """Undo :func:`install`: the drivers' functions and classes are the originals again.

    Connections opened meanwhile keep their (now inert) trace callback and class; a user's
    trace callback on them keeps working.
    """
    global _installed
    if not _installed:
        return
    _installed = False
    for driver in reversed(_DRIVERS):
        driver.uninstall()
    pg_backends.configure(None, None)


def installed() -> bool:
    """Whether :func:`install` is in force in this process."""
    return _installed
