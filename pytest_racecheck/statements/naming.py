"""Naming a statement's point: ``"<short sql> @ <file>:<line>"``, the line a person wrote.

The SQL is shortened to its verb and main table (``INSERT runs``); file:line is the first frame
outside the drivers, the ORMs, contextlib/functools, asyncio and this plugin's plumbing.
"""

from __future__ import annotations

import itertools
import os
import sys
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from pytest_racecheck.sql.shorten import short_sql


def query_text(query: Any, conn: Any, rebuild: Callable[[Any], str] = lambda _: "?") -> str:
    """The SQL text of a query as a driver takes it: str, bytes, a composable with an
    ``as_string(conn)`` (psycopg's and psycopg2's ``sql`` module; ``rebuild(query)`` when that
    fails) or a template (``string.templatelib``, Python 3.14)."""
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(conn))
        except Exception:
            return rebuild(query)
    strings = getattr(query, "strings", None)
    if isinstance(strings, tuple):
        return "?".join(str(s) for s in strings)
    return str(query)


# Drivers, ORMs, the stdlib's wrappers around them and asyncio, which runs the coroutines that
# call them: the line to show is the caller's.
# fmt: off
_SKIP_PACKAGES = frozenset({
    "sqlite3", "_sqlite3", "psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c",
    "psycopg2", "asyncpg", "aiosqlite",
    "django", "sqlalchemy", "contextlib", "functools", "asyncio",
})


# fmt: on
_SKIP_PREFIXES = ("pytest_racecheck.statements", "pytest_racecheck.instrument")


_skip_by_file: dict[str, bool] = {}


_basename_by_file: dict[str, str] = {}


def _skipped(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    skip = _skip_by_file.get(filename)
    if skip is None:
        module = frame.f_globals.get("__name__")
        module = module if isinstance(module, str) else ""
        skip = module.startswith(_SKIP_PREFIXES) or module.partition(".")[0] in _SKIP_PACKAGES
        if not filename.startswith("<"):  # '<string>' is shared by code of many modules
            _skip_by_file[filename] = skip
    return skip


def where(frame: FrameType | None) -> str:
    """``file:line`` of the first frame outside the drivers, the ORMs and the plumbing."""
    while frame is not None and _skipped(frame):
        frame = frame.f_back
    if frame is None:
        return "?"
    filename = frame.f_code.co_filename
    base = _basename_by_file.get(filename)
    if base is None:
        base = _basename_by_file[filename] = os.path.basename(filename)
    return f"{base}:{frame.f_lineno}"


def statement_point_name(sql: str, frame: FrameType | None = None) -> str:
    """The point name of ``sql`` sent from ``frame`` (default: the caller), e.g.
    ``'INSERT runs @ run_manager.py:52'``."""
    if frame is None:
        frame = sys._getframe(1)
    return f"{short_sql(sql)} @ {where(frame)}"


MAX_SQL = 500
"""Characters of a statement's text kept for the reports."""


_numbers: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


_counter = itertools.count()


def connection_number(conn: Any) -> int:
    """A small number for ``conn``, the same for its whole life: 0, 1, ... in the order this
    process first used its connections (the reports tell a racer's connections apart)."""
    try:
        number = _numbers.get(conn)
        if number is None:
            number = _numbers[conn] = next(_counter)
    except TypeError:  # not weakly referable
        return 0
    return number


def kept_sql(sql: str) -> str:
    """A statement's text as the reports keep it: blanks squeezed, at most MAX_SQL characters."""
    text = " ".join(sql.split())
    return text if len(text) <= MAX_SQL else text[: MAX_SQL - 3] + "..."
