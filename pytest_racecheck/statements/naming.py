"""Naming a statement's point: ``"<short sql> @ <file>:<line>"``, the line a person wrote.

The SQL is shortened to its verb and main table (``INSERT runs``); file:line is the first frame
outside the drivers, the ORMs, contextlib/functools, asyncio and this plugin's plumbing.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

# -- naming -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<str>'(?:[^']|'')*'?)
  | (?P<qid>"(?:[^"]|"")*"?|`[^`]*`?)
  | (?P<word>[^\W\d][\w$]*)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class _Tokens:
    """SQL tokens one at a time, comments and blanks left out; read only as far as needed."""

    __slots__ = ("_it", "_peeked")

    def __init__(self, sql: str) -> None:
        self._it = _TOKEN.finditer(sql)
        self._peeked: tuple[str, str] | None = None

    def next(self) -> tuple[str, str] | None:
        if self._peeked is not None:
            tok, self._peeked = self._peeked, None
            return tok
        for m in self._it:
            kind = m.lastgroup
            if kind != "skip":
                return kind or "punct", m.group()
        return None

    def peek(self) -> tuple[str, str] | None:
        if self._peeked is None:
            self._peeked = self.next()
        return self._peeked

    def word(self) -> str:
        """The next token as an upper-case keyword, consumed, or '' if it is not a word."""
        tok = self.peek()
        if tok is None or tok[0] != "word":
            return ""
        self._peeked = None
        return tok[1].upper()

    def skip_words(self, *words: str) -> None:
        while (tok := self.peek()) is not None and tok[0] == "word" and tok[1].upper() in words:
            self._peeked = None

    def name(self) -> str:
        """A possibly qualified, possibly quoted name (``"public"."runs"`` -> public.runs)."""
        parts: list[str] = []
        while True:
            tok = self.peek()
            if tok is None or tok[0] not in ("word", "qid"):
                break
            self._peeked = None
            text = tok[1]
            if tok[0] == "qid":
                quote = text[0]
                text = text[1:-1] if len(text) > 1 and text[-1] == quote else text[1:]
                text = text.replace(quote * 2, quote)
            parts.append(text)
            dot = self.peek()
            if dot is None or dot[1] != ".":
                break
            self._peeked = None
        return ".".join(parts)


def _with_main_verb(tokens: _Tokens) -> str:
    """Skip ``WITH [RECURSIVE] a AS (...), b AS (...)``; return the main statement's verb."""
    depth = 0
    closed = False
    while (tok := tokens.next()) is not None:
        kind, text = tok
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            closed = depth == 0
        elif depth == 0 and kind == "word" and closed:
            verb = text.upper()
            if verb in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES"):
                return verb
    return "WITH"


def _select_target(tokens: _Tokens) -> str:
    """The table a SELECT reads (first FROM at depth 0, else any FROM), else its function."""
    depth = 0
    inner_from = ""
    function = ""
    previous: tuple[str, str] | None = None
    while (tok := tokens.next()) is not None:
        kind, text = tok
        if text == "(":
            if not function and previous is not None and previous[0] in ("word", "qid"):
                function = previous[1].strip('"')
            depth += 1
        elif text == ")":
            depth -= 1
        elif kind == "word" and text.upper() == "FROM":
            name = tokens.name()
            after = tokens.peek()
            if after is not None and after[1] == "(":  # extract(year FROM now())
                name = ""
            if name and depth <= 0:
                return name
            if name and not inner_from:
                inner_from = name
        previous = tok
    return inner_from or function


_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")
# fmt: off
_OBJECT_KINDS = frozenset({
    "TABLE", "INDEX", "VIEW", "TRIGGER", "SEQUENCE", "SCHEMA", "FUNCTION", "PROCEDURE", "TYPE",
    "EXTENSION", "DATABASE", "ROLE", "USER",
})
# fmt: on


def _joined(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def short_sql(sql: str) -> str:
    """A readable short form of a statement: ``SELECT runs``, ``INSERT runs``, ``COMMIT``.

    The verb and the table (or, for a SELECT without FROM, its function, as in
    ``SELECT pg_advisory_xact_lock``); transaction control keeps its mode (``BEGIN
    IMMEDIATE``). Text that is only comments or blanks gives ``''``.
    """
    tokens = _Tokens(sql)
    while (tok := tokens.peek()) is not None and tok[1] == "(":
        tokens.next()
    verb = tokens.word()
    if not verb:
        tok = tokens.next()
        return "" if tok is None else tok[1]
    if verb == "WITH":
        verb = _with_main_verb(tokens)
        if verb == "WITH":
            return verb
    if verb in ("SELECT", "VALUES"):
        return _joined(verb, _select_target(tokens) if verb == "SELECT" else "")
    if verb in ("INSERT", "REPLACE", "MERGE"):
        tokens.skip_words("OR", "REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK", "INTO")
        return _joined(verb, tokens.name())
    if verb == "UPDATE":
        tokens.skip_words("OR", "REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK", "ONLY")
        return _joined(verb, tokens.name())
    if verb == "DELETE":
        tokens.skip_words("FROM", "ONLY")
        return _joined(verb, tokens.name())
    if verb in ("BEGIN", "START"):
        mode = tokens.word()
        if mode in _BEGIN_MODES:
            return f"BEGIN {mode}"
        rest = [mode]
        while w := tokens.word():
            rest.append(w)
        if "LEVEL" in rest:
            level = rest[rest.index("LEVEL") + 1 : rest.index("LEVEL") + 3]
            if level[:1] != ["READ"] and level[:1] != ["REPEATABLE"]:
                level = level[:1]
            return _joined("BEGIN", *level)
        return "BEGIN"
    if verb in ("COMMIT", "END"):
        return "COMMIT"
    if verb in ("ROLLBACK", "ABORT"):
        tokens.skip_words("TRANSACTION", "WORK")
        return "ROLLBACK TO" if tokens.word() == "TO" else "ROLLBACK"
    if verb in ("LOCK", "TRUNCATE", "COPY"):
        tokens.skip_words("TABLE", "ONLY")
        return _joined(verb, tokens.name())
    if verb in ("CREATE", "DROP", "ALTER"):
        tokens.skip_words("OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "VIRTUAL")
        kind = tokens.word()
        if kind not in _OBJECT_KINDS:
            return _joined(verb, kind)
        tokens.skip_words("IF", "NOT", "EXISTS", "CONCURRENTLY", "ONLY")
        return _joined(verb, kind, tokens.name())
    if verb in ("PRAGMA", "SET", "SHOW", "RESET"):
        tokens.skip_words("SESSION", "LOCAL")
        return _joined(verb, tokens.name())
    return verb


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


# -- where a statement comes from -----------------------------------------------------------

# Drivers, ORMs, the stdlib's wrappers around them and asyncio, which runs the coroutines that
# call them: the line to show is the caller's.
# fmt: off
_SKIP_PACKAGES = frozenset({
    "sqlite3", "_sqlite3", "psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c",
    "psycopg2", "asyncpg", "aiosqlite",
    "django", "sqlalchemy", "contextlib", "functools", "asyncio",
})
# fmt: on
_SKIP_PREFIXES = ("pytest_racecheck.statements", "pytest_racecheck.points")
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


# -- what the reports keep of a statement ---------------------------------------------------

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
