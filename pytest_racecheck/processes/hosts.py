"""Racer hosts: a fresh interpreter per racer slot, kept for the session, that forks each
race's racer.

Starting an interpreter and importing the harness is most of a short race's time (a quarter
to three quarters of a second for 8 racers on 2 cores). A **host** pays it once per session:
it is spawned (a fresh interpreter with its own hash seed), imports the harness and the
libraries racers usually need (:data:`~pytest_racecheck.wire.assignment.PRELOAD`, those the test
process has imported), and then never runs any test code. For each race, host ``i`` forks
racer ``i``: a new process that starts from the host's state, takes the test process's
environment, working directory and ``sys.path`` of that moment, loads the race's function
(importing the test's module afresh) and serves every round of that race, then ends. So:

- a racer carries nothing from an earlier race: every race's racers are new processes forked
  from hosts that no race's code has touched;
- the racers of one race have different hash seeds (one host each), as separate workers do;
  racer ``i`` of every race in a session has the same one (``fresh_racers=True`` spawns
  new interpreters for every race instead, with new seeds);
- nothing open crosses from the test process: a host is spawned, never forked from it.

Hosts serve ``start_method="spawn"`` races of up to :data:`HOST_CAPACITY` racers; they share
one :class:`~pytest_racecheck.processes.barrier.StartGate` made with room for that many, since a
gate's semaphores can only be handed to a process when it starts. A race of ``n`` racers uses hosts
``0`` to ``n - 1`` and starts those that do not exist yet. Each racer gets its own pipe to the
controller, passed through its host (``SCM_RIGHTS``), so a racer that dies closes its pipe as a
spawned racer would; its host reports its exit status and signals it on the controller's
behalf, so the controller handles a hosted racer as it handles any process.

Hosts never outlive the test process: each watches its parent (and its racer's parent is the
host), :func:`end_all` ends them at session end (``pytest_unconfigure``), and ``atexit`` is the
backstop. Each pytest-xdist worker has its own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import multiprocess as _multiprocess
import multiprocess.connection
import multiprocess.reduction

from pytest_racecheck.processes.barrier import StartGate
from pytest_racecheck.processes.racer import racer_main
from pytest_racecheck.processes.relay import fork_racer
from pytest_racecheck.wire.assignment import (
    Assignment,
    interpreter_env,
    preload,
    preload_names,
)

multiprocess: Any = _multiprocess  # an untyped package

HOST_CAPACITY = 32
"""The most racers a race may have to be forked from hosts; a larger race spawns its own."""

POLL_S = 0.2
"""How often a host looks up to see whether its parent is alive."""

END_GRACE_S = 0.5
"""How long ended hosts get to exit before SIGKILL."""


class CannotForkRacer(Exception):
    """A host could not fork its racer where the race asked (its simulated host)."""


# What a host and the controller say to each other on the host's control pipe.


@dataclass(frozen=True)
class Forked:
    """The host forked the race's racer (the controller's signals and probes use its pid)."""

    pid: int


@dataclass(frozen=True)
class CannotFork:
    """The host could not fork the racer (into its simulated host): why."""

    why: str


@dataclass(frozen=True)
class Exited:
    """The host's racer ended, with this exit code (negative: killed by that signal)."""

    exitcode: int


@dataclass(frozen=True)
class Signal:
    """Send this signal to the host's racer, if it still runs."""

    signum: int


# The host's side.


