"""The controller: starts the racers, runs the rounds, and owns every racer's life.

Per round the controller resets the database, arms the start gate, collects one outcome from
each racer (holding racers at sync points when asked), and runs the check. Everything waits
with a deadline: a race ends within its timeout whatever its racers do, and no racer outlives
the call to :func:`run_race`, whether it passes, fails, times out or is interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import multiprocess as _multiprocess
import multiprocess.connection

# Imported here, not lazily by multiprocess on first use, so that every race in a process
# pickles against the same classes (pytester's in-process runs unload modules imported later).
import multiprocess.heap
import multiprocess.popen_spawn_posix
import multiprocess.sharedctypes
import multiprocess.synchronize

from pytest_racecheck.assignment import Assignment
from pytest_racecheck.barrier import StartGate
from pytest_racecheck.blocking import BlockedProbe, RacerView, notify_event
from pytest_racecheck.clock import SLEEP_POINT, VirtualClock, format_duration
from pytest_racecheck.descendants import kill_group
from pytest_racecheck.hosts import Host
from pytest_racecheck.hosts import pool as host_pool
from pytest_racecheck.meeting import PROBE_INTERVAL_S
from pytest_racecheck.outcomes import Outcome, RaceResult, RaisedError, Round
from pytest_racecheck.protocol import (
    At,
    BackendPid,
    Connecting,
    Message,
    Pass,
    Ready,
    Result,
    Setup,
    SetupError,
    Sleep,
    Wake,
    Warm,
    is_message,
)
from pytest_racecheck.racer import racer_main
from pytest_racecheck.spares import SpareGroup
from pytest_racecheck.spares import pool as spare_pool
from pytest_racecheck.spec import RaceSpec, pickle_call
from pytest_racecheck.stall import LOOK_EVERY_S, ProgressWatch

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


class RaceStalled(RaceTimeout):
    """Start-up or a round went ``stall_timeout`` seconds without progress: a hang, told from
    a slow machine (which keeps moving) long before the race's ``timeout=``."""


class RacerSetupFailed(RaceError):
    """A racer could not load the function it was to race, or its racer_setup raised."""


class ServerDied(RaceError):
    """A database server the race used died during it (its throwaway PostgreSQL's postmaster
    is gone): the racers' errors are its consequence, not the code's."""


class RaceNotForced(RaceError):
    """A held target (meet_at, pause_after, pause_before) was never reached by any racer."""


class ScheduleNotFollowed(RaceNotForced):
    """A step of ``schedule=`` did not run in some round: that round replayed something else."""


class NothingExplored(RaceNotForced):
    """An explored racer reached no point in any round: there was nothing to order."""


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


@dataclass
class _Racer:
    """The controller's view of one racer process."""

    index: int
    process: Any
    channel: Any
    app_name: str
    at_point: str | None = None
    finished: bool = False
    backend_pids: set[int] = field(default_factory=set)
    connecting: bool = False

    def describe(self) -> str:
        return f"racer {self.index} (pid {self.process.pid})"

    def view(self) -> RacerView:
        return RacerView(
            self.index,
            self.process.pid,
            self.app_name,
            frozenset(self.backend_pids),
            self.connecting,
        )


@dataclass
class _RoundState:
    """What the controller knows about the round in flight."""

    number: int
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    waited: set[int] = field(default_factory=set)
    lock_waits: list[tuple[int, int]] = field(default_factory=list)
    """(racer, when) a probe first found it blocked since its last arrival or return."""
    blocked_now: set[int] = field(default_factory=set)

    @property
    def doing(self) -> str:
        return f"round {self.number}"


def run_race(spec: RaceSpec, probe: BlockedProbe | None = None) -> RaceResult:
    """Run the race described by ``spec``; raise RaceError if the race itself breaks down."""
    return Controller(spec, probe).run()


