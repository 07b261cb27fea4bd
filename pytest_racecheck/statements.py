"""Statements as implicit sync points: every SQL statement sent through sqlite3 or psycopg 3.

:func:`install` makes each statement a :func:`pytest_racecheck.points.point`, reached just
before the statement runs, with no change to the code under test. Django and SQLAlchemy reach
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

**sqlite3.** ``sqlite3.connect`` and ``dbapi2.connect`` are replaced by a wrapper that
opens the connection through a subclass of the requested ``factory`` and installs a trace
callback on it. SQLite calls it when a statement starts running, for every statement it really
runs: the implicit ``BEGIN`` of the module's legacy transaction mode, ``COMMIT`` / ``ROLLBACK``
from ``commit()``, ``rollback()`` and the context manager, each statement of
``executescript`` and each row of ``executemany``. Checked on Python 3.11 with SQLite 3.40
(``test_trace_callback_runs_before_the_statement_takes_its_lock``): while one connection holds
the write lock, another connection's ``BEGIN IMMEDIATE``, ``INSERT`` or ``UPDATE`` reaches its
callback at once (it is not waiting in the busy handler), and while it sits in the callback a
third connection can take the write lock: the callback comes before the statement takes any
lock, in rollback-journal and WAL mode alike. So a racer held at a statement's point holds
only the locks of the statements before it.

Trigger bodies: SQLite reports each trigger program and each statement in it too. Python 3.10
passes them as comment text (``-- TRIGGER name``), which is skipped; Python 3.11 and later
pass the *outer* statement's text again, so a callback repeating the previous text on the same
connection, with no ``execute`` call in between, is taken as a trigger and makes no point.
The price: consecutive rows of one ``executemany`` whose parameters are identical make one
point, not one each.

An exception raised in a trace callback is swallowed by sqlite3 (the statement runs anyway),
so an error of ``point()`` there cannot stop the statement. A user's own
``set_trace_callback`` keeps working: the connection subclass chains it after the point.
Connections opened before :func:`install`, or by a ``connect`` imported by name before it
(``from sqlite3 import connect``), are not covered.

**psycopg 3**, the sync and the async API alike, patched on the classes: ``Cursor`` and
``AsyncCursor`` ``execute`` / ``executemany`` / ``copy`` / ``stream``, ``ServerCursor`` and
``AsyncServerCursor`` ``execute``, ``Connection`` and ``AsyncConnection`` ``commit`` /
``rollback`` (so also the connection's context-manager exit), ``Transaction.__enter__`` /
``__exit__`` and ``AsyncTransaction.__aenter__`` / ``__aexit__``. ``Connection.execute`` goes
through ``Cursor.execute``: one point. A method's sync and async wrappers share one check; only
the wrapper follows the method's kind, so that the point comes just before the statement goes
out: when a coroutine is awaited, at a ``stream``'s first row, when a ``copy`` block is entered.
In an async racer the point blocks the event loop, which is what holding the racer means: it
runs one coroutine, on a loop of its own. asyncio's frames are skipped like the driver's, so
the name gives the line that awaits; a driver coroutine run as a task of its own
(``asyncio.gather(conn.execute(...))``) has no such line and is named for the line that runs
the loop. Not covered: the implicit ``BEGIN`` psycopg sends before the first statement of a
transaction (it takes no lock and no snapshot, so it is not worth a step), a server cursor's
``FETCH`` / ``CLOSE`` and two-phase commit. The first statement on a connection whose backend
pid is new calls ``on_backend_pid(pid)`` before the point, once per pid, for async connections
as for sync ones.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import sqlite3.dbapi2 as dbapi2
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Any

from pytest_racecheck import points

__all__ = ["install", "installed", "short_sql", "statement_point_name", "uninstall"]

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


# -- where a statement comes from -----------------------------------------------------------

# Drivers, ORMs, the stdlib's wrappers around them and asyncio, which runs the coroutines that
# call them: the line to show is the caller's.
# fmt: off
_SKIP_PACKAGES = frozenset({
    "sqlite3", "_sqlite3", "psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c",
    "django", "sqlalchemy", "contextlib", "functools", "asyncio",
})
# fmt: on
_SKIP_MODULES = frozenset({"pytest_racecheck.statements", "pytest_racecheck.points"})
_skip_by_file: dict[str, bool] = {}
_basename_by_file: dict[str, str] = {}


def _skipped(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    skip = _skip_by_file.get(filename)
    if skip is None:
        module = frame.f_globals.get("__name__")
        module = module if isinstance(module, str) else ""
        skip = module in _SKIP_MODULES or module.partition(".")[0] in _SKIP_PACKAGES
        if not filename.startswith("<"):  # '<string>' is shared by code of many modules
            _skip_by_file[filename] = skip
    return skip


def _where(frame: FrameType | None) -> str:
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
    return f"{short_sql(sql)} @ {_where(frame)}"


# -- sqlite3 ------------------------------------------------------------------------------

_active = False
_original_connect: Any = None
_original_dbapi2_connect: Any = None
_connection_classes: dict[type, type] = {}
_cursor_classes: dict[type, type] = {}
_STATE = "_racecheck_statements"


class _TraceState:
    """Per connection: the user's trace callback and the text of the last traced statement."""

    __slots__ = ("last", "trace", "user")

    def __init__(self) -> None:
        self.user: Callable[[str], object] | None = None
        self.last: str | None = None
        state = self

        def trace(sql: str) -> None:
            # A repeat with no execute() call between is a trigger (see the module's doc).
            if points._racer is not None and _active and sql != state.last:
                state.last = sql
                short = short_sql(sql)
                if short:  # '-- TRIGGER name' (Python 3.10) and other comment-only text
                    points.statement(f"{short} @ {_where(sys._getframe(1))}")
            user = state.user
            if user is not None:
                user(sql)

        self.trace = trace


