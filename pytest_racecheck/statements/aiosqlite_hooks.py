"""Every aiosqlite statement as a point, held on the racer's own thread.

aiosqlite runs each connection's sqlite3 calls on a thread of its own: the coroutine queues a
function and awaits its result. The connection is opened there by ``sqlite3.connect``, so
:mod:`.sqlite_trace` traces its statements as it traces any sqlite3 connection: each statement
SQLite really runs (the implicit ``BEGIN``, each statement of a script, ``COMMIT``) reaches its
trace callback, before it takes any lock. But that callback runs on aiosqlite's thread.

``Connection._execute``, through which every call of a connection and its cursors goes, is
patched: in a race it notes the line that awaits it (the first frame outside aiosqlite, as
every point's name has) and the running event loop, and the queued function relays its
statements to that loop's thread (:func:`.sqlite_trace.relay_points`). There the point is
reached, as for any async driver: the loop is blocked while the racer is held, and aiosqlite's
thread waits for the point to be passed before SQLite runs the statement. So the racer is held
on one thread, and two connections used at once (``asyncio.gather``) reach their points one at
a time. If the loop has stopped or closed before it could take the point (a call nobody
awaits any more), the statement runs without one rather than wait for ever.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from types import ModuleType
from typing import Any

from pytest_racecheck.instrument import points
from pytest_racecheck.statements import sqlite_trace
from pytest_racecheck.statements.naming import where
from pytest_racecheck.statements.patching import Patches, forget, when_imported
from pytest_racecheck.wire.messages import Statement

_active = False
_patches = Patches()

_WAKE_S = 0.05
"""How often aiosqlite's thread, waiting for a relayed point, checks that the loop still runs."""


class _Relay:
    """One statement's point, reached on the loop's thread while aiosqlite's thread waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, sql: str, conn: int) -> None:
        self.loop = loop
        self.name = name
        self.sql = sql
        self.conn = conn
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.started = False
        self.abandoned = False
        self.error: BaseException | None = None

    def on_loop(self) -> None:
        with self.lock:
            if self.abandoned:
                return
            self.started = True
        try:
            info = Statement(self.sql, "sqlite") if self.sql else None
            points.statement(self.name, self.sql, self.conn, info)
        except BaseException as exc:  # handed to the waiting thread, not to the loop
            self.error = exc
        finally:
            self.done.set()

    def wait(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.on_loop)
        except RuntimeError:  # the loop is closed: nobody is there to hold
            return
        while not self.done.wait(_WAKE_S):
            with self.lock:
                if not self.started and (self.loop.is_closed() or not self.loop.is_running()):
                    self.abandoned = True
                    return
        if self.error is not None:
            raise self.error


def _relayed(loop: asyncio.AbstractEventLoop, origin: str, function: Any) -> Any:
    """``function`` as aiosqlite's thread will run it: its statements' points on ``loop``."""

    def reach(short: str, sql: str, conn: int) -> None:
        _Relay(loop, f"{short} @ {origin}", sql, conn).wait()

    def run() -> Any:
        sqlite_trace.relay_points(reach)
        try:
            return function()
        finally:
            sqlite_trace.relay_points(None)

    return run


def _patch(aiosqlite: ModuleType) -> None:
    import aiosqlite.core

    cls = aiosqlite.core.Connection
    original = cls.__dict__.get("_execute")
    if original is None:
        return

    async def _execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if points._racer is None or not _active:
            return await original(self, fn, *args, **kwargs)
        origin = where(sys._getframe(1))
        loop = asyncio.get_running_loop()
        function = functools.partial(fn, *args, **kwargs)
        return await original(self, _relayed(loop, origin, function))

    functools.update_wrapper(_execute, original)
    _patches.replace(cls, "_execute", _execute)


def install() -> None:
    """Patch ``aiosqlite.Connection._execute`` when aiosqlite is imported (now, if it is)."""
    global _active
    if not _active:
        _active = True
        when_imported("aiosqlite", _patch)


def uninstall() -> None:
    global _active
    _active = False
    forget("aiosqlite")
    _patches.restore()
