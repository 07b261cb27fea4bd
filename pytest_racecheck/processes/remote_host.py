"""A remote racer host: what runs inside an execnet gateway's interpreter, on another machine
(or, with a ``popen`` gateway, in another interpreter of this one).

The controller (:mod:`pytest_racecheck.processes.gateways`) sends this module's :func:`serve`
the racers of each race that run on this gateway: racers ``g, g + N, ...`` of a race on ``N``
gateways. It serves them as the test process serves its own: a
:class:`~pytest_racecheck.processes.hosts.HostPool` of this interpreter starts one racer host
per racer number (kept for the session) and each host forks that race's racer, running the same
:func:`~pytest_racecheck.processes.racer.racer_main`. The differences:

- a racer's channel is a TCP connection to the controller, opened here (with the controller's
  authentication key and the race's token) and handed to the host, which passes it to the
  racer as it passes a pipe;
- the start gate is this machine's: a :class:`~pytest_racecheck.processes.barrier.StartGate`
  for this gateway's racers, armed and stopped when the controller says so. Each gateway's
  gate opens when its own last racer checks in, so gateways open one message trip apart;
- the controller cannot see this machine's ``/proc``: this side tells it each racer's pid
  (for its reports only), exit code, which generation the gate released, and when its racers
  (and what they started) used CPU (``("cpu",)``, at most every :data:`LOOK_EVERY_S`, for the
  controller's no-progress bound); it passes on the controller's signals, and ends what an
  ended racer left in its process group (``kill_group``).

Messages on the execnet channel are tuples of plain values (execnet sends nothing else):

    controller -> here: ("race", {...}), ("arm", generation), ("stop",), ("signal", racer,
                        signum), ("end",)
    here -> controller: ("forked", racer, pid, token), ("exited", racer, exitcode, token),
                        ("released", generation), ("cpu",), ("error", text)

(``token`` is the race's: news of an earlier race's racer is never taken for this one's.)

When the channel closes (the test process ended, was killed, or its machine is gone), this side
ends its hosts, which end their racers; hosts and racers also watch their parents.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
import traceback
from typing import Any

import multiprocess as _multiprocess
import multiprocess.connection

from pytest_racecheck.linux import procfs
from pytest_racecheck.linux.descendants import descendants, kill_group
from pytest_racecheck.processes.barrier import StartGate
from pytest_racecheck.processes.hosts import POLL_S, HostedRacer, HostPool
from pytest_racecheck.processes.racer_link import connect_back, controller_host
from pytest_racecheck.wire.assignment import Assignment

multiprocess: Any = _multiprocess  # an untyped package

LOOK_EVERY_S = 0.5
"""How often this side looks at its racers' CPU time (as the controller's no-progress watch)."""

MIN_CPU_NS = 2_000_000
"""CPU between two looks that counts as progress (the controller's figure)."""

_CLOSED = ("closed",)
"""What the channel's callback gets when the channel closes."""


def serve(channel: Any) -> None:
    """Serve races on this gateway until the controller ends it or goes away."""
    _Server(channel).run()


class _Server:
    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.pool = HostPool()
        self.gate: StartGate | None = None
        self.racers: dict[int, HostedRacer] = {}
        self.tokens: dict[int, str] = {}
        """The race each racer serves, by racer number."""
        self.released = -1
        self.cpu: dict[int, int] = {}
        self.looked = 0.0
        self.commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        channel.setcallback(self._received, endmarker=_CLOSED)

    def _received(self, message: Any) -> None:
        """In execnet's receiving thread: arm and stop at once (the gate is thread-safe and
        its release is the urgent part), everything else through the main loop."""
        kind = message[0] if isinstance(message, tuple) and message else None
        gate = self.gate
        if kind == "arm" and gate is not None:
            gate.arm(message[1])
            return
        if kind == "stop" and gate is not None:
            gate.stop()
        self.commands.put(message if kind is not None else _CLOSED)
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"x")

    def run(self) -> None:
        try:
            while self._step():
                pass
        finally:
            self.pool.end_all()

    def _step(self) -> bool:
        """Wait for a command or a racer's news, act on it; False once the race is over."""
        watched: list[Any] = [self.wake_r]
        watched += [r.host.control for r in self.racers.values()]
        ready = multiprocess.connection.wait(watched, timeout=POLL_S)
        if self.wake_r in ready:
            os.read(self.wake_r, 4096)
        while not self.commands.empty():
            message = self.commands.get()
            if message[0] in ("end", "closed"):
                return False
            self._command(message)
        self._watch_racers()
        self._look_at_cpu()
        if self.gate is not None and self.gate.released_generation != self.released:
            self.released = self.gate.released_generation
            self._send(("released", self.released))
        return True

    def _command(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "race":
            try:
                self._begin(message[1])
            except Exception:
                self._send(("error", traceback.format_exc(limit=3)))
        elif kind == "signal":
            racer = self.racers.get(message[1])
            if racer is not None and racer.pid is not None:
                (racer.kill if message[2] == signal.SIGKILL else racer.terminate)()

    def _begin(self, race: dict[str, Any]) -> None:
        """Fork this gateway's racers of a race, each on its own connection to the controller."""
        slots: list[int] = race["slots"]
        taken = self.pool.take(len(slots), slots)
        if taken is None:
            raise OSError(f"this machine's racer hosts cannot serve racers {slots}")
        self.gate, hosts = taken
        self.released = -1
        assignment = Assignment(race["environ"], race["cwd"], race["sys_path"])
        address = controller_host(race["host"])
        for slot, host in zip(slots, hosts, strict=True):
            channel = connect_back(address, race["port"], race["authkey"])
            try:
                channel.send(("racer", slot, race["token"]))
                self.racers[slot] = host.launch(channel, assignment)
                self.tokens[slot] = race["token"]
            finally:
                channel.close()

    def _watch_racers(self) -> None:
        """Tell the controller of each racer forked and each that ended."""
        for slot, racer in list(self.racers.items()):
            if racer.pid is None:
                try:
                    if not racer.forked(time.monotonic()):
                        continue
                except (OSError, EOFError):
                    racer.exitcode = -signal.SIGKILL  # its host is gone
                else:
                    self._send(("forked", slot, racer.pid, self.tokens[slot]))
            if racer.is_alive():
                continue
            if racer.pid is not None:
                kill_group(racer.pid)  # what it left in its process group
            del self.racers[slot]
            self._send(("exited", slot, racer.exitcode, self.tokens.pop(slot)))

    def _look_at_cpu(self) -> None:
        """Say ("cpu",) when this gateway's racers, or what they started, used CPU since the
        last look: the controller cannot read this machine's ``/proc``."""
        now = time.monotonic()
        if not self.racers or now - self.looked < LOOK_EVERY_S:
            return
        self.looked = now
        table = procfs.process_table()
        watched = {r.pid for r in self.racers.values() if r.pid is not None}
        for pid in list(watched):
            watched.update(descendants(pid, table))
        cpu = {p: ns for p in watched if (ns := procfs.process_cpu_ns(p)) is not None}
        used = sum(max(ns - self.cpu.get(p, ns), 0) for p, ns in cpu.items())
        self.cpu = cpu
        if used >= MIN_CPU_NS:
            self._send(("cpu",))

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(Exception):  # the controller is gone: the loop ends soon
            self.channel.send(message)