def _state_of(conn: sqlite3.Connection) -> _TraceState:
    state = conn.__dict__.get(_STATE) if hasattr(conn, "__dict__") else None
    if state is None:
        state = _TraceState()
        if hasattr(conn, "__dict__"):
            conn.__dict__[_STATE] = state
    return state


def _new_call(conn: object) -> None:
    """An execute call starts: the next traced text is a new statement even if it repeats."""
    state = getattr(conn, _STATE, None)
    if state is not None:
        state.last = None


def _cursor_class(factory: Any) -> Any:
    """A subclass of a cursor class whose execute calls mark a new call; other factories as is."""
    if not isinstance(factory, type) or not issubclass(factory, sqlite3.Cursor):
        return factory
    if getattr(factory, "_racecheck_traced", False):
        return factory
    traced = _cursor_classes.get(factory)
    if traced is None:

        class TracedCursor(factory):  # type: ignore[valid-type,misc]
            _racecheck_traced = True

            def execute(self, *args: Any, **kwargs: Any) -> Any:
                if points._racer is not None:
                    _new_call(self.connection)
                return super().execute(*args, **kwargs)

            def executemany(self, *args: Any, **kwargs: Any) -> Any:
                if points._racer is not None:
                    _new_call(self.connection)
                return super().executemany(*args, **kwargs)

            def executescript(self, *args: Any, **kwargs: Any) -> Any:
                if points._racer is not None:
                    _new_call(self.connection)
                return super().executescript(*args, **kwargs)

        TracedCursor.__name__ = TracedCursor.__qualname__ = factory.__name__
        traced = _cursor_classes[factory] = TracedCursor
    return traced


