"""A handle for a database the plugin did not make: your own file, your own server.

``pytest_racecheck.database(...)`` turns what a project already has (a SQLite path, a
SQLAlchemy-style URL, a PostgreSQL URL or libpq connection string) into the same picklable
handle the fixtures give, so racers, ``reset`` and ``check`` can use it, and so a race that is
handed it can tell racers waiting on its locks from slow ones.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_IN_MEMORY = (
    "{text!r}: racers are separate processes and need a database file; an in-memory SQLite "
    "database is private to one process (pytest-django: give the test database a file, "
    "DATABASES['default']['TEST']['NAME'])"
)


def database(target: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> Database:
    """A handle for an existing database.

    ``target`` is a SQLite file (a path, ``sqlite:///path`` or a ``file:`` URI), or a
    PostgreSQL server's database (``postgresql://user:password@host:5432/name``, with or
    without SQLAlchemy's ``+driver``, or a libpq string such as
    ``"host=/run/postgresql dbname=app"``).
    ``busy_timeout`` applies to SQLite connections the handle opens.
    """
    text = os.fspath(target).strip() if isinstance(target, (str, os.PathLike)) else None
    if not text:
        raise ValueError(
            f"pytest_racecheck.database() needs a SQLite path or a PostgreSQL URL, got {target!r}"
        )
    if text[:5].lower() == "file:":
        # SQLite's URI filenames: file:app.db, file:///abs/app.db?mode=rw; Django's in-memory
        # test database is file:memorydb_default?mode=memory&cache=shared.
        path, _, query = text[5:].partition("?")
        if path.startswith("//"):
            path = "/" + path[2:].partition("/")[2]  # file://[localhost]/abs
        if "mode=memory" in query or path in ("", ":memory:"):
            raise ValueError(_IN_MEMORY.format(text=text))
        return _sqlite(unquote(path), busy_timeout)
    match = _SCHEME.match(text)
    scheme = match.group(1).lower().partition("+")[0] if match else ""
    if scheme == "sqlite":
        # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
        rest = text[match.end() :] if match else text
        path = rest[1:] if rest.startswith("/") else ""
        if not path or path == ":memory:":
            raise ValueError(_IN_MEMORY.format(text=text))
        return _sqlite(path, busy_timeout)
    if scheme in ("postgresql", "postgres") or (not scheme and "=" in text):
        from pytest_racecheck.backends.postgres import PostgresDatabase
        from pytest_racecheck.backends.postgres.handle import make_conninfo, parse_server_url

        params = parse_server_url(text, source="given to pytest_racecheck.database()")
        return PostgresDatabase(dsn=make_conninfo("", **params), name=params.get("dbname", ""))
    if scheme:
        raise ValueError(
            f"pytest_racecheck.database(): {scheme!r} URLs are not supported: use a SQLite "
            "path or sqlite:///path, or a postgresql:// URL"
        )
    return _sqlite(text, busy_timeout)


def _sqlite(path: str, busy_timeout: float) -> SqliteDatabase:
    resolved = Path(path).expanduser().resolve()
    if not resolved.parent.is_dir():
        raise ValueError(f"no directory {str(resolved.parent)!r} for the SQLite database {path!r}")
    # The file's journal mode is the file's business: the handle does not open it to ask
    # (code that finds its database itself may make a handle every round).
    return SqliteDatabase(path=str(resolved), busy_timeout=busy_timeout, journal_mode="unknown")


def handles_in(fn: object, args: tuple[object, ...], kwargs: dict[str, object]) -> list[Database]:
    """The database handles a race hands its racers: arguments, and values ``fn`` captured."""
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    found: list[Database] = []
    for value in (*args, *kwargs.values(), *cells):
        if isinstance(value, Database) and value not in found:
            found.append(value)
    return found