class Controller:
    """Starts the racers, runs the rounds, and stops every racer, whatever happens."""

    def __init__(self, spec: RaceSpec, probe: BlockedProbe | None) -> None:
        self.spec = spec
        self.probe = probe
        self.coordinator = spec.coordinator()
        self.result = RaceResult(
            fn_name=spec.fn_name,
            processes=spec.processes,
            rounds_requested=spec.explore if spec.explore is not None else spec.rounds,
            start_method=spec.start_method,
            mode=spec.mode,
            seed=spec.seed_used if spec.explore is not None else spec.seed,
            search=getattr(self.coordinator, "search_name", None),
            has_reset=spec.reset is not None,
        )
        self.racers: list[_Racer] = []
        holds = getattr(probe, "holds", None)
        if holds is not None and spec.explore is not None:
            self.coordinator.use_overlap(_Holds(holds(), self.racers))
        self.round: _RoundState | None = None
        self.deadline = 0.0
        self._expected = ""
        self._awaiting: set[int] = set()
        self.progress = ProgressWatch(spec.stall_timeout)
        self.clock: VirtualClock | None = None

    # The race's life.

    def run(self) -> RaceResult:
        spec, result = self.spec, self.result
        call = pickle_call(spec)
        started = time.monotonic()
        self.deadline = started + spec.timeout
        ctx = multiprocess.get_context(spec.start_method)
        hosted = spares = None
        if spec.start_method == "spawn" and not spec.fresh_racers:
            hosted = host_pool.take(spec.processes)
        if hosted is None:
            spares = spare_pool.take(spec.start_method, spec.processes)
        gate = (
            hosted[0]
            if hosted is not None
            else spares.gate
            if spares is not None
            else StartGate(ctx, spec.processes)
        )
        result.racers = "hosted" if hosted is not None else "spares" if spares else "fresh"
        try:
            if spec.clock == "virtual":
                self.clock = VirtualClock()
                self.coordinator.on_clock = self._clock_step
            try:
                if hosted is not None:
                    self._fork_from(hosted[1], ctx, call)
                else:
                    self._start(ctx, gate, call, spares)
                self.progress.moved()
                self._await_all("ready")
            except (RacerDied, OSError, EOFError) as exc:
                host_failed = hosted is not None and isinstance(exc, OSError | EOFError)
                if spares is None and not host_failed:
                    raise
                # A spare died, or a host failed, before the race began: start fresh racers.
                spare_pool.stats.fallbacks += 1
                shutdown(self.racers, gate)
                self.racers.clear()
                gate = StartGate(ctx, spec.processes)
                result.racers = "fresh"
                self._start(ctx, gate, call)
                self._await_all("ready")
            gate.arm(0)
            self._await_all("warm")
            result.startup_s = time.monotonic() - started
            # The budget is racing time: start-up, slow on a busy machine, does not spend it.
            racing = time.monotonic()
            budget_end = racing + spec.budget_s if spec.budget_s is not None else None
            for number in range(1, result.rounds_requested + 1):
                if budget_end is not None and number > 1 and time.monotonic() >= budget_end:
                    break
                rnd = self._run_round(number, gate)
                result.add_round(rnd)
                self._check_steps(rnd)
                if spec.on_round is not None:
                    spec.on_round(result)
                if spec.stop_early and rnd.failed_plainly:
                    break
                if self.coordinator.search_done():
                    break
            self._check_targets()
            self._check_explored()
        finally:
            result.without_reduction = self.coordinator.without_reduction()
            result.elapsed_s = time.monotonic() - started
            self.coordinator.account(result)
            shutdown(self.racers, gate)
            if self.clock is not None:
                result.virtual_s = self.clock.elapsed_s
                self.clock.close()
            # Spares for the next race start now, not during this one's rounds; not when
            # Ctrl-C or a KeyboardInterrupt-like exit ends the race (sys.exc_info() in a
            # finally block is the exception passing through).
            if isinstance(sys.exc_info()[1], Exception | None) and hosted is None:
                spare_pool.race_ended(spec.start_method, spec.processes)
        return result

    def _fork_from(self, hosts: list[Host], ctx: Any, call: tuple[bytes, bytes]) -> None:
        """Have each host fork its racer, on a pipe of its own (see :mod:`.hosts`)."""
        token = f"racecheck-{uuid.uuid4().hex[:8]}"
        assignment = Assignment.now()
        for host in hosts:
            ours, theirs = ctx.Pipe()
            try:
                process = host.launch(theirs, assignment)
            finally:
                theirs.close()
            self.racers.append(_Racer(host.slot, process, ours, f"{token}-{host.slot}"))
        for racer in self.racers:
            if not racer.process.forked(self.deadline):
                raise RaceTimeout(
                    f"race of {self.spec.fn_name} timed out after {self.spec.timeout:g} s "
                    f"with racer {racer.index} still starting up; raise timeout= if start-up "
                    "is slow on this machine",
                    self.result,
                )
        self._send_setups(call)

    def _start(
        self,
        ctx: Any,
        gate: StartGate,
        call: tuple[bytes, bytes],
        spares: SpareGroup | None = None,
    ) -> None:
        token = f"racecheck-{uuid.uuid4().hex[:8]}"
        if spares is not None:
            for i, (process, channel) in enumerate(
                zip(spares.processes, spares.channels, strict=True)
            ):
                self.racers.append(_Racer(i, process, channel, f"{token}-{i}"))
            spares.assign()
        for i in range(self.spec.processes if spares is None else 0):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=racer_main,
                args=(i, theirs, gate, os.getpid()),
                name=f"racecheck-racer-{i}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.racers.append(_Racer(i, process, ours, f"{token}-{i}"))
        self._send_setups(call)

    def _send_setups(self, call: tuple[bytes, bytes]) -> None:
        coordinator = self.coordinator
        for racer in self.racers:
            racer.channel.send(
                Setup(
                    call=call[0],
                    hooks=call[1],
                    held_points=coordinator.held_points(racer.index),
                    hold_all=coordinator.hold_all,
                    # On a virtual clock too: a racer that waits for its PostgreSQL server
                    # then says so, and the clock does not jump while the server works.
                    statements=self.spec.mode != "stress" or self.clock is not None,
                    pause_after=(self.spec.pause_after,) if self.spec.pause_after else (),
                    pause_before=(self.spec.pause_before,) if self.spec.pause_before else (),
                    app_name=racer.app_name,
                    clock_path=self.clock.path if self.clock is not None else "",
                )
            )

    def _run_round(self, number: int, gate: StartGate) -> Round:
        if self.spec.reset is not None:
            self.spec.reset()
        self.progress.moved()  # the controller's own reset and the last check count
        self.coordinator.start_round()
        for racer in self.racers:
            racer.finished, racer.at_point = False, None
        self.round = state = _RoundState(number)
        gate.arm(number)
        if self.clock is not None:
            self.clock.begin_round()
        while len(state.outcomes) < len(self.racers):
            self._step()
        timeline = self.clock.end_round() if self.clock is not None else ()
        self.coordinator.end_round()
        return dataclasses.replace(self._judge(state), clock=timeline)

    def _check_targets(self) -> None:
        """A held target that no racer reached in any round means nothing was forced."""
        reached = self.coordinator.targets_reached()
        self.result.targets_reached = dict(reached)
        never = [name for name, n in reached.items() if n == 0]
        if never and self.result.rounds_run:
            raise RaceNotForced(
                f"race of {self.spec.fn_name}: {', '.join(repr(n) for n in never)} never "
                f"reached: this race was not forced. No racer passed that point in any of "
                f"{self.result.rounds_run} rounds; check the point's name, or that the code "
                "under test really runs it.",
                self.result,
            )

    def _check_steps(self, rnd: Round) -> None:
        """Every step of a schedule runs in every round; a round that skipped one replayed
        something else, and passing it would pass a regression test that tests nothing."""
        missed = self.coordinator.missed()
        if not missed:
            return
        lines = [
            f"race of {self.spec.fn_name}: the schedule was not followed in round {rnd.index}, "
            "so this round replayed another interleaving:"
        ]
        for number, step, racer, where in missed:
            lines.append(f"  step {number} {step!r} never ran: racer {racer} {where}")
        for racer in sorted({racer for _, _, racer, _ in missed}):
            outcome = next((o for o in rnd.outcomes if o.racer == racer), None)
            if outcome is not None:
                passed = ", ".join(repr(s.name) for s in outcome.steps) or "none"
                lines.append(f"  racer {racer} passed these points in round {rnd.index}: {passed}")
        lines.append(
            "A step names a point (for a statement: its SQL and the file:line that sent it). If "
            "the code under test moved or takes another path, explore again and paste the new "
            "result.failing_schedule, or name the place with pytest_racecheck.point()."
        )
        raise ScheduleNotFollowed("\n".join(lines), self.result)

    def _check_explored(self) -> None:
        """An explored racer that reached no point in any round gave the explorer nothing to
        order: its verdict would be the luck of free-running rounds, called a search."""
        if self.spec.explore is None or not self.result.rounds_run:
            return
        rounds = self.result._rounds
        mine = [
            [o for r in rounds for o in r.outcomes if o.racer == i]
            for i in range(self.spec.processes)
        ]
        # A racer that raised in every round is left to the assertions, which show its error.
        empty = [
            i
            for i, outcomes in enumerate(mine)
            if all(o.reached == 0 for o in outcomes) and not all(o.raised for o in outcomes)
        ]
        if not empty:
            return
        other = sum(len(o.other_threads) for r in rounds for o in r.outcomes if o.racer in empty)
        who = (
            "no racer reached a point"
            if len(empty) == self.spec.processes
            else f"racer {', '.join(map(str, empty))} reached no point"
        )
        lines = [
            f"race of {self.spec.fn_name} explored nothing: {who} in any of {len(rounds)} "
            "round(s), so there was no order to choose, and a verdict would be the luck of "
            "free-running rounds, not a search.",
        ]
        if other:
            lines.append(
                f"  {other} point(s) were reached on the racers' other threads; only the thread "
                "that runs the raced function is scheduled, so run the database work there."
            )
        lines.append(
            "  Explore makes every statement a point only for the drivers docs/explore.md lists "
            '("Every statement is a point"); code that reaches the database through another '
            "driver, or not through a database at all, sends no point. Use a hooked driver in "
            "the racers, mark the steps with pytest_racecheck.point(), or race it without "
            "explore= (rounds=N, meet_at=...)."
        )
        raise NothingExplored("\n".join(lines), self.result)

    # Waiting and receiving.

    def _step(self) -> None:
        """Wait for the next message (or a probe's answer) of the round and act on it."""
        state = self.round
        assert state is not None
        running = [r for r in self.racers if not r.finished]
        if time.monotonic() >= self.deadline:
            raise RaceTimeout(self._timeout_message(state.number, running), self.result)
        poll = self.coordinator.poll_interval() if self.probe is not None else None
        if self.probe is not None and self.clock is not None and self.clock.sleepers:
            poll = PROBE_INTERVAL_S  # is every racer that does not sleep blocked?
        ready = _wait(running, self.deadline, _wake(poll))
        if not ready:
            self._look_for_progress(running, f"round {state.number}")
        if not ready and poll is not None and self.probe is not None:
            moving = [r.view() for r in running if r.at_point is None and not self._asleep(r)]
            blocked = self.probe.blocked(moving)
            now = time.monotonic_ns()
            state.lock_waits.extend((r, now) for r in sorted(blocked - state.blocked_now))
            state.blocked_now |= blocked
            state.waited |= blocked
            asleep = frozenset(getattr(self.probe, "asleep", ()))
            self._pass(self.coordinator.blocked(blocked, asleep))
            self._jump_if_all_wait(blocked)
            return
        for racer in running:
            if racer.channel in ready or racer.process.sentinel in ready:
                self._dispatch(
                    racer,
                    self._receive(racer, f"running {self.spec.fn_name} in round {state.number}"),
                )
        self._jump_if_all_wait(set())

    def _dispatch(self, racer: _Racer, message: Message) -> None:
        handler = getattr(self, f"racer_{message.kind}", None)
        if handler is None:
            doing = self.round.doing if self.round is not None else self._expected
            raise RaceError(f"{racer.describe()} sent {message!r:.200} while {doing}", self.result)
        handler(racer, message)

    def racer_backend_pid(self, racer: _Racer, message: BackendPid) -> None:
        racer.backend_pids.add(message.pid)
        racer.connecting = False

    def racer_connecting(self, racer: _Racer, message: Connecting) -> None:
        racer.connecting = True

    def racer_at(self, racer: _Racer, message: At) -> None:
        if self.round is None:
            raise RaceError(
                f"{racer.describe()} held at {message.name!r} outside a round", self.result
            )
        racer.at_point, racer.connecting = message.name, False
        self.round.blocked_now.discard(racer.index)
        notify_event(self.probe)
        if message.after_start is not None:
            self.coordinator.started(racer.index, message.after_start)
        if message.start:
            self._pass(self.coordinator.arrived_at_start(racer.index))
            return
        self._pass(self.coordinator.arrived(racer.index, message.name, message.statement))

    def racer_result(self, racer: _Racer, message: Result) -> None:
        state = self.round
        if state is None or message.round != state.number:
            raise RaceError(
                f"{racer.describe()} sent a result for round {message.round} in "
                f"{state.doing if state else self._expected}",
                self.result,
            )
        state.outcomes[racer.index] = message.outcome
        if message.after_start is not None:
            self.coordinator.started(racer.index, message.after_start)
        state.blocked_now.discard(racer.index)
        racer.finished, racer.at_point, racer.connecting = True, None, False
        notify_event(self.probe)
        self._pass(self.coordinator.finished(racer.index))

    def racer_sleep(self, racer: _Racer, message: Sleep) -> None:
        """A virtual sleep: held at the point ``sleep`` when the race holds it, else asleep
        until the clock reaches its wake-up."""
        if self.clock is None or self.round is None:
            raise RaceError(f"{racer.describe()} slept on a virtual clock it was not given")
        self.clock.sleep(racer.index, message.seconds, message.held)
        racer.connecting = False
        notify_event(self.probe)
        if message.held:
            racer.at_point = SLEEP_POINT
            self._pass(self.coordinator.arrived(racer.index, SLEEP_POINT))

    def _asleep(self, racer: _Racer) -> bool:
        return self.clock is not None and self.clock.asleep(racer.index)

    def _jump_if_all_wait(self, blocked: set[int]) -> None:
        """When every racer waits (asleep, held at a point, blocked) and one sleeps, the clock
        jumps to the earliest wake-up (Trio's MockClock autojump)."""
        clock = self.clock
        if clock is None or not clock.sleepers:
            return
        for racer in self.racers:
            if not (
                racer.finished
                or racer.at_point is not None
                or clock.asleep(racer.index)
                or racer.index in blocked
            ):
                return
        self._wake(clock.jump())

    def _wake(self, indexes: Sequence[int]) -> None:
        for i in indexes:
            self.racers[i].channel.send(Wake())
        if indexes:
            notify_event(self.probe)

    def _clock_step(self, seconds: float) -> None:
        """A schedule's clock step (``"+31m"``)."""
        assert self.clock is not None
        self.clock.advance(seconds, f"the schedule moves the clock {format_duration(seconds)}")
        self._wake(self.clock.due())

    def racer_setup_error(self, racer: _Racer, message: SetupError) -> None:
        error = message.error
        what = "run racer_setup for" if message.doing == "set up" else "load"
        raise RacerSetupFailed(
            f"{racer.describe()} could not {what} {self.spec.fn_name}: {error}\n{error.traceback}",
            self.result,
        )

    def racer_ready(self, racer: _Racer, message: Ready) -> None:
        self._arrived_for("ready", racer)

    def racer_warm(self, racer: _Racer, message: Warm) -> None:
        self._arrived_for("warm", racer)

    def _arrived_for(self, kind: str, racer: _Racer) -> None:
        if self._expected != kind:
            raise RaceError(
                f"{racer.describe()} sent {kind!r} while {self._expected or 'racing'}",
                self.result,
            )
        self._awaiting.discard(racer.index)

    def _await_all(self, expected: str) -> None:
        doing = {"ready": "starting up", "warm": "warming up"}[expected]
        self._expected, self._awaiting = expected, {r.index for r in self.racers}
        try:
            while self._awaiting:
                waiting = [r for r in self.racers if r.index in self._awaiting]
                if time.monotonic() >= self.deadline:
                    names = ", ".join(str(r.index) for r in waiting)
                    raise RaceTimeout(
                        f"race of {self.spec.fn_name} timed out after {self.spec.timeout:g} s "
                        f"with racers {names} still {doing}: {self._outer_bound_note()}",
                        self.result,
                    )
                ready = _wait(waiting, self.deadline, _wake(None))
                if not ready:
                    self._look_for_progress(waiting, doing)
                for racer in waiting:
                    if racer.channel in ready or racer.process.sentinel in ready:
                        self._dispatch(racer, self._receive(racer, doing))
        finally:
            self._expected = ""

    def _look_for_progress(self, racers: list[_Racer], doing: str) -> None:
        """Nothing arrived: did the racers (or what they started, or their database backends)
        use CPU? Fail the race as hung once nothing moved for ``stall_timeout`` seconds."""
        self.progress.look(
            [r.process.pid for r in racers] + [p for r in racers for p in r.backend_pids]
        )
        idle = self.progress.stalled_for()
        if idle is None:
            return
        spec = self.spec
        lines = [
            f"race of {spec.fn_name} made no progress for {idle:.0f} s while {doing} "
            f"(stall_timeout={spec.stall_timeout:g}, the no-progress bound; the race's "
            f"timeout={spec.timeout:g} was not reached): no racer sent a message, ran a "
            "statement or used CPU, so the race hangs rather than the machine being slow:"
        ]
        lines += [f"  {r.describe()} {self._where(r, doing)}" for r in racers]
        waiting = self.coordinator.describe_wait() if self.round is not None else ""
        if waiting:
            lines.append(f"  the controller was waiting for {waiting}")
        lines.append(
            "if the code under test waits that long on purpose, raise stall_timeout= "
            "(or --racecheck-stall-timeout); no racer outlives the race: they were stopped"
        )
        raise RaceStalled("\n".join(lines), self.result)

    def _outer_bound_note(self) -> str:
        """Which bound ended the race, and what the no-progress watch saw before it."""
        spec, idle = self.spec, self.progress.idle_s()
        if idle <= 2 * LOOK_EVERY_S:
            return (
                f"the race's timeout={spec.timeout:g} (its outer bound) was reached while the "
                "racers still made progress: this machine is slow or the race long, it does "
                "not hang; raise timeout="
            )
        return (
            f"the race's timeout={spec.timeout:g} (its outer bound) was reached; nothing had "
            f"moved for {idle:.0f} s, less than stall_timeout={spec.stall_timeout:g} (the "
            "no-progress bound), so it may hang"
        )

    def _where(self, racer: _Racer, doing: str) -> str:
        if self.round is None:
            return f"was still {doing}"
        asleep = self.clock.describe(racer.index) if self.clock is not None else ""
        if asleep:
            return asleep
        if racer.at_point:
            return f"held at point {racer.at_point!r}"
        return f"had not returned from {self.spec.fn_name}"

    def _receive(self, racer: _Racer, doing: str) -> Message:
        """One message from a racer; a racer that died or sent garbage ends the race."""
        self.progress.moved()
        try:
            message = racer.channel.recv()
        except (EOFError, OSError):
            racer.process.join(1.0)
            raise RacerDied(
                f"{racer.describe()} {describe_exit(racer.process.exitcode)} while {doing}",
                self.result,
            ) from None
        except Exception as exc:
            raise RaceError(
                f"{racer.describe()} sent a message that cannot be read while {doing}: "
                f"{type(exc).__name__}: {exc}",
                self.result,
            ) from exc
        if not is_message(message):
            raise RaceError(
                f"{racer.describe()} sent garbage while {doing}: {message!r:.200}", self.result
            )
        return message

    def _pass(self, indexes: Sequence[int]) -> None:
        for i in indexes:
            racer = self.racers[i]
            if racer.at_point is None:
                continue
            if racer.at_point == SLEEP_POINT and self.clock is not None and i in self.clock.held:
                # a held sleep: letting it go moves the clock to its wake-up
                self.clock.wake_held(i)
                racer.at_point = None
                self._wake([i, *self.clock.due()])
                continue
            racer.channel.send(Pass(racer.at_point))
            racer.at_point = None

    # Verdicts and messages.

    def _judge(self, state: _RoundState) -> Round:
        spec = self.spec
        check_value: Any = None
        check_error: RaisedError | None = None
        if spec.check is not None:
            try:
                check_value = spec.check()
            except Exception as exc:
                check_error = RaisedError.from_exception(exc)
        return Round(
            index=state.number,
            outcomes=tuple(state.outcomes[i] for i in sorted(state.outcomes)),
            check=check_value,
            check_error=check_error,
            has_check=spec.check is not None,
            trace=self.coordinator.trace(),
            waited_on_lock=frozenset(state.waited),
            schedule=self.coordinator.steps_taken(),
            lock_waits=tuple(state.lock_waits),
        )

    def _timeout_message(self, number: int, running: list[_Racer]) -> str:
        spec = self.spec
        lines = [f"race of {spec.fn_name} timed out after {spec.timeout:g} s in round {number}:"]
        lines += [f"  {r.describe()} {self._where(r, '')}" for r in running]
        waiting = self.coordinator.describe_wait()
        if waiting:
            lines.append(f"  the controller was waiting for {waiting}")
        lines.append(self._outer_bound_note())
        lines.append("no racer outlives the race: they were stopped")
        return "\n".join(lines)