def _connection_class(factory: Any) -> Any:
    """A subclass of the connection class that keeps a user's trace callback and marks calls."""
    if not isinstance(factory, type) or not issubclass(factory, sqlite3.Connection):
        return factory
    if getattr(factory, "_racecheck_traced", False):
        return factory
    traced = _connection_classes.get(factory)
    if traced is None:
        own_cursor = factory.cursor is sqlite3.Connection.cursor

        class TracedConnection(factory):  # type: ignore[valid-type,misc]
            _racecheck_traced = True

            def set_trace_callback(self, trace_callback: Callable[[str], object] | None) -> None:
                state = _state_of(self)
                state.user = trace_callback
                sqlite3.Connection.set_trace_callback(self, state.trace)

            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                if args:
                    args = (_cursor_class(args[0]), *args[1:])
                elif "factory" in kwargs:
                    kwargs["factory"] = _cursor_class(kwargs["factory"])
                elif own_cursor:
                    kwargs["factory"] = _cursor_class(sqlite3.Cursor)
                return super().cursor(*args, **kwargs)

            def execute(self, *args: Any, **kwargs: Any) -> Any:
                if points._racer is not None:
                    _new_call(self)
                return super().execute(*args, **kwargs)

            def executemany(self, *args: Any, **kwargs: Any) -> Any:
                if points._racer is not None:
                    _new_call(self)
                return super().executemany(*args, **kwargs)

            def executescript(self, *args: Any, **kwargs: Any) -> Any:
                if points._racer is not None:
                    _new_call(self)
                return super().executescript(*args, **kwargs)

        TracedConnection.__name__ = TracedConnection.__qualname__ = (
            factory.__name__
        )  # module: this one
        traced = _connection_classes[factory] = TracedConnection
    return traced


_FACTORY_POSITION = 5  # connect(database, timeout, detect_types, isolation_level, cst, factory)


def _traced_connect(*args: Any, **kwargs: Any) -> Any:
    if len(args) > _FACTORY_POSITION:
        args = (
            *args[:_FACTORY_POSITION],
            _connection_class(args[_FACTORY_POSITION]),
            *args[_FACTORY_POSITION + 1 :],
        )
    else:
        kwargs["factory"] = _connection_class(kwargs.get("factory", sqlite3.Connection))
    conn = _original_connect(*args, **kwargs)
    if isinstance(conn, sqlite3.Connection):
        state = _state_of(conn)
        sqlite3.Connection.set_trace_callback(conn, state.trace)
    return conn


# -- psycopg 3 ----------------------------------------------------------------------------

_MISSING = object()
_patches: list[tuple[Any, str, object]] = []  # (class or module, name, original)
_on_backend_pid: Callable[[int], None] | None = None
_on_connect: Callable[[], None] | None = None
_seen_pids: set[int] = set()


def _query_text(query: Any, conn: Any) -> str:
    """The SQL text of a psycopg query: str, bytes, ``sql.Composable`` or a template."""
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string(conn))
        except Exception:
            return _composable_text(query)
    strings = getattr(query, "strings", None)  # string.templatelib.Template (3.14)
    if isinstance(strings, tuple):
        return "?".join(str(s) for s in strings)
    return str(query)


def _composable_text(query: Any) -> str:
    """Rebuild a ``sql.Composed`` without a connection: SQL as is, names quoted, values '?'."""
    kind = type(query).__name__
    if kind == "Composed":  # iterates over its parts
        return "".join(_composable_text(part) for part in query)
    obj = getattr(query, "_obj", None)
    if kind == "SQL" and isinstance(obj, str):
        return obj
    if kind == "Identifier" and isinstance(obj, tuple):
        return ".".join('"' + str(o).replace('"', '""') + '"' for o in obj)
    return "?"


def _report_backend_pid(conn: Any) -> None:
    """Tell ``on_backend_pid`` about the connection's backend, once per pid."""
    callback = _on_backend_pid
    if callback is not None:
        try:
            pid = int(conn.pgconn.backend_pid)
        except Exception:
            pid = 0
        if pid and pid not in _seen_pids:
            _seen_pids.add(pid)
            callback(pid)


def _pg_point(conn: Any, short: str, frame: FrameType | None) -> None:
    _report_backend_pid(conn)
    points.statement(f"{short} @ {_where(frame)}")


def _patch_connect(cls: type | None, is_async: bool) -> None:
    """``connect`` says when it starts (``on_connect``) and reports the new backend's pid as
    soon as it has one: while it waits for the server it waits for no racer, and the probes
    must know that before any statement names the backend."""
    if cls is None or not isinstance(cls.__dict__.get("connect"), classmethod):
        return
    original = cls.__dict__["connect"]
    function = original.__func__

    def starting() -> bool:
        announce = _on_connect
        if points._racer is None or not _active or announce is None:
            return False
        announce()
        return True

    async def connect_async(klass: Any, *args: Any, **kwargs: Any) -> Any:
        announced = starting()
        conn = await function(klass, *args, **kwargs)
        if announced:
            _report_backend_pid(conn)
        return conn

    def connect_sync(klass: Any, *args: Any, **kwargs: Any) -> Any:
        announced = starting()
        conn = function(klass, *args, **kwargs)
        if announced:
            _report_backend_pid(conn)
        return conn

    connect = connect_async if is_async else connect_sync
    functools.update_wrapper(connect, function)
    _patches.append((cls, "connect", original))
    cls.connect = classmethod(connect)  # type: ignore[attr-defined]


