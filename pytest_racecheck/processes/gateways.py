"""Racers on real hosts: execnet gateways (``--racecheck-replica-gateways``), the controller's
side.

A race with ``replicas=N`` runs racer ``i`` on gateway ``i mod N`` of the configured list. Each
gateway is an execnet gateway (``popen//python=...`` on this machine, ``ssh=user@box//python=...``
on another) kept for the session, running :func:`~pytest_racecheck.processes.remote_host.serve`
(the plugin must be installed there, as pytest-xdist requires of its workers). Per race:

1. the controller listens on a TCP port (one per session, with a random authentication key)
   and tells each gateway its racers, the race's token and the test process's context
   (:class:`~pytest_racecheck.wire.assignment.Assignment`);
2. each gateway's remote host forks its racers there, each with a connection of its own back
   to the controller: that connection is the racer's channel, read by the controller as it
   reads a pipe;
3. :class:`GatewayGate` gives the controller the start gate's interface (reset, arm, stop,
   released_generation); arming sends one message per gateway, and each gateway's own gate
   opens when its last racer checks in. Racers on different gateways are released one message
   trip apart (docs/replica-gateways.md gives the skew measured);
4. :class:`RemoteRacer` gives the controller a process's interface (pid, sentinel, is_alive,
   join, terminate, kill, exitcode, close) from what the remote host says; its pid is a pid
   of that machine, which the controller never looks up in its own ``/proc``.

Gateways end at session end (``pytest_unconfigure``; ``atexit`` behind it); a remote host
whose channel closes (the test process was killed) ends its hosts and racers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import execnet
import multiprocess as _multiprocess
import multiprocess.connection

from pytest_racecheck.processes.racer_link import accept_racers
from pytest_racecheck.wire.assignment import Assignment

multiprocess: Any = _multiprocess  # an untyped package

OPTION = "--racecheck-replica-gateways"

END_TIMEOUT_S = 5.0
"""How long ending gateways may take before they are killed."""

_BOOT = """
import sys
for path in reversed(channel.receive()):
    if path not in sys.path:
        sys.path.insert(0, path)
try:
    from pytest_racecheck.processes import remote_host
except ImportError as exc:
    channel.send(("error", "cannot import pytest_racecheck there (%s): install pytest-racecheck"
                  " on that machine, as pytest-xdist needs itself there" % exc))
else:
    remote_host.serve(channel)