def host_main(slot: int, control: Any, gate: StartGate, preloaded: tuple[str, ...]) -> None:
    """A host's life: import ahead, then for each race fork racer ``slot`` and watch it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    while True:
        if preloaded and not control.poll(0):
            # Idle: import ahead now. A host started for a race that waits forks its racer
            # first, so the race is not slower than one of spawned racers.
            preload(preloaded)
            preloaded = ()
        assignment = _next_race(control, parent)
        if assignment is None:
            os._exit(0)
        channel_fd = multiprocess.reduction.recv_handle(control)
        try:
            pid, racer = fork_racer(assignment.place, channel_fd)
        except OSError as exc:
            os.close(channel_fd)
            control.send(CannotFork(str(exc)))
            continue
        if pid == 0:
            _racer(slot, channel_fd, gate, control, assignment)
        os.close(channel_fd)
        control.send(Forked(racer))
        exitcode = _watch(pid, racer, control, parent)
        try:
            control.send(Exited(exitcode))
        except OSError:
            os._exit(0)


def _next_race(control: Any, parent: int) -> Assignment | None:
    """The next race's context, or None when the pool ends this host or its parent is gone."""
    while True:
        try:
            if control.poll(POLL_S):
                message = control.recv()
                return message if isinstance(message, Assignment) else None
        except (EOFError, OSError):
            return None
        if os.getppid() != parent:
            return None