def _pg_query_point(conn: Any, query: Any, frame: FrameType | None) -> None:
    _pg_point(conn, short_sql(_query_text(query, conn)) or "SQL", frame)


# A hook's check: called with the frame of the wrapped method's caller and the method's own
# arguments, in a race only; it reaches the point if the call sends a statement. The sync and
# the async methods share it; only the wrapper around it follows the kind of the method.
_Before = Callable[..., None]


def _wrap_function(before: _Before, original: Any) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if points._racer is not None and _active:
            before(sys._getframe(1), self, *args, **kwargs)
        return original(self, *args, **kwargs)

    return method


def _wrap_coroutine(before: _Before, original: Any) -> Any:
    # The point is reached when the call is awaited, as the statement goes out then. Its
    # frame's caller is then the coroutine that awaits it.
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if points._racer is not None and _active:
            before(sys._getframe(1), self, *args, **kwargs)
        return await original(self, *args, **kwargs)

    return method


def _wrap_generator(before: _Before, original: Any) -> Any:
    # A generator, as the original: the query goes out at the first next().
    def method(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if points._racer is not None and _active:
            before(sys._getframe(1), self, *args, **kwargs)
        return (yield from original(self, *args, **kwargs))

    return method


def _wrap_async_generator(before: _Before, original: Any) -> Any:
    # An async generator: the query goes out at the first __anext__(); closing this one
    # closes the original, which then ends the query as it would have.
    async def method(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if points._racer is not None and _active:
            before(sys._getframe(1), self, *args, **kwargs)
        async with contextlib.aclosing(original(self, *args, **kwargs)) as rows:
            async for row in rows:
                yield row

    return method


def _wrap_context_manager(before: _Before, original: Any) -> Any:
    # The statement goes out on entering the block, so the point is there, not at the call.
    @contextlib.contextmanager
    def method(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if points._racer is not None and _active:
            before(sys._getframe(1), self, *args, **kwargs)
        with original(self, *args, **kwargs) as value:
            yield value

    return method


def _wrap_async_context_manager(before: _Before, original: Any) -> Any:
    @contextlib.asynccontextmanager
    async def method(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if points._racer is not None and _active:
            before(sys._getframe(1), self, *args, **kwargs)
        async with original(self, *args, **kwargs) as value:
            yield value

    return method


def _patch(
    cls: type | None, attr: str, wrap: Callable[[_Before, Any], Any], before: _Before
) -> None:
    """Replace ``cls.attr`` by ``wrap(before, cls.attr)``; a class or method that this version
    of psycopg does not have is left out."""
    if cls is None:
        return
    inherited = getattr(cls, attr, None)
    if inherited is None:
        return
    original = cls.__dict__.get(attr, _MISSING)
    wrapper = wrap(before, inherited)
    functools.update_wrapper(wrapper, inherited)
    _patches.append((cls, attr, original))
    setattr(cls, attr, wrapper)


def _install_psycopg() -> None:
    try:
        import psycopg
        from psycopg import pq
    except ImportError:
        return
    idle = pq.TransactionStatus.IDLE
    ok = pq.ConnStatus.OK

    def query(frame: FrameType, cursor: Any, *args: Any, **kwargs: Any) -> None:
        # execute(query, ...), executemany(query, ...), stream(query, ...), copy(statement, ...)
        sql = args[0] if args else kwargs.get("query", kwargs.get("statement"))
        _pg_query_point(cursor.connection, sql, frame)

    def end(short: str) -> _Before:
        def before(frame: FrameType, conn: Any) -> None:
            # Idle: nothing is sent. Inside transaction(): psycopg refuses the call.
            if conn.pgconn.transaction_status != idle and not getattr(conn, "_num_transactions", 0):
                _pg_point(conn, short, frame)

        return before

    def transaction_enter(frame: FrameType, tx: Any) -> None:
        if tx.pgconn.status != ok:
            return
        conn = tx.connection
        if tx.pgconn.transaction_status == idle:
            try:
                begin = short_sql(_query_text(conn._get_tx_start_command(), conn))
            except Exception:
                begin = "BEGIN"
            short = begin or "BEGIN"
        else:
            short = "SAVEPOINT"
        _pg_point(conn, short, frame)

    def transaction_exit(frame: FrameType, tx: Any, exc_type: Any, exc_val: Any, *_: Any) -> None:
        if tx.pgconn.status != ok:
            return
        outer = getattr(tx, "_outer_transaction", tx.savepoint_name is None)
        if not exc_val and not tx.force_rollback:
            short = "COMMIT" if outer else "RELEASE"
        else:
            short = "ROLLBACK" if outer else "ROLLBACK TO"
        _pg_point(tx.connection, short, frame)

    commit, rollback = end("COMMIT"), end("ROLLBACK")
    for api, call, rows, block in (
        ("", _wrap_function, _wrap_generator, _wrap_context_manager),
        ("Async", _wrap_coroutine, _wrap_async_generator, _wrap_async_context_manager),
    ):
        a = "a" if api else ""  # __enter__ / __aenter__
        cursor = getattr(psycopg, f"{api}Cursor", None)
        connection = getattr(psycopg, f"{api}Connection", None)
        transaction = getattr(psycopg, f"{api}Transaction", None)
        _patch(cursor, "execute", call, query)
        _patch(cursor, "executemany", call, query)
        _patch(cursor, "copy", block, query)
        _patch(cursor, "stream", rows, query)
        _patch(getattr(psycopg, f"{api}ServerCursor", None), "execute", call, query)
        _patch(connection, "commit", call, commit)
        _patch(connection, "rollback", call, rollback)
        _patch(transaction, f"__{a}enter__", call, transaction_enter)
        _patch(transaction, f"__{a}exit__", call, transaction_exit)
        _patch_connect(connection, is_async=bool(api))
    if "connect" in vars(psycopg):  # psycopg.connect is Connection.connect, bound at import
        _patches.append((psycopg, "connect", vars(psycopg)["connect"]))
        psycopg.connect = psycopg.Connection.connect  # type: ignore[assignment]


# -- install / uninstall ------------------------------------------------------------------


def install(
    on_backend_pid: Callable[[int], None] | None = None,
    on_connect: Callable[[], None] | None = None,
) -> None:
    """Make every SQL statement sent through sqlite3 and psycopg 3 in this process a sync point.

    Call it in a racer before the code under test opens connections. ``on_backend_pid`` is
    called with each new PostgreSQL backend pid as its psycopg connection is made (or, for a
    connection made otherwise, before its first point); ``on_connect`` as a psycopg connection
    starts to be made. Calling it again only replaces the callbacks.
    """
    global _active, _original_connect, _original_dbapi2_connect, _on_backend_pid, _on_connect
    _on_backend_pid = on_backend_pid
    _on_connect = on_connect
    _seen_pids.clear()
    if _active:
        return
    _original_connect = sqlite3.connect
    _original_dbapi2_connect = dbapi2.connect
    sqlite3.connect = dbapi2.connect = _traced_connect  # type: ignore[assignment]
    _install_psycopg()
    _active = True


def uninstall() -> None:
    """Undo :func:`install`: the drivers' functions and classes are the originals again.

    Connections opened meanwhile keep their (now inert) trace callback and class; a user's
    trace callback on them keeps working.
    """
    global _active, _on_backend_pid, _on_connect
    if not _active:
        return
    _active = False
    sqlite3.connect = _original_connect
    dbapi2.connect = _original_dbapi2_connect
    while _patches:
        cls, attr, original = _patches.pop()
        if original is _MISSING:
            delattr(cls, attr)
        else:
            setattr(cls, attr, original)
    _on_backend_pid = _on_connect = None
    _seen_pids.clear()


def installed() -> bool:
    """Whether :func:`install` is in force in this process."""
    return _active
