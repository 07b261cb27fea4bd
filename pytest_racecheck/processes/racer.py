"""What runs inside each racer process.

A racer serves one race, every round of it: it loads the test's function, warms up, then
loops: wait at the gate, call the function, send the outcome. It is spawned for its race, or
forked by a racer host (:mod:`pytest_racecheck.processes.hosts`), or was a spare started ahead
(:mod:`pytest_racecheck.processes.spares`); the last two are handed the test process's context
first. It never outlives its controller: a watchdog thread ends it when its parent is gone, and it
ignores Ctrl-C so that the controller alone decides how a race ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import dill

from pytest_racecheck.backends.address import handles_in
from pytest_racecheck.instrument import points, start_effects
from pytest_racecheck.linux import descendants
from pytest_racecheck.processes.barrier import GateClosed, StartGate
from pytest_racecheck.wire.assignment import Assignment, preload
from pytest_racecheck.wire.messages import (
    BackendPid,
    Connecting,
    Ready,
    Result,
    Setup,
    SetupError,
    Waiting,
    Warm,
)
from pytest_racecheck.wire.messages import send as wire_send
from pytest_racecheck.wire.outcome import Outcome, RaisedError

WATCHDOG_S = 0.2

_current: int | None = None


def current_racer() -> int | None:
    """This racer's number (0 to processes - 1), or None outside a racer process."""
    return _current


class ReturnValueNotSendable(Exception):
    """The racer's function returned a value that cannot be pickled to the controller."""


def _watch_controller(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_S)
        if os.getppid() != parent_pid:
            # The controller is gone (a SIGKILL of pytest): what this racer started goes too.
            descendants.end_descendants()
            os._exit(70)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM from the controller (a racer that did not leave in time): end what this racer
    started, then the racer."""
    descendants.end_descendants()
    os._exit(128 + signum)


def racer_main(
    index: int,
    channel: Any,
    gate: StartGate,
    controller_pid: int,
    spare_preload: tuple[str, ...] | None = None,
    assignment: Assignment | None = None,
) -> None:
    """The racer's whole life; the entry point of its process.

    ``spare_preload`` makes it a spare (see :mod:`pytest_racecheck.processes.spares`): it imports
    those modules, says it waits, and waits until a race takes it, before the Setup any racer waits
    for. ``assignment`` is the race's context, for a racer forked by a host.
    """
    channel, controller_alive = _become_racer(index, channel, controller_pid)
    setup = _wait_for_race(channel, spare_preload, assignment)
    if setup is None:
        return
    loaded = _load(setup, channel)
    if loaded is None:
        return
    (fn, args, kwargs), teardowns = loaded
    # A database that cannot be reached now fails the first round, where it is reported.
    with contextlib.suppress(Exception):
        _warm_up(fn, args, kwargs)
    call = _caller(fn, args, kwargs)
    racer_points = points.RacerPoints(channel, setup.held_points, setup.hold_all)
    points.activate(racer_points)
    if setup.clock_path:
        from pytest_racecheck.clock import in_racer as virtual_time

        virtual_time.attach(channel, racer_points.holds)
    channel.send(Ready(os.getpid()))
    try:
        while True:
            generation = gate.wait(index, controller_alive)
            if generation == 0:  # the warm-up pass: exercise the gate, call nothing
                channel.send(Warm())
                continue
            _run_round(index, generation, call, setup, racer_points, channel)
    except GateClosed:
        pass
    finally:
        points.activate(None)
        for racer_teardown in teardowns:
            with contextlib.suppress(BaseException):
                run_hook(racer_teardown)
        # The race is over: no process the code under test started may outlive it.
        descendants.end_descendants()
    _leave()


def _become_racer(
    index: int, channel: Any, controller_pid: int
) -> tuple[_OneSenderAtATime, Callable[[], bool]]:
    """First of all, so that no later step can outlive the controller or be cut short by the
    terminal: Ctrl-C is the controller's alone, its SIGTERM or its death ends this racer and
    what it started. Returns the racer's channel and how the gate asks whether it still runs."""
    global _current
    _current = index
    channel = _OneSenderAtATime(channel)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminated)
    descendants.keep_descendants()
    # The parent is the controller, or with forkserver the fork server, which ends with it.
    parent_pid = os.getppid() if os.getppid() != 1 else controller_pid
    threading.Thread(target=_watch_controller, args=(parent_pid,), daemon=True).start()

    def controller_alive() -> bool:
        return os.getppid() == parent_pid

    return channel, controller_alive


def _wait_for_race(
    channel: _OneSenderAtATime, spare_preload: tuple[str, ...] | None, assignment: Assignment | None
) -> Setup | None:
    """The race's Setup, once this racer has a race: a spare first waits to be taken, a forked
    racer first takes on the test process's context. None: the race ended before it began."""
    if spare_preload is not None:
        preload(spare_preload)
        channel.send(Waiting())
        try:
            assignment = channel.recv()
        except (EOFError, OSError):
            return None
        if not isinstance(assignment, Assignment):
            return None  # the pool ended this spare
    if assignment is not None:
        assignment.apply()
    try:
        setup = channel.recv()
    except (EOFError, OSError):
        return None  # the race ended before it began (its start-up timed out)
    assert isinstance(setup, Setup), setup
    return setup


