"""Sync points: named places in code under test where the controller can hold a racer.

Outside a race, :func:`point` is one global lookup and a return. Inside a racer it records where
the racer is and, when the controller asked to hold that point, reports the arrival and waits for
leave to pass. Functions that must not import the plugin get points from outside: the racer wraps
them (``pause_after`` / ``pause_before``) in its own process.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from pytest_racecheck.instrument import start_effects
from pytest_racecheck.wire.messages import At, Pass, Statement
from pytest_racecheck.wire.outcome import MAX_STEPS, Step

START_POINT = "start"
"""The point every racer is at when a round releases it: explore holds it there and lets racers
go to their first point one at a time; a schedule may name it (``"1:start"``)."""


class _Channel(Protocol):
    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...


class RacerPoints:
    """A racer's view of the points: which to hold, where it has been this round.

    Only the thread that runs the round (the racer's main thread, which also runs an async
    racer's loop) is ever held: the pipe to the controller has one conversation at a time, and
    a thread of the code under test is no unit the controller can schedule. Points reached on
    other threads are let through and recorded in :attr:`other_threads`, so the report can say
    what ran outside the schedule.
    """

    def __init__(self, channel: _Channel, held: Mapping[str, int], hold_all: bool = False) -> None:
        self._channel = channel
        self._held = dict(held)
        self._hold_all = hold_all
        self._left: Counter[str] = Counter()
        self._thread = threading.get_ident()
        self.last: str | None = None
        self.steps: list[Step] = []
        """Points this round's thread reached (the first :data:`MAX_STEPS`), for the reports."""
        self.reached = 0
        """How many points this round's thread reached."""
        self.other_threads: list[str] = []
        """Points reached on other threads this round, let through (the first MAX_STEPS)."""

    def begin_round(self) -> None:
        self._left = Counter(self._held)
        self._thread = threading.get_ident()
        self.last = None
        self.steps, self.reached, self.other_threads = [], 0, []

    def reach(
        self,
        name: str,
        statement: bool = False,
        sql: str | None = None,
        conn: int = 0,
        info: Statement | None = None,
    ) -> None:
        if threading.get_ident() != self._thread:
            if len(self.other_threads) < MAX_STEPS:
                self.other_threads.append(name)
            return
        if not statement:  # the report's "last point" is the last place the code named
            self.last = name
        self.reached += 1
        reached = _real_ns()
        if self.holds(name):
            self._hold(name, info)
        if len(self.steps) < MAX_STEPS:  # the timeline of the round, for the reports
            self.steps.append(Step(name, reached, _real_ns(), sql, conn))

    def start(self) -> None:
        """The round's start: held here when the race holds it, so that who goes first to its
        first point (and takes a file lock on the way) is the race's choice, not timing's. Not
        a point the code reached: it is neither counted nor in the round's steps."""
        start_effects.collect()  # what a round that ended before its first point left
        if self.holds(START_POINT):
            self._hold(START_POINT, start=True)
            if self._hold_all:
                start_effects.watch()
                start_effects.hold_steps(self._outside_step)

    def end_round(self) -> None:
        start_effects.hold_steps(None)

    def _outside_step(self, name: str) -> None:
        self.reach(name, statement=True, info=Statement("", outside=True))

    def holds(self, name: str) -> bool:
        """Whether the race holds this arrival at ``name`` (counting it as held if so)."""
        if self._hold_all:
            return True
        if self._left[name] > 0:
            self._left[name] -= 1
            return True
        return False

    def _hold(self, name: str, info: Statement | None = None, start: bool = False) -> None:
        self._channel.send(At(name, info, start, start_effects.collect()))
        reply = self._channel.recv()
        if reply != Pass(name):
            raise RuntimeError(f"racecheck: expected leave to pass {name!r}, got {reply!r}")


def _real_ns() -> int:
    """The monotonic clock, also under a virtual clock: a step's times are real."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


_racer: RacerPoints | None = None


def point(name: str) -> None:
    """Mark a sync point. Outside a race this returns at once and does nothing."""
    racer = _racer
    if racer is not None:
        racer.reach(name)


def statement(
    name: str, sql: str | None = None, conn: int = 0, info: Statement | None = None
) -> None:
    """A SQL statement about to run (see :mod:`pytest_racecheck.statements`): a point too.

    ``sql`` is its text for the reports (parameters bound where known), ``conn`` the racer's
    number for the connection that sends it, ``info`` what explore's search reads to tell which
    statements conflict (the whole text, the kind of database, the transaction)."""
    racer = _racer
    if racer is not None:
        racer.reach(name, statement=True, sql=sql, conn=conn, info=info)


def activate(racer: RacerPoints | None) -> None:
    """Make this process a racer (or stop being one): only racer processes ever call this."""
    global _racer
    _racer = racer


def last_point() -> str | None:
    return _racer.last if _racer is not None else None


def pause_point_name(where: str, target: str) -> str:
    """The point that ``pause_after`` / ``pause_before`` adds around ``target``."""
    return f"{where} {target}"


def parse_target(target: str) -> tuple[str, list[str]]:
    """Split ``package.module:Class.function`` into the module and the attribute path."""
    module, sep, attrs = target.partition(":")
    if not sep or not module or not attrs or not all(attrs.split(".")):
        raise ValueError(
            f"cannot pause at {target!r}: name the function as 'package.module:function' "
            "(or 'package.module:Class.method')"
        )
    return module, attrs.split(".")


def resolve_target(target: str) -> tuple[Any, str, Any]:
    """Import ``target``'s module; return the owner object, the attribute name and the function.

    ``Class.method`` is looked up as Python does, through the class's MRO, so a method a base
    class defines is found (``filelock:FileLock.acquire``); the owner stays the class the user
    named, so the wrapper goes there: that class and its subclasses pause, the base does not.
    The lookup is static, so a staticmethod or classmethod keeps its wrapper.
    """
    module_name, attrs = parse_target(target)
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot pause at {target!r}: {exc}") from exc
    for attr in attrs[:-1]:
        owner = getattr(owner, attr, None)
        if owner is None:
            raise ValueError(f"cannot pause at {target!r}: {module_name} has no {attr!r}")
    name = attrs[-1]
    fn: Any = None
    if isinstance(owner, type):
        try:
            fn = inspect.getattr_static(owner, name)
        except AttributeError:
            fn = None
        if isinstance(fn, (property, functools.cached_property)):
            raise ValueError(
                f"cannot pause at {target!r}: {owner.__qualname__}.{name} is a property, not a "
                "function; pause a function its getter calls, or the getter itself via a "
                "module-level function"
            )
    else:
        fn = getattr(owner, name, None)
    if fn is None or not (callable(fn) or isinstance(fn, (staticmethod, classmethod))):
        raise ValueError(f"cannot pause at {target!r}: no function {name!r} there")
    return owner, name, fn


def install_pause(target: str, where: str) -> None:
    """Wrap ``target`` in this process so that it passes a point before or after its body."""
    owner, attr, fn = resolve_target(target)
    name = pause_point_name(where, target)
    wrapper_kind: Any = None
    inner: Any = fn
    if isinstance(fn, (staticmethod, classmethod)):
        wrapper_kind, inner = type(fn), fn.__func__

    @functools.wraps(inner)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if where == "before":
            point(name)
            return inner(*args, **kwargs)
        try:
            return inner(*args, **kwargs)
        finally:
            point(name)

    setattr(owner, attr, wrapper_kind(paused) if wrapper_kind is not None else paused)