class _Holds:
    """The overlap holds of the race's databases, as the explorer sees them: racers, not pids."""

    def __init__(self, holds: Sequence[Any], racers: list[_Racer]) -> None:
        self._holds = list(holds)
        self._racers = racers  # filled as racers start

    def hold(self) -> bool:
        return bool(self._holds) and any([h.hold() for h in self._holds])

    def release(self) -> set[int]:
        pids: set[int] = set()
        for h in self._holds:
            try:
                pids |= h.release()
            except Exception:
                h.close()  # nothing stays held; the step counts as timing-dependent
        return {r.index for r in self._racers if r.backend_pids & pids}


def _wake(poll: float | None) -> float:
    """How long to wait for a message: the probe's poll, and at least every LOOK_EVERY_S to
    look for progress."""
    return LOOK_EVERY_S if poll is None else min(poll, LOOK_EVERY_S)


def _wait(racers: list[_Racer], deadline: float, timeout: float | None = None) -> list[Any]:
    remaining = deadline - time.monotonic()
    if timeout is not None:
        remaining = min(remaining, timeout)
    objects = [r.channel for r in racers] + [r.process.sentinel for r in racers]
    return multiprocess.connection.wait(objects, timeout=max(remaining, 0))


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
        # What a racer that could not clean up (it was killed) left in its process group.
        if racer.process.pid is not None:  # a host's racer that was never forked has none
            kill_group(racer.process.pid)
        if racer.process.exitcode is not None:
            racer.process.close()
