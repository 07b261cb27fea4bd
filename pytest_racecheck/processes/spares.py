"""Spare racers: fresh interpreters started ahead of the races that will need them.

Racers are forked from racer hosts by default (:mod:`pytest_racecheck.processes.hosts`), which is
fast. A race of fresh racers (``fresh_racers=True``, or ``start_method="forkserver"``) spawns new
interpreters instead, and spares take that start-up off its critical path: a *spare* is a
racer started before any race asked for it, a fresh interpreter (own hash seed) that imported
the harness and the libraries racers usually need, and now waits for a race.

- Spares come in **groups**, one group per race size and start method: the start gate's
  semaphores can only be handed to a process when it starts, so a group is born with its own
  :class:`~pytest_racecheck.processes.barrier.StartGate` sized for ``processes`` racers.
- A group serves **one race only**, then its racers end as any racer does; a fresh group is
  started for the next race :data:`FILL_DELAY_S` after that race ends (never during a race: on
  a small machine the start-up would steal the cores the racers race on). A race that comes
  sooner (tests back to back) cancels that start: nothing is launched, nothing competes with
  its own racers. Nothing is kept from one test's function to the next.
- A group is used **only when ready**: every spare has imported what it preloads and said so.
  A race never waits for a group still starting (it could take longer than starting its own
  racers, which the group's start-up would slow down besides): a race that comes while a
  group is being launched stops the launch, and a group launched but not ready is killed at
  once (SIGKILL: a spare holds nothing; it is reaped beside the race), so spares never make
  start-up slower than without them beyond a few system calls.
- The first group of a size starts only once a race of that size ended: no spare exists while
  no race runs. ``limit`` groups are kept per size and start method (``--racecheck-spares``,
  default 0: off), and at most :data:`MAX_SPARE_PROCESSES` processes in all (the least
  recently asked sizes go first).
- ``start_method="fork"`` never uses spares: a forked racer exists to inherit the test
  process's state at the moment of the race, which a spare forked earlier would not have.
- When a race takes a group, each spare receives the test process's current environment,
  working directory and ``sys.path`` (an :class:`~pytest_racecheck.wire.assignment.Assignment`)
  before the race's Setup. A group started under different ``PYTHON*`` variables
  (``PYTHONHASHSEED``...) than the current ones is not used.
- A group whose process died is never handed out, nor one whose process is dying (its main
  thread already a zombie while its other threads exit: the pipe is still open and the process
  cannot be reaped yet, so only ``/proc`` shows it); one that dies while it takes its Setup
  makes the race start fresh racers (see ``Controller.run``).
- Spares never outlive the test process: the racer's watchdog ends a spare whose parent is gone
  (also after SIGKILL), :func:`end_all` ends them at session end (``pytest_unconfigure``), and an
  ``atexit`` hook is the backstop. Each pytest-xdist worker is its own process with its own pool.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import multiprocess as _multiprocess

from pytest_racecheck.linux import procfs
from pytest_racecheck.processes.barrier import StartGate
from pytest_racecheck.processes.racer import racer_main
from pytest_racecheck.wire.assignment import Assignment, interpreter_env, preload_names
from pytest_racecheck.wire.messages import Waiting

multiprocess: Any = _multiprocess  # an untyped package

DEFAULT_LIMIT = 0
"""Groups kept ready per (start method, race size) by default."""

MAX_SPARE_PROCESSES = 32
"""No more spare processes than this in one test process, whatever the sizes asked for."""

END_GRACE_S = 0.5
"""How long ended spares get to exit after SIGTERM before SIGKILL."""

KILL_WAIT_S = 10.0
"""How long to wait for a spare after SIGKILL (a bound, never reached on a sane machine)."""

FILL_DELAY_S = 0.1
"""How long after a race ends the next group starts: a race that follows sooner (tests back to
back) finds nothing launched, so no spare competes with its own racers for the cores."""

SPARE_METHODS = ("spawn", "forkserver")


@dataclass
class SpareGroup:
    """``size`` spare racers started together, sharing one start gate: one race's racers."""

    start_method: str
    size: int
    gate: StartGate
    processes: list[Any]
    channels: list[Any]
    interpreter_env: dict[str, str]
    started: float = field(default_factory=time.monotonic)

    waiting: set[int] = field(default_factory=set)
    """The spares that said they wait (imported what they preload)."""

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def usable(self) -> bool:
        """Every spare alive, started like a racer now, and waiting for its race: a group
        still starting is not waited for."""
        if interpreter_env() != self.interpreter_env:
            return False
        if not all(p.is_alive() for p in self.processes):
            return False
        # A killed spare's main thread becomes a zombie before its watchdog thread has exited;
        # until then the process cannot be reaped and its pipe stays open (under load, for
        # tens of milliseconds): is_alive() and the pipe still say alive, /proc says dying.
        if any(procfs.state(p.pid) in ("Z", "X") for p in self.processes):
            return False
        for i, channel in enumerate(self.channels):
            try:
                if i in self.waiting:
                    if channel.poll(0):
                        return False  # a waiting spare says nothing more: its pipe closed
                    continue
                if not channel.poll(0) or not isinstance(channel.recv(), Waiting):
                    return False
            except (EOFError, OSError):
                return False
            self.waiting.add(i)
        return True

    def assign(self) -> None:
        """Hand every spare the test process's present context; OSError if one is gone."""
        assignment = Assignment.now()
        for i, (process, channel) in enumerate(zip(self.processes, self.channels, strict=True)):
            process.name = f"racecheck-racer-{i}"  # a racer now: it ends with its race
            channel.send(assignment)


