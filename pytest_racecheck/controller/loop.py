"""The controller: starts the racers, runs the rounds, and owns every racer's life.

Per round the controller resets the database, arms the start gate, collects one outcome from
each racer (holding racers at sync points when asked), and runs the check. Everything waits
with a deadline: a race ends within its timeout whatever its racers do, and no racer outlives
the call to :func:`run_race`, whether it passes, fails, times out or is interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import uuid
from typing import Any

from pytest_racecheck.clock.control import VirtualClock
from pytest_racecheck.controller.blocking import BlockedProbe
from pytest_racecheck.controller.catalogs import RaceCatalogs, race_databases
from pytest_racecheck.controller.crew import (
    Holds,
    Racer,
    RoundState,
    multiprocess,
    shutdown,
    wait_for,
    wake_after,
)
from pytest_racecheck.controller.diagnosis import Diagnosis
from pytest_racecheck.controller.errors import (
    RaceError,
    RacerDied,
    RaceTimeout,
)
from pytest_racecheck.controller.messages import RacerMessages
from pytest_racecheck.controller.replica_gateways import on_gateways
from pytest_racecheck.controller.replicas import make_hosts
from pytest_racecheck.controller.spec import RaceSpec, pickle_call
from pytest_racecheck.controller.stall import ProgressWatch
from pytest_racecheck.policies.coordinator import PROBE_INTERVAL_S
from pytest_racecheck.processes.barrier import Gate, StartGate
from pytest_racecheck.processes.gateways import GatewayError, GatewayGate
from pytest_racecheck.processes.gateways import pool as gateway_pool
from pytest_racecheck.processes.hosts import CannotForkRacer, Host
from pytest_racecheck.processes.hosts import pool as host_pool
from pytest_racecheck.processes.racer import racer_main
from pytest_racecheck.processes.replicas import (
    HostsUnavailable,
    SimulatedHosts,
    namespaces_possible,
)
from pytest_racecheck.processes.spares import SpareGroup
from pytest_racecheck.processes.spares import pool as spare_pool
from pytest_racecheck.results.result import RaceResult
from pytest_racecheck.results.rounds import Round
from pytest_racecheck.wire.assignment import Assignment
from pytest_racecheck.wire.messages import (
    Setup,
)
from pytest_racecheck.wire.outcome import RaisedError


def run_race(spec: RaceSpec, probe: BlockedProbe | None = None) -> RaceResult:
    """Run the race described by ``spec``; raise RaceError if the race itself breaks down."""
    return Controller(spec, probe).run()


class Controller(RacerMessages, Diagnosis):
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
            replicas=spec.replicas,
            mode=spec.mode,
            seed=spec.seed_used if spec.explore is not None else spec.seed,
            search=self.coordinator.search_name,
            has_reset=spec.reset is not None,
        )
        self.racers: list[Racer] = []
        self.catalogs: RaceCatalogs | None = None
        if spec.explore is not None:
            self.catalogs = RaceCatalogs(race_databases(spec))
            self.coordinator.use_catalog(self.catalogs)
        holds = getattr(probe, "holds", None)
        if holds is not None and spec.explore is not None:
            self.coordinator.use_overlap(Holds(holds(), self.racers))
        self.round: RoundState | None = None
        self.deadline = 0.0
        self._expected = ""
        self._awaiting: set[int] = set()
        self.progress = ProgressWatch(spec.stall_timeout)
        self.clock: VirtualClock | None = None
        self.hosts: SimulatedHosts | None = None

    # The race's life.

    def run(self) -> RaceResult:
        spec, result = self.spec, self.result
        call = pickle_call(spec)
        started = time.monotonic()
        self.deadline = started + spec.timeout
        ctx = multiprocess.get_context(spec.start_method)
        remote = on_gateways(spec, result)
        hosted, spares, local_gate = (None, None, None) if remote else self._take_racers(ctx)
        gate: Gate = local_gate if local_gate is not None else GatewayGate([])
        if remote:
            result.racers = "gateways"
        try:
            if spec.clock == "virtual":
                self.clock = VirtualClock()
                self.coordinator.on_clock = self._clock_step
            if local_gate is None:
                gate = self._start_on_gateways(call)
                self._await_all("ready")
            else:
                if spec.replicas > 1:
                    shared = [self.clock.path] if self.clock is not None else []
                    self.hosts = make_hosts(spec, shared)
                gate = self._start_crew(ctx, local_gate, call, hosted, spares)
            gate.arm(0)
            self._await_all("warm")
            result.startup_s = time.monotonic() - started
            self._run_rounds(gate)
        finally:
            result.without_reduction = self.coordinator.without_reduction()
            result.elapsed_s = time.monotonic() - started
            self.coordinator.account(result)
            if self.catalogs is not None and self.catalogs.unread:
                result.exhausted = False  # footprints from the text alone may miss conflicts
            shutdown(self.racers, gate)
            if self.hosts is not None:
                self.hosts.close()  # and with each host's init, whatever is left on it
            if self.catalogs is not None:
                self.catalogs.close()
            if self.clock is not None:
                result.virtual_s = self.clock.elapsed_s
                self.clock.close()
            # Spares for the next race start now, not during this one's rounds; not when
            # Ctrl-C or a KeyboardInterrupt-like exit ends the race (sys.exc_info() in a
            # finally block is the exception passing through).
            ended = isinstance(sys.exc_info()[1], Exception | None)
            if ended and hosted is None and not remote:
                spare_pool.race_ended(spec.start_method, spec.processes)
        return result

    def _take_racers(
        self, ctx: Any
    ) -> tuple[tuple[StartGate, list[Host]] | None, SpareGroup | None, StartGate]:
        """Where the racers come from: hosts, spares or fresh; and the gate they share."""
        spec = self.spec
        hosted = spares = None
        if spec.start_method == "spawn" and not spec.fresh_racers:
            hosted = host_pool.take(spec.processes)
        if hosted is None and spec.replicas > 1:
            why = namespaces_possible() or "racer hosts cannot run here (no pidfd_open)"
            raise HostsUnavailable(f"replicas={spec.replicas}: {why}")
        if hosted is None:
            spares = spare_pool.take(spec.start_method, spec.processes)
        gate = (
            hosted[0]
            if hosted is not None
            else spares.gate
            if spares is not None
            else StartGate(ctx, spec.processes)
        )
        self.result.racers = "hosted" if hosted is not None else "spares" if spares else "fresh"
        return hosted, spares, gate

    def _start_crew(
        self,
        ctx: Any,
        gate: StartGate,
        call: tuple[bytes, bytes],
        hosted: tuple[StartGate, list[Host]] | None,
        spares: SpareGroup | None,
    ) -> StartGate:
        """Start (or fork, or take) the racers and wait until each is ready; the gate they use."""
        try:
            if hosted is not None:
                self._fork_from(hosted[1], ctx, call)
            else:
                self._start(ctx, gate, call, spares)
            self.progress.moved()
            self._await_all("ready")
        except CannotForkRacer as exc:
            raise RaceError(f"race of {self.spec.fn_name}: {exc}", self.result) from None
        except (RacerDied, OSError, EOFError) as exc:
            host_failed = hosted is not None and isinstance(exc, OSError | EOFError)
            if (spares is None and not host_failed) or self.hosts is not None:
                raise  # never a silent run on one host instead of the race's replicas
            # A spare died, or a host failed, before the race began: start fresh racers.
            spare_pool.stats.fallbacks += 1
            shutdown(self.racers, gate)
            self.racers.clear()
            gate = StartGate(ctx, self.spec.processes)
            self.result.racers = "fresh"
            self._start(ctx, gate, call)
            self._await_all("ready")
        return gate

    def _start_on_gateways(self, call: tuple[bytes, bytes]) -> Gate:
        """Start the racers on the gateways (see :mod:`.replica_gateways`); the gate that
        releases them. A gateway that fails fails the race, and every gateway is ended then,
        so that no racer it was starting is left."""
        spec = self.spec
        try:
            crew = gateway_pool.start(spec.processes, spec.replicas, self.deadline)
        except (TimeoutError, GatewayError, OSError, EOFError) as exc:
            gateway_pool.end_all()
            kind = RaceTimeout if isinstance(exc, TimeoutError) else RaceError
            raise kind(
                f"race of {spec.fn_name} could not start its racers on gateways "
                f"(timeout={spec.timeout:g}): {exc}",
                self.result,
            ) from None
        token = f"racecheck-{uuid.uuid4().hex[:8]}"
        for index, process, channel, where in crew.racers:
            self.racers.append(Racer(index, process, channel, f"{token}-{index}", gateway=where))
        self._send_setups(call)
        self.progress.moved()
        return crew.gate

    def _run_rounds(self, gate: Gate) -> None:
        spec, result = self.spec, self.result
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

    def _fork_from(self, hosts: list[Host], ctx: Any, call: tuple[bytes, bytes]) -> None:
        """Have each host fork its racer, on a pipe of its own (see :mod:`.hosts`)."""
        token = f"racecheck-{uuid.uuid4().hex[:8]}"
        assignment = Assignment.now()
        places = self.hosts.places if self.hosts is not None else [None]
        for host in hosts:
            place = places[host.slot % len(places)]
            ours, theirs = ctx.Pipe()
            try:
                process = host.launch(theirs, dataclasses.replace(assignment, place=place))
            finally:
                theirs.close()
            racer = Racer(host.slot, process, ours, f"{token}-{host.slot}")
            racer.host = place.name if place is not None else None
            self.racers.append(racer)
        for racer in self.racers:
            if not racer.process.forked(self.deadline):
                raise RaceTimeout(
                    f"race of {self.spec.fn_name} timed out after {self.spec.timeout:g} s "
                    f"with racer {racer.index} still starting up; raise timeout= if start-up "
                    "is slow on this machine",
                    self.result,
                )
        self.result.hosts = tuple(r.host for r in self.racers if r.host is not None)
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
                self.racers.append(Racer(i, process, channel, f"{token}-{i}"))
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
            self.racers.append(Racer(i, process, ours, f"{token}-{i}"))
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

    def _run_round(self, number: int, gate: Gate) -> Round:
        if self.spec.reset is not None:
            self.spec.reset()
        self.progress.moved()  # the controller's own reset and the last check count
        self.coordinator.start_round()
        for racer in self.racers:
            racer.finished, racer.at_point = False, None
        self.round = state = RoundState(number)
        gate.arm(number)
        if self.clock is not None:
            self.clock.begin_round()
        while len(state.outcomes) < len(self.racers):
            self._step()
        timeline = self.clock.end_round() if self.clock is not None else ()
        self.coordinator.end_round()
        return dataclasses.replace(self._judge(state), clock=timeline)

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
        ready = wait_for(running, self.deadline, wake_after(poll))
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
                ready = wait_for(waiting, self.deadline, wake_after(None))
                if not ready:
                    self._look_for_progress(waiting, doing)
                for racer in waiting:
                    if racer.channel in ready or racer.process.sentinel in ready:
                        self._dispatch(racer, self._receive(racer, doing))
        finally:
            self._expected = ""

    # Verdicts and messages.

    def _judge(self, state: RoundState) -> Round:
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
