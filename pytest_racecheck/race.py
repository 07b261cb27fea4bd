"""The controller: starts the racers, runs the rounds, and owns every racer's life.

Per round the controller resets the database, arms the start gate, collects one outcome from
each racer (holding racers at sync points when asked), and runs the check. Everything waits
with a deadline: a race ends within its timeout whatever its racers do, and no racer outlives
the call to :func:`run_race`, whether it passes, fails, times out or is interrupted.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dill
import multiprocess as _multiprocess
import multiprocess.connection

# Imported here, not lazily by multiprocess on first use, so that every race in a process
# pickles against the same classes (pytester's in-process runs unload modules imported later).
import multiprocess.heap
import multiprocess.popen_spawn_posix
import multiprocess.sharedctypes
import multiprocess.synchronize

from pytest_racecheck.barrier import StartGate
from pytest_racecheck.meeting import BlockedProbe, Coordinator, make_coordinator
from pytest_racecheck.outcomes import Outcome, RaceResult, RaisedError, Round
from pytest_racecheck.racer import RacerSetup, racer_main

START_METHODS = ("spawn", "fork", "forkserver")
SHUTDOWN_GRACE_S = 0.5
"""How long racers get to leave through the gate before they are terminated, then killed."""

multiprocess: Any = _multiprocess  # an untyped package


class RaceError(Exception):
    """The race itself broke down: a racer died, hung, or could not start.

    ``result`` holds the rounds that completed before the breakdown.
    """

    def __init__(self, message: str, result: RaceResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class RacerDied(RaceError):
    """A racer process ended while the race still needed it."""


class RaceTimeout(RaceError):
    """The race did not finish within its timeout."""


class RacerSetupFailed(RaceError):
    """A racer could not load the function it was to race."""


@dataclass
class RaceSpec:
    """One race, validated: everything the controller needs before it starts a process."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    processes: int = 4
    rounds: int = 50
    timeout: float = 60.0
    start_method: str = "spawn"
    reset: Callable[[], Any] | None = None
    check: Callable[[], Any] | None = None
    meet_at: str | None = None
    pause_after: str | None = None
    pause_before: str | None = None
    schedule: Sequence[str] | None = None

    def __post_init__(self) -> None:
        validate(self)

    def coordinator(self) -> Coordinator:
        """The sync point policy these arguments ask for (raises ValueError if they conflict)."""
        return make_coordinator(
            self.processes, self.meet_at, self.pause_after, self.pause_before, self.schedule
        )

    @property
    def fn_name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


def validate(spec: RaceSpec) -> None:
    """Refuse bad input before any process starts, saying what was wrong and how to fix it."""
    if not callable(spec.fn):
        raise TypeError(f"race() needs a callable to run in every racer, got {spec.fn!r}")
    for name in ("processes", "rounds"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"race(): {name} must be an int, got {value!r}")
    if spec.processes < 2:
        raise ValueError(
            f"race(): processes must be at least 2 (a race needs two racers), got {spec.processes}"
        )
    if spec.rounds < 1:
        raise ValueError(f"race(): rounds must be at least 1, got {spec.rounds}")
    if not isinstance(spec.timeout, (int, float)) or isinstance(spec.timeout, bool):
        raise TypeError(f"race(): timeout must be a number of seconds, got {spec.timeout!r}")
    if not spec.timeout > 0:
        raise ValueError(f"race(): timeout must be more than 0 seconds, got {spec.timeout!r}")
    available = multiprocess.get_all_start_methods()
    if spec.start_method not in START_METHODS or spec.start_method not in available:
        raise ValueError(
            f"race(): unknown start method {spec.start_method!r}: use one of "
            f"{', '.join(m for m in START_METHODS if m in available)}"
        )
    for name in ("reset", "check"):
        value = getattr(spec, name)
        if value is not None and not callable(value):
            raise TypeError(f"race(): {name} must be a callable or None, got {value!r}")
    spec.coordinator()


def pickle_call(spec: RaceSpec) -> bytes:
    try:
        return dill.dumps((spec.fn, spec.args, spec.kwargs), recurse=True)
    except Exception as exc:
        raise TypeError(
            f"race(): cannot send {spec.fn_name} and its arguments to the racer processes "
            f"({type(exc).__name__}: {exc}). Racers are separate processes: pass database "
            "handles or paths, and open connections inside the function."
        ) from exc