def _load(
    setup: Setup, channel: _OneSenderAtATime
) -> tuple[tuple[Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]] | None:
    """The function to race and the tear-downs, with the set-ups run and pauses installed.
    None when any of it failed: the controller was told which step (load or set up), and
    what a set-up had started is ended, since no tear-down will run."""
    doing = "load"
    try:
        _prepare(setup, channel)
        setups, teardowns = dill.loads(setup.hooks) if setup.hooks else ((), ())
        doing = "set up"
        for racer_setup in setups:
            run_hook(racer_setup)
        doing = "load"
        for target in setup.pause_after:
            points.install_pause(target, "after")
        for target in setup.pause_before:
            points.install_pause(target, "before")
        fn, args, kwargs = dill.loads(setup.call)
    except BaseException as exc:
        channel.send(SetupError(RaisedError.from_exception(exc), doing))
        descendants.end_descendants()  # what a racer_setup started before it failed
        return None
    return (fn, args, kwargs), teardowns


def _run_round(
    index: int,
    generation: int,
    call: Callable[[], Any],
    setup: Setup,
    racer_points: points.RacerPoints,
    channel: _OneSenderAtATime,
) -> None:
    """One released round: call the function, time it by the real clock, send the outcome.
    Whatever the function raises is part of the outcome, never the racer's end."""
    racer_points.begin_round()
    released = _real_ns()
    value: Any = None
    error: RaisedError | None = None
    _racing(setup, True)
    try:
        if not setup.clock_path:  # the clock starts with the round: no racer waits
            racer_points.start()
        value = call()
    except BaseException as exc:
        error = RaisedError.from_exception(exc)
    finally:
        racer_points.end_round()
        _racing(setup, False)
    ended = _real_ns()
    outcome = Outcome(
        index,
        value,
        error,
        released,
        ended,
        racer_points.last,
        tuple(racer_points.steps),
        racer_points.reached,
        tuple(racer_points.other_threads),
    )
    _send_result(channel, generation, outcome)


def _send_result(channel: _OneSenderAtATime, generation: int, outcome: Outcome) -> None:
    """A return value that cannot be pickled fails its round as an error the test can read,
    instead of ending the racer."""
    try:
        channel.send(Result(generation, outcome, start_effects.collect()))
    except Exception as exc:
        value = outcome.value
        unsendable = ReturnValueNotSendable(
            f"{type(value).__name__} {_short_repr(value)} cannot be pickled: {exc}"
        )
        error = RaisedError.from_exception(unsendable)
        unsent = dataclasses.replace(outcome, value=None, error=error)
        channel.send(Result(generation, unsent))


class _OneSenderAtATime:
    """The racer's end of its pipe, whose messages never interleave: a connection pool's own
    threads may report a new connection while the main thread sends a result."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._lock:
            wire_send(self._channel, message)

    def notify(self, message: Any) -> None:
        """Send news the controller may do without (a backend pid, a connection starting),
        from any thread: once the race is over the pipe is closed, and a thread of the code
        under test that connects then must neither fail nor print a traceback."""
        with contextlib.suppress(OSError, EOFError, ValueError):
            self.send(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def _real_ns() -> int:
    """The monotonic clock, also under a virtual clock: a round's timings are real."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _racing(setup: Setup, on: bool) -> None:
    if setup.clock_path:
        from pytest_racecheck.clock import in_racer as virtual_time

        virtual_time.racing(on)


def _leave() -> None:
    """End now that the race is over: the controller waits for its racers to be gone, and a
    full interpreter shutdown costs 50-100 ms per racer on a busy machine. Output is flushed;
    connections close with the process, as they would at a normal exit."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _prepare(setup: Setup, channel: Any) -> None:
    """What must be in place before the racer's set-up opens its first connection."""
    if setup.app_name:
        # libpq reads PGAPPNAME: the racer's PostgreSQL sessions name themselves, so the
        # controller can find them in pg_stat_activity without the code under test's help.
        os.environ["PGAPPNAME"] = setup.app_name
    if setup.clock_path:
        # Before the set-up and the function's module load: both see the virtual clock.
        from pytest_racecheck.clock import in_racer as virtual_time

        virtual_time.install(setup.clock_path)
    if setup.statements:
        from pytest_racecheck import statements

        statements.install(
            on_backend_pid=lambda pid: channel.notify(BackendPid(pid)),
            on_connect=lambda: channel.notify(Connecting()),
        )


_loop: asyncio.AbstractEventLoop | None = None


def racer_loop() -> asyncio.AbstractEventLoop:
    """This racer's event loop, made on first use and kept for its life, as a worker process
    keeps its loop: what is bound to it (an async connection or pool opened by an ``async def``
    set-up) serves every round."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def run_hook(hook: Any) -> None:
    """Call a set-up or tear-down; one that is ``async def`` runs on the racer's loop."""
    result = hook()
    if inspect.isawaitable(result):
        racer_loop().run_until_complete(result)


def _caller(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """How a round calls ``fn``: directly, or a coroutine function on this racer's loop."""
    if not inspect.iscoroutinefunction(fn):
        return lambda: fn(*args, **kwargs)
    loop = racer_loop()
    return lambda: loop.run_until_complete(fn(*args, **kwargs))


def _warm_up(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Connect before the first release, so the first round races like the others.

    Any database handle among the arguments or the function's captured values opens this
    process's shared connection now (importing its driver): the reference strategies use that
    connection, and other code at least finds the driver imported.
    """
    for db in handles_in(fn, args, kwargs):
        db.shared_connection()


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