def start_group(
    start_method: str, size: int, stop: threading.Event | None = None
) -> SpareGroup | None:
    """Start ``size`` spare racers; returns at once (they import in the background). None
    if ``stop`` was set meanwhile (a race came): what was launched is killed and reaped."""
    ctx = multiprocess.get_context(start_method)
    gate = StartGate(ctx, size)
    preload = preload_names()
    processes, channels = [], []
    try:
        for i in range(size):
            if stop is not None and stop.is_set():
                _kill(processes, channels)
                return None
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=racer_main,
                args=(i, theirs, gate, os.getpid()),
                kwargs={"spare_preload": preload},
                name=f"spare-racer-{i}",
                daemon=True,
            )
            process.start()
            theirs.close()
            processes.append(process)
            channels.append(ours)
    except BaseException:
        _end(processes, channels)
        raise
    return SpareGroup(start_method, size, gate, processes, channels, interpreter_env())


def _sigkill(processes: list[Any]) -> None:
    """SIGKILL spares at once (a race is starting: a spare still importing must not compete
    with its racers for the cores). They hold nothing and have started nothing."""
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGKILL)


def _kill(processes: list[Any], channels: list[Any]) -> None:
    """Kill spares at once, then reap them."""
    _sigkill(processes)
    _end(processes, channels)


def _end(processes: list[Any], channels: list[Any]) -> None:
    """End spares that no race took: they hold nothing, so SIGTERM at once, then SIGKILL."""
    for channel in channels:
        channel.close()
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    end = time.monotonic() + END_GRACE_S
    for process in processes:
        process.join(max(end - time.monotonic(), 0))
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    for process in alive:
        # SIGKILL always ends it; on a loaded machine the kernel may take its time.
        process.join(KILL_WAIT_S)
    for process in processes:
        if process.exitcode is not None:
            process.close()


@dataclass
class PoolStats:
    started: int = 0
    """Groups started."""
    used: int = 0
    """Groups handed to a race."""
    discarded: int = 0
    """Groups ended unused: a spare died or was still starting, the interpreter variables
    changed, or too many."""
    fallbacks: int = 0
    """Races whose spares failed while taking their Setup and that started fresh racers."""