"""


class GatewayError(Exception):
    """A gateway could not be made, or its remote host failed: the message says which."""


def parse_specs(values: Sequence[str], source: str = OPTION) -> list[str]:
    """The gateway specs of the option's values (repeatable) or the ini key's lines; ``N*spec``
    stands for ``N`` copies. ValueError naming ``source`` for a spec that is not ``popen`` or
    ``ssh``."""
    specs: list[str] = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        count, star, rest = value.partition("*")
        if star and count.strip().isdigit():
            specs += [rest.strip()] * int(count)
        else:
            specs.append(value)
    for spec in specs:
        xspec = execnet.XSpec(spec)
        if not (xspec.popen or xspec.ssh):
            raise ValueError(
                f"{source}={spec}: not an execnet gateway this plugin starts racers through: "
                "give popen//python=PYTHON (this machine) or ssh=USER@HOST//python=PYTHON, "
                f"one per {source} (repeat the option; N*SPEC for N alike)"
            )
    return specs


def is_local(spec: str) -> bool:
    """Whether the gateway runs on this machine (``popen``): it shares its files."""
    return bool(execnet.XSpec(spec).popen)


class RemoteRacer:
    """The controller's handle on a racer a gateway's host forked: a process's interface, told
    by the remote host's messages. ``sentinel`` is a pipe that turns readable when it ends."""

    def __init__(self, host: RemoteHost, index: int) -> None:
        self.host = host
        self.index = index
        self.pid: int | None = None
        """Its pid on the gateway's machine (for reports: never looked up here)."""
        self.exitcode: int | None = None
        self.channel: Any = None
        """The racer's connection, once it connected."""
        self._ended_r, self._ended_w = os.pipe()

    @property
    def sentinel(self) -> int:
        return self._ended_r

    def ended(self, exitcode: int) -> None:
        if self.exitcode is None:
            self.exitcode = exitcode
            with contextlib.suppress(OSError):
                os.write(self._ended_w, b"x")

    def lost(self) -> None:
        """Its gateway is gone: it counts as killed, and its connection is shut down, so that
        a controller reading it gets EOF now even if that machine can no longer say so."""
        self.ended(-signal.SIGKILL)
        if self.channel is not None:
            fd = self.channel.fileno
            with contextlib.suppress(OSError, ValueError), socket.socket(fileno=os.dup(fd())) as s:
                s.shutdown(socket.SHUT_RDWR)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._ended_r], [], [], timeout)

    def terminate(self) -> None:
        self.host.send(("signal", self.index, signal.SIGTERM))

    def kill(self) -> None:
        self.host.send(("signal", self.index, signal.SIGKILL))

    def close(self) -> None:
        for fd in (self._ended_r, self._ended_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ended_r = self._ended_w = -1


class RemoteHost:
    """One gateway, its remote host, and the racers it runs in the current race."""

    def __init__(self, number: int, spec: str, group: Any) -> None:
        self.number = number
        self.spec = spec
        self.name = f"gateway {number} ({spec})"
        self.racers: dict[int, RemoteRacer] = {}
        self.token = ""
        """The current race's: the remote host's news of a racer carries its race's."""
        self.released = -1
        self.cpu_moved_at = 0.0
        """When its remote host last said its racers used CPU (``time.monotonic()``)."""
        self.broken = ""
        self._lock = threading.Lock()
        try:
            self.gateway = group.makegateway(spec)
            self.channel = self.gateway.remote_exec(_BOOT)
            self.channel.send(list(sys.path) if is_local(spec) else [])
        except Exception as exc:
            raise GatewayError(f"{OPTION}: cannot start {self.name}: {exc}") from exc
        self.channel.setcallback(self._received, endmarker=("closed",))

    def _received(self, message: Any) -> None:
        """In execnet's receiving thread: what the remote host says."""
        kind = message[0]
        racer = None
        with self._lock:
            if kind in ("forked", "exited") and message[3] == self.token:
                racer = self.racers.get(message[1])
        if kind == "forked" and racer is not None:
            racer.pid = message[2]
        elif kind == "exited" and racer is not None:
            racer.ended(message[2])
        elif kind == "released":
            self.released = message[1]
        elif kind == "cpu":
            self.cpu_moved_at = time.monotonic()
        elif kind in ("error", "closed"):
            why = message[1] if kind == "error" else self._closed_reason()
            self.broken = self.broken or f"{self.name}: {why}".rstrip()
            if kind == "closed":
                for racer in list(self.racers.values()):
                    racer.lost()

    def _closed_reason(self) -> str:
        # What the remote code raised, if anything (execnet keeps it on the channel).
        error = getattr(self.channel, "_getremoteerror", lambda: None)()
        return f"its remote host ended: {error}" if error else "its connection closed"

    def begin(self, slots: list[int], race: dict[str, Any]) -> list[RemoteRacer]:
        with self._lock:
            self.racers = {i: RemoteRacer(self, i) for i in slots}
            self.token = race["token"]
        self.released = -1
        self.send(("race", {**race, "slots": slots}))
        return list(self.racers.values())

    def send(self, message: tuple[Any, ...]) -> None:
        try:
            self.channel.send(message)
        except Exception as exc:  # the channel or gateway is gone
            self.broken = self.broken or f"{self.name}: cannot send to it: {exc}"
            for racer in list(self.racers.values()):
                racer.lost()

    def end(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.send(("end",))


class GatewayGate:
    """The start gate as the controller uses it, for racers on gateways: each gateway has its
    own gate for its racers; arming or stopping this one arms or stops all of them."""

    def __init__(self, hosts: Sequence[RemoteHost]) -> None:
        self.hosts = list(hosts)

    def reset(self, parties: int) -> None:
        """Nothing to do: each gateway resets its gate when its racers of a race start."""

    def arm(self, generation: int) -> None:
        for host in self.hosts:
            host.send(("arm", generation))

    def stop(self) -> None:
        for host in self.hosts:
            host.send(("stop",))

    @property
    def released_generation(self) -> int:
        """The last generation every gateway's gate released (told a little later than it
        happened: each remote host says so when it next looks)."""
        return min((h.released for h in self.hosts), default=-1)


@dataclass
class GatewayRace:
    """A race's racers on gateways, as :meth:`GatewayPool.start` returns them."""

    gate: GatewayGate
    racers: list[tuple[int, RemoteRacer, Any, str]]
    """Per racer, in racer order: its number, process handle, channel, and where it runs."""


class GatewayPool:
    """The test process's gateways, made when a race first needs them, kept for the session."""

    def __init__(self) -> None:
        self.specs: list[str] = []
        self.hosts: list[RemoteHost | None] = []
        self._group: Any = None
        self._listener: Any = None
        self._authkey = os.urandom(32)
        self._owner = os.getpid()

    def configure(self, specs: Sequence[str]) -> list[str]:
        """Use these gateway specs from now on; the previous ones (to put back)."""
        previous = self.specs
        if list(specs) != previous:
            self.end_all()
            self.specs = list(specs)
        return previous

    def check(self, replicas: int) -> None:
        """ValueError when ``replicas`` gateways are not configured."""
        if len(self.specs) < replicas:
            raise ValueError(
                f"replicas={replicas} runs racers on {replicas} gateways, but {OPTION} "
                f"names {len(self.specs)}: give at least {replicas} gateway specs "
                f"(e.g. {OPTION}={replicas}*popen//python={sys.executable})"
            )

    def start(self, processes: int, replicas: int, deadline: float) -> GatewayRace:
        """Start a race's racers on the first ``replicas`` gateways; each connected to the
        controller. TimeoutError past ``deadline``; GatewayError when a gateway failed."""
        self.check(replicas)
        hosts = [self._host(g) for g in range(replicas)]
        gate = GatewayGate(hosts)
        token = uuid.uuid4().hex
        assignment = Assignment.now()
        bind, port = self._listen()
        race = {
            "host": "127.0.0.1" if bind == "127.0.0.1" else None,
            "port": port,
            "authkey": self._authkey,
            "token": token,
            "environ": assignment.environ,
            "cwd": assignment.cwd,
            "sys_path": assignment.sys_path,
        }
        remote: dict[int, RemoteRacer] = {}
        for g, host in enumerate(hosts):
            slots = list(range(g, processes, replicas))
            remote.update(zip(slots, host.begin(slots, race), strict=True))
        channels = accept_racers(
            self._listener, self._authkey, token, set(remote), deadline, _broken(hosts)
        )
        for index, channel in channels.items():
            remote[index].channel = channel
        while any(r.pid is None and r.exitcode is None for r in remote.values()):
            _broken(hosts)()
            if time.monotonic() >= deadline:
                raise TimeoutError("racers on gateways were not forked in time")
            time.sleep(0.005)
        return GatewayRace(
            gate, [(i, remote[i], channels[i], hosts[i % replicas].name) for i in sorted(remote)]
        )

    def _host(self, number: int) -> RemoteHost:
        self.hosts += [None] * (number + 1 - len(self.hosts))
        host = self.hosts[number]
        if host is not None and host.broken:
            host.end()
            host = None
        if host is None:
            if self._group is None:
                self._group = execnet.Group()
            host = RemoteHost(number, self.specs[number], self._group)
            self.hosts[number] = host
        return host

    def _listen(self) -> tuple[str, int]:
        """The session's listening socket: loopback when every gateway is on this machine."""
        if self._listener is None:
            bind = "127.0.0.1" if all(is_local(s) for s in self.specs) else "0.0.0.0"
            self._listener = socket.create_server((bind, 0), backlog=64)
        bind, port = self._listener.getsockname()[:2]
        return bind, port

    def end_all(self) -> None:
        """End every gateway and its remote host (session end, or other specs)."""
        if os.getpid() != self._owner:
            return
        hosts = [h for h in self.hosts if h is not None]
        self.hosts = []
        for host in hosts:
            host.end()
        if self._group is not None:
            with contextlib.suppress(Exception):
                self._group.terminate(timeout=END_TIMEOUT_S)
            self._group = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def _broken(hosts: Sequence[RemoteHost]) -> Callable[[], None]:
    def look() -> None:
        for host in hosts:
            if host.broken:
                raise GatewayError(host.broken)

    return look


pool = GatewayPool()
"""The gateways of this test process."""


def end_all() -> None:
    pool.end_all()


atexit.register(end_all)