@dataclass
class _Racer:
    index: int
    process: Any
    channel: Any
    at_point: str | None = None
    finished: bool = False

    def describe(self) -> str:
        return f"racer {self.index} (pid {self.process.pid})"


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def run_race(spec: RaceSpec, probe: BlockedProbe | None = None) -> RaceResult:
    """Run the race described by ``spec``; raise RaceError if the race itself breaks down."""
    call = pickle_call(spec)
    token = f"racecheck-{uuid.uuid4().hex[:8]}"
    coordinator = spec.coordinator()
    result = RaceResult(
        fn_name=spec.fn_name,
        processes=spec.processes,
        rounds_requested=spec.rounds,
        start_method=spec.start_method,
    )
    started = time.monotonic()
    deadline = started + spec.timeout
    ctx = multiprocess.get_context(spec.start_method)
    gate = StartGate(ctx, spec.processes)
    racers: list[_Racer] = []
    try:
        for i in range(spec.processes):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=racer_main,
                args=(i, theirs, gate, os.getpid()),
                name=f"racecheck-racer-{i}",
                daemon=True,
            )
            process.start()
            theirs.close()
            racers.append(_Racer(i, process, ours))
        for racer in racers:
            setup = RacerSetup(
                call=call,
                held_points=coordinator.held_points(racer.index),
                pause_after=(spec.pause_after,) if spec.pause_after else (),
                pause_before=(spec.pause_before,) if spec.pause_before else (),
                app_name=f"{token}-{racer.index}",
            )
            racer.channel.send(("setup", setup))
        _await_all(racers, "ready", deadline, result, spec)
        gate.arm(0)
        _await_all(racers, "warm", deadline, result, spec)
        result.startup_s = time.monotonic() - started
        apps = {f"{token}-{r.index}": r.index for r in racers}
        for number in range(1, spec.rounds + 1):
            if spec.reset is not None:
                spec.reset()
            coordinator.start_round()
            for racer in racers:
                racer.finished, racer.at_point = False, None
            gate.arm(number)
            waited: set[int] = set()
            outcomes = _collect_round(
                racers, number, deadline, result, spec, coordinator, probe, apps, waited
            )
            result.rounds.append(_judge(number, outcomes, spec, coordinator, waited))
    finally:
        result.elapsed_s = time.monotonic() - started
        shutdown(racers, gate)
    return result


def _judge(
    number: int,
    outcomes: dict[int, Outcome],
    spec: RaceSpec,
    coordinator: Coordinator,
    waited: set[int],
) -> Round:
    check_value: Any = None
    check_error: RaisedError | None = None
    if spec.check is not None:
        try:
            check_value = spec.check()
        except Exception as exc:
            check_error = RaisedError.from_exception(exc)
    return Round(
        index=number,
        outcomes=tuple(outcomes[i] for i in sorted(outcomes)),
        check=check_value,
        check_error=check_error,
        has_check=spec.check is not None,
        trace=coordinator.trace(),
        waited_on_lock=frozenset(waited),
    )


def _receive(racer: _Racer, result: RaceResult, spec: RaceSpec, doing: str) -> Any:
    """One message from a racer; a racer that died or sent garbage ends the race."""
    try:
        message = racer.channel.recv()
    except (EOFError, OSError):
        racer.process.join(1.0)
        raise RacerDied(
            f"{racer.describe()} {describe_exit(racer.process.exitcode)} while {doing}",
            result,
        ) from None
    except Exception as exc:
        raise RaceError(
            f"{racer.describe()} sent a message that cannot be read while {doing}: "
            f"{type(exc).__name__}: {exc}",
            result,
        ) from exc
    if not (isinstance(message, tuple) and message and isinstance(message[0], str)):
        raise RaceError(f"{racer.describe()} sent garbage while {doing}: {message!r:.200}", result)
    return message


def _wait(racers: list[_Racer], deadline: float, timeout: float | None = None) -> list[Any]:
    remaining = deadline - time.monotonic()
    if timeout is not None:
        remaining = min(remaining, timeout)
    objects = [r.channel for r in racers] + [r.process.sentinel for r in racers]
    return multiprocess.connection.wait(objects, timeout=max(remaining, 0))


