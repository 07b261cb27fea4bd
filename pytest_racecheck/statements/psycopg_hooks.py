"""Every psycopg 3 statement as a point, for the sync and the async API alike.

Patched on the classes: ``Cursor`` and ``AsyncCursor`` ``execute`` / ``executemany`` / ``copy``
/ ``stream``, ``ServerCursor`` and ``AsyncServerCursor`` ``execute``, ``Connection`` and
``AsyncConnection`` ``commit`` / ``rollback`` (so also the connection's context-manager exit),
``Transaction.__enter__`` / ``__exit__`` and ``AsyncTransaction.__aenter__`` / ``__aexit__``.
``Connection.execute`` goes through ``Cursor.execute``: one point. A method's sync and async
wrappers share one check; only the wrapper follows the method's kind, so that the point comes
just before the statement goes out: when a coroutine is awaited, at a ``stream``'s first row,
when a ``copy`` block is entered. In an async racer the point blocks the event loop, which is
what holding the racer means: it runs one coroutine, on a loop of its own. asyncio's frames are
skipped like the driver's, so the name gives the line that awaits; a driver coroutine run as a
task of its own (``asyncio.gather(conn.execute(...))``) has no such line and is named for the
line that runs the loop. Not covered: the implicit ``BEGIN`` psycopg sends before the first
statement of a transaction (it takes no lock and no snapshot, so it is not worth a step), a
server cursor's ``FETCH`` / ``CLOSE`` and two-phase commit.

``Connection.connect`` and ``AsyncConnection.connect`` (and ``psycopg.connect``) call
``on_connect()`` as they start and ``on_backend_pid(pid)`` as soon as the connection exists: a
racer waiting for its server to accept it waits for no racer, and the probes must know that. A
connection made otherwise (before :func:`install`) reports its pid at its first statement,
before the point; each pid once.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Any

from pytest_racecheck.instrument import points
from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.statements import pg_backends
from pytest_racecheck.statements.naming import query_text
from pytest_racecheck.statements.patching import Patches

_active = False
# -- psycopg 3 ----------------------------------------------------------------------------

_patches = Patches()


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
    """Tell the controller about the connection's backend, once per pid."""
    pg_backends.report_of(lambda: conn.pgconn.backend_pid)


def _pg_point(conn: Any, short: str, frame: FrameType | None, sql: str | None = None) -> None:
    pg_backends.statement(lambda: conn.pgconn.backend_pid, short, frame, sql, conn)


def _query_text(query: Any, conn: Any) -> str:
    return query_text(query, conn, _composable_text)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def bound_text(sql: str, params: Any) -> str:
    """``sql`` with psycopg's ``%s`` / ``%(name)s`` placeholders replaced by the parameters as
    literals, for the reports (never sent anywhere); text it cannot bind is left as it is."""
    if not params:
        return sql
    try:
        if isinstance(params, dict):
            return re.sub(
                r"%\((\w+)\)s", lambda m: _literal(params[m.group(1)]), sql.replace("%%", "\0")
            ).replace("\0", "%")
        values = iter(list(params))
        return re.sub(r"%[sbt]", lambda m: _literal(next(values)), sql.replace("%%", "\0")).replace(
            "\0", "%"
        )
    except (KeyError, StopIteration, TypeError):
        return sql


def _patch_connect(cls: type | None, is_async: bool) -> None:
    """``connect`` says when it starts (``on_connect``) and reports the new backend's pid as
    soon as it has one: while it waits for the server it waits for no racer, and the probes
    must know that before any statement names the backend."""
    if cls is None or not isinstance(cls.__dict__.get("connect"), classmethod):
        return
    original = cls.__dict__["connect"]
    function = original.__func__

    def starting() -> bool:
        return _active and pg_backends.connecting()

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
    _patches.replace(cls, "connect", classmethod(connect))


def _pg_query_point(conn: Any, query: Any, frame: FrameType | None, params: Any = None) -> None:
    text = _query_text(query, conn)
    _pg_point(conn, short_sql(text) or "SQL", frame, bound_text(text, params))


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
    wrapper = wrap(before, inherited)
    functools.update_wrapper(wrapper, inherited)
    _patches.replace(cls, attr, wrapper)


def _query_check(frame: FrameType, cursor: Any, *args: Any, **kwargs: Any) -> None:
    """The statement and its parameters, wherever the caller put them: ``execute(query, ...)``,
    ``executemany(query, ...)``, ``stream(query, ...)``, ``copy(statement, ...)``."""
    sql = args[0] if args else kwargs.get("query", kwargs.get("statement"))
    params = args[1] if len(args) > 1 else kwargs.get("params")
    _pg_query_point(cursor.connection, sql, frame, params)


def _end_check(short: str, idle: Any) -> _Before:
    """``commit()`` / ``rollback()`` reach the point only when a statement goes out: an idle
    connection sends nothing, and inside ``transaction()`` psycopg refuses the call."""

    def before(frame: FrameType, conn: Any) -> None:
        if conn.pgconn.transaction_status != idle and not getattr(conn, "_num_transactions", 0):
            _pg_point(conn, short, frame)

    return before


def _transaction_enter_check(idle: Any, ok: Any) -> _Before:
    """Entering ``transaction()`` sends BEGIN (as the connection's isolation level makes it)
    on an idle connection, else SAVEPOINT; a broken connection sends nothing."""

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

    return transaction_enter


def _transaction_exit_check(ok: Any) -> _Before:
    """Leaving ``transaction()`` commits or rolls back, the outer block its transaction and an
    inner one its savepoint; a broken connection sends nothing."""

    def transaction_exit(frame: FrameType, tx: Any, exc_type: Any, exc_val: Any, *_: Any) -> None:
        if tx.pgconn.status != ok:
            return
        outer = getattr(tx, "_outer_transaction", tx.savepoint_name is None)
        if not exc_val and not tx.force_rollback:
            short = "COMMIT" if outer else "RELEASE"
        else:
            short = "ROLLBACK" if outer else "ROLLBACK TO"
        _pg_point(tx.connection, short, frame)

    return transaction_exit


def _patch_all() -> None:
    """One check per method, shared by the sync and the async classes, wrapped as the method's
    kind asks. psycopg is imported here only, once a race asks for statements: it may be absent."""
    try:
        import psycopg
        from psycopg import pq
    except ImportError:
        return
    idle = pq.TransactionStatus.IDLE
    ok = pq.ConnStatus.OK
    query = _query_check
    commit, rollback = _end_check("COMMIT", idle), _end_check("ROLLBACK", idle)
    transaction_enter = _transaction_enter_check(idle, ok)
    transaction_exit = _transaction_exit_check(ok)
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
        _patches.replace(psycopg, "connect", psycopg.Connection.connect)


def install() -> None:
    """Patch psycopg's classes (once)."""
    global _active
    if not _active:
        _patch_all()
        _active = True


def uninstall() -> None:
    global _active
    _active = False
    _patches.restore()