class SparePool:
    """The test process's spare groups, by (start method, size), least recently asked first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.groups: OrderedDict[tuple[str, int], list[SpareGroup]] = OrderedDict()
        self.stats = PoolStats()
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._filling: threading.Thread | None = None
        self._stop_filling = threading.Event()
        self._ending: list[threading.Thread] = []

    def _mine(self) -> bool:
        # A forked copy of the test process (a fork racer) must never touch its spares.
        return os.getpid() == self._owner

    def take(self, start_method: str, size: int) -> SpareGroup | None:
        """A usable group for this race, or None: the race starts its own racers."""
        if not self._mine():
            return None
        # A group not launched yet is not launched at all, one being launched stops: this
        # race starts now, and no spare may start beside its racers.
        self._stop_filling.set()
        if start_method == "fork":
            # Never fork while another thread is starting processes, or ending them.
            self._settle()
            for ending in self._ending:
                ending.join()
            self._ending.clear()
        if start_method not in SPARE_METHODS or self.limit <= 0:
            return None
        with self._lock:
            waiting = self.groups.get((start_method, size), [])
            while waiting:
                group = waiting.pop(0)
                if group.usable():
                    self.stats.used += 1
                    return group
                self.stats.discarded += 1
                self._discard(group)
        return None

    def _discard(self, group: SpareGroup) -> None:
        """Kill a group no race will take, now, and reap it beside the race (waiting for a
        group still starting to exit would make the race slower than one without spares)."""
        _sigkill(group.processes)
        self._ending = [t for t in self._ending if t.is_alive()]
        ending = threading.Thread(target=_end, args=(group.processes, group.channels), daemon=True)
        ending.start()
        self._ending.append(ending)

    def race_ended(self, start_method: str, size: int) -> None:
        """Keep ``limit`` groups of this size ready for the next race (started in a thread:
        the test goes on while the interpreters are launched)."""
        if start_method not in SPARE_METHODS or self.limit <= 0 or not self._mine():
            return
        self._settle()
        self._stop_filling = stop = threading.Event()
        self._filling = threading.Thread(
            target=self._fill,
            args=(start_method, size, stop),
            name="racecheck-spares",
            daemon=True,
        )
        self._filling.start()

    def _settle(self) -> None:
        """Wait until the groups being launched are launched (not until they are ready)."""
        filling, self._filling = self._filling, None
        if filling is not None:
            filling.join()

    def _fill(self, start_method: str, size: int, stop: threading.Event) -> None:
        if stop.wait(FILL_DELAY_S):
            return  # the next race came first
        key = (start_method, size)
        while True:
            with self._lock:
                waiting = self.groups.setdefault(key, [])
                self.groups.move_to_end(key)
                if len(waiting) >= self.limit:
                    self._trim()
                    return
            try:
                # Launched outside the lock: a race that comes meanwhile must not wait.
                group = start_group(start_method, size, stop)
            except Exception:
                return  # the next race starts its own racers, and says why if it cannot
            if group is None:
                return
            with self._lock:
                self.stats.started += 1
                if not stop.is_set():
                    self.groups.setdefault(key, []).append(group)
                    continue
                self.stats.discarded += 1  # a race came while its last spare was launched
            _kill(group.processes, group.channels)
            return

    def _trim(self) -> None:
        """End the least recently asked groups beyond MAX_SPARE_PROCESSES (not the newest)."""
        total = sum(g.size for gs in self.groups.values() for g in gs)
        for key in list(self.groups)[:-1]:
            if total <= MAX_SPARE_PROCESSES:
                break
            for group in self.groups.pop(key):
                total -= group.size
                self.stats.discarded += 1
                _end(group.processes, group.channels)

    def wait_ready(self, start_method: str, size: int, timeout: float) -> bool:
        """Wait until a group of this size waits for its race (for tests and benchmarks that
        want spares used); False if none did within ``timeout`` seconds."""
        self._settle()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                groups = self.groups.get((start_method, size), [])
                if groups and groups[0].usable():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def pids(self, start_method: str | None = None, size: int | None = None) -> list[int]:
        """The pids of the spares waiting (of one size and start method, if given)."""
        self._settle()
        return [
            pid
            for (method, n), groups in self.groups.items()
            if start_method in (None, method) and size in (None, n)
            for group in groups
            for pid in group.pids
        ]

    def end_all(self) -> None:
        """End every spare (session end)."""
        if not self._mine():
            return
        self._stop_filling.set()
        self._settle()
        for ending in self._ending:
            ending.join()
        self._ending.clear()
        with self._lock:
            groups = [g for gs in self.groups.values() for g in gs]
            self.groups.clear()
            _end([p for g in groups for p in g.processes], [c for g in groups for c in g.channels])


pool = SparePool()
"""The pool of this test process; the plugin sets its limit from ``--racecheck-spares``."""


def configure(limit: int) -> int:
    """Set how many groups to keep per size (0: none); returns the previous limit."""
    previous, pool.limit = pool.limit, limit
    if limit <= 0:
        pool.end_all()
    return previous


def end_all() -> None:
    pool.end_all()


atexit.register(end_all)