def _racer(slot: int, channel_fd: int, gate: StartGate, control: Any, job: Assignment) -> None:
    """In the forked racer: serve the race on its own pipe, never touch the host's."""
    code = 0
    try:
        control.close()
        channel = multiprocess.connection.Connection(channel_fd)
        racer_main(slot, channel, gate, os.getppid(), assignment=job)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _watch(pid: int, racer: int, control: Any, parent: int) -> int:
    """Wait for the racer (or its relay, ``pid``) to end, signalling the racer when asked;
    its exit code."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready = multiprocess.connection.wait([control, pidfd], timeout=POLL_S)
            if pidfd in ready:
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if control in ready:
                try:
                    message = control.recv()
                except (EOFError, OSError):
                    message = None
                if isinstance(message, Signal):
                    # Not reaped yet (nor its relay, which ends with it): the pid is still its.
                    os.kill(racer, message.signum)
                    continue
            elif os.getppid() == parent:
                continue
            # The controller is gone: so is the race.
            os.kill(racer, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)
    finally:
        os.close(pidfd)


# The controller's side.


class HostedRacer:
    """The controller's handle on a racer a host forked: what the controller needs of a
    process (pid, sentinel, is_alive, join, terminate, kill, exitcode, close)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.pid: int | None = None
        self.exitcode: int | None = None

    @property
    def sentinel(self) -> Any:
        """Readable once the racer ended (its host says so) or the host is gone."""
        return self.host.control

    def forked(self, deadline: float) -> bool:
        """Wait for the host's word that the racer exists; False if the deadline passed.
        OSError or EOFError if the host is gone."""
        if not self.host.control.poll(max(deadline - time.monotonic(), 0)):
            return False
        message = self.host.control.recv()
        if isinstance(message, CannotFork):
            raise CannotForkRacer(f"racer host {self.host.slot} could not fork: {message.why}")
        if not isinstance(message, Forked):
            raise OSError(f"racer host {self.host.slot} sent {message!r:.100}")
        self.pid = message.pid
        return True

    def _poll(self, timeout: float) -> None:
        if self.exitcode is not None:
            return
        try:
            if not self.host.control.poll(timeout):
                return
            message = self.host.control.recv()
        except (EOFError, OSError):
            self.host.broken = True
            self.exitcode = -signal.SIGKILL  # its host is gone, and it within POLL_S
            return
        if isinstance(message, Exited):
            self.exitcode = message.exitcode
        else:
            self.host.broken = True

    def is_alive(self) -> bool:
        self._poll(0)
        return self.exitcode is None

    def join(self, timeout: float) -> None:
        self._poll(timeout)

    def _signal(self, signum: int) -> None:
        if self.is_alive():
            try:
                self.host.control.send(Signal(signum))
            except OSError:
                self.host.broken = True

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Nothing to release: the pipe belongs to the host."""


@dataclass
class Host:
    """One host process and the controller's end of its control pipe."""

    slot: int
    process: Any
    control: Any
    racer: HostedRacer | None = None
    broken: bool = False
    started: float = field(default_factory=time.monotonic)

    def idle(self) -> bool:
        """Alive, not broken, and its last racer is known to have ended."""
        if self.broken or not self.process.is_alive():
            return False
        return self.racer is None or not self.racer.is_alive()

    def launch(self, channel_end: Any, assignment: Assignment) -> HostedRacer:
        """Ask the host to fork a racer whose pipe is ``channel_end`` (OSError if it is gone)."""
        self.racer = HostedRacer(self)
        self.control.send(assignment)
        multiprocess.reduction.send_handle(self.control, channel_end.fileno(), self.process.pid)
        return self.racer

    def end(self) -> None:
        """Ask it to leave (and its racer, if one still runs, to die)."""
        racer = self.racer
        if racer is not None and racer.pid is not None and racer.exitcode is None:
            # Its host has not reaped it (or has just): the pid is still the racer's.
            with contextlib.suppress(OSError):
                os.kill(racer.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.control.close()


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class HostPool:
    """The test process's hosts, one per racer slot, and the gate they share."""

    def __init__(self) -> None:
        self.hosts: list[Host | None] = []
        self.gate: StartGate | None = None
        self.started = 0
        """Hosts started in this process's life (for tests and benchmarks)."""
        self._owner = os.getpid()
        self._interpreter_env: dict[str, str] = {}
        self._supported: bool | None = None

    def take(
        self, processes: int, slots: Sequence[int] | None = None
    ) -> tuple[StartGate, list[Host]] | None:
        """The gate and hosts ``0`` to ``processes - 1`` (or those of ``slots``, racer
        numbers, for a remote host) for a race, starting those missing; None if hosts cannot
        serve it (the race spawns its own racers)."""
        wanted = list(range(processes)) if slots is None else list(slots)
        if os.getpid() != self._owner or max(wanted) >= HOST_CAPACITY:
            return None  # a forked copy of the test process never touches the hosts
        if self._supported is None:
            self._supported = _pidfd_works()
        if not self._supported:
            return None
        if self.gate is not None and (
            interpreter_env() != self._interpreter_env
            or not all(h.idle() for h in self.hosts if h is not None)
        ):
            # Hosts started under other PYTHON* variables are not what a racer started now
            # would be; a host that died or whose racer did not end leaves a gate that some
            # stray racer may still touch: start over, with a new gate.
            self.end_all()
        ctx = multiprocess.get_context("spawn")
        if self.gate is None:
            self.gate = StartGate(ctx, processes, capacity=HOST_CAPACITY)
            self._interpreter_env = interpreter_env()
        self.hosts += [None] * (max(wanted) + 1 - len(self.hosts))
        for slot in wanted:
            if self.hosts[slot] is None:
                self.hosts[slot] = self._start(ctx, slot)
        self.gate.reset(len(wanted), wanted)
        return self.gate, [h for h in (self.hosts[s] for s in wanted) if h is not None]

    def _start(self, ctx: Any, slot: int) -> Host:
        assert self.gate is not None
        ours, theirs = ctx.Pipe()
        process = ctx.Process(
            target=host_main,
            args=(slot, theirs, self.gate, preload_names()),
            name=f"racer-host-{slot}",
            daemon=True,
        )
        process.start()
        theirs.close()
        self.started += 1
        return Host(slot, process, ours)

    def pids(self) -> list[int]:
        """The hosts' pids."""
        return [h.process.pid for h in self.hosts if h is not None]

    def end_all(self) -> None:
        """End every host (session end, or to start over)."""
        if os.getpid() != self._owner:
            return
        hosts = [h for h in self.hosts if h is not None]
        self.hosts, self.gate = [], None
        for host in hosts:
            host.end()
        end = time.monotonic() + END_GRACE_S
        for host in hosts:
            host.process.join(max(end - time.monotonic(), 0))
        for host in hosts:
            if host.process.is_alive():
                host.process.kill()
                host.process.join(10.0)  # SIGKILL always ends it; a loaded kernel may be slow
            if host.process.exitcode is not None:
                host.process.close()


pool = HostPool()
"""The hosts of this test process."""


def end_all() -> None:
    pool.end_all()


atexit.register(end_all)