def _await_all(
    racers: list[_Racer], expected: str, deadline: float, result: RaceResult, spec: RaceSpec
) -> None:
    doing = {"ready": "starting up", "warm": "warming up"}[expected]
    waiting = {r.index: r for r in racers}
    while waiting:
        if time.monotonic() >= deadline:
            names = ", ".join(str(i) for i in sorted(waiting))
            raise RaceTimeout(
                f"race of {spec.fn_name} timed out after {spec.timeout:g} s with racers {names} "
                f"still {doing}; raise timeout= if start-up is slow on this machine",
                result,
            )
        ready = _wait(list(waiting.values()), deadline)
        for racer in list(waiting.values()):
            if racer.channel in ready or racer.process.sentinel in ready:
                message = _receive(racer, result, spec, doing)
                if message[0] == "setup_error":
                    error: RaisedError = message[1]
                    raise RacerSetupFailed(
                        f"{racer.describe()} could not load {spec.fn_name}: {error}\n"
                        f"{error.traceback}",
                        result,
                    )
                if message[0] != expected:
                    raise RaceError(
                        f"{racer.describe()} sent {message!r:.200} while {doing}", result
                    )
                del waiting[racer.index]


def _collect_round(
    racers: list[_Racer],
    number: int,
    deadline: float,
    result: RaceResult,
    spec: RaceSpec,
    coordinator: Coordinator,
    probe: BlockedProbe | None,
    apps: Mapping[str, int],
    waited: set[int],
) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}
    by_index = {r.index: r for r in racers}
    while len(outcomes) < len(racers):
        running = [r for r in racers if not r.finished]
        if time.monotonic() >= deadline:
            raise RaceTimeout(_timeout_message(spec, number, running, coordinator), result)
        poll = coordinator.poll_interval() if probe is not None else None
        ready = _wait(running, deadline, poll)
        if not ready and poll is not None and probe is not None:
            blocked = {i for i in probe.blocked(running_pids(running), apps) if i in by_index}
            waited |= blocked
            _pass(by_index, coordinator.blocked(blocked))
            continue
        for racer in running:
            if racer.channel not in ready and racer.process.sentinel not in ready:
                continue
            message = _receive(racer, result, spec, f"running {spec.fn_name} in round {number}")
            kind = message[0]
            if kind == "result" and message[1] == number and isinstance(message[2], Outcome):
                outcomes[racer.index] = message[2]
                racer.finished, racer.at_point = True, None
                _pass(by_index, coordinator.finished(racer.index))
            elif kind == "at" and isinstance(message[1], str):
                racer.at_point = message[1]
                _pass(by_index, coordinator.arrived(racer.index, message[1]))
            else:
                raise RaceError(
                    f"{racer.describe()} sent {message!r:.200} in round {number}", result
                )
    return outcomes


def running_pids(racers: list[_Racer]) -> dict[int, int]:
    return {r.index: r.process.pid for r in racers}


def _pass(by_index: Mapping[int, _Racer], indexes: Sequence[int]) -> None:
    for i in indexes:
        racer = by_index[i]
        if racer.at_point is not None:
            racer.channel.send(("pass", racer.at_point))
            racer.at_point = None


def _timeout_message(
    spec: RaceSpec, number: int, running: list[_Racer], coordinator: Coordinator
) -> str:
    lines = [f"race of {spec.fn_name} timed out after {spec.timeout:g} s in round {number}:"]
    for racer in running:
        where = (
            f"held at point {racer.at_point!r}"
            if racer.at_point
            else f"had not returned from {spec.fn_name}"
        )
        lines.append(f"  {racer.describe()} {where}")
    waiting = coordinator.describe_wait()
    if waiting:
        lines.append(f"  the controller was waiting for {waiting}")
    lines.append("no racer outlives the race: they were stopped")
    return "\n".join(lines)


def shutdown(racers: list[_Racer], gate: StartGate) -> None:
    """Stop every racer: politely through the gate, then SIGTERM, then SIGKILL."""
    gate.stop()
    for racer in racers:
        racer.channel.close()
    end = time.monotonic() + SHUTDOWN_GRACE_S
    for racer in racers:
        racer.process.join(max(end - time.monotonic(), 0))
    for signal_name in ("terminate", "kill"):
        alive = [r for r in racers if r.process.is_alive()]
        for racer in alive:
            getattr(racer.process, signal_name)()
        for racer in alive:
            racer.process.join(SHUTDOWN_GRACE_S)
    for racer in racers:
        if racer.process.exitcode is not None:
            racer.process.close()
