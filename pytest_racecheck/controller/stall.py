"""Telling a hung race from a slow machine: the no-progress bound.

A race's ``timeout=`` bounds its whole time; on a loaded machine a healthy race can need much
of it just to start its racers. What a slow machine still does, and a hang does not, is make
progress: racers send messages (ready, at a point, a result), run statements, use CPU.
:class:`ProgressWatch` remembers when the race last moved; the controller fails the race as
hung when start-up or a round goes ``stall_timeout`` seconds without moving, long before the
outer bound, and says which bound it hit.

CPU counts when the processes the race waits for (the racers still running, what they started,
and their PostgreSQL backends) used at least :data:`MIN_CPU_NS` between two looks: a racer
that sleeps in SQLite's busy handler or a watchdog thread wakes briefly and uses far less; a
racer starved by a busy machine still gets tens of ms per second. Without ``/proc`` only
messages count (a race that hangs then ends at its ``timeout=``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from pytest_racecheck.linux import procfs
from pytest_racecheck.linux.descendants import descendants

LOOK_EVERY_S = 0.5
"""How often the controller looks at CPU time while no message arrives."""

MIN_CPU_NS = 2_000_000
"""CPU between two looks that counts as progress (2 ms in about half a second)."""


class ProgressWatch:
    """When the race last moved: a message, or CPU used by the processes it waits for."""

    def __init__(self, stall_timeout: float) -> None:
        self.stall_timeout = stall_timeout
        self.last_move = time.monotonic()
        self._cpu: dict[int, int] = {}
        self._looked = 0.0

    def moved(self) -> None:
        """Something happened (a message, the controller's own reset or check)."""
        self.last_move = time.monotonic()

    def look(self, pids: Iterable[int]) -> None:
        """Count CPU the processes ``pids`` and their descendants used since the last look
        (at most one look per LOOK_EVERY_S: a meeting's probe may poll every few ms)."""
        now = time.monotonic()
        if now - self._looked < LOOK_EVERY_S:
            return
        self._looked = now
        table = procfs.process_table()
        watched = set()
        for pid in pids:
            watched.add(pid)
            watched.update(descendants(pid, table))
        cpu = {pid: ns for pid in watched if (ns := procfs.process_cpu_ns(pid)) is not None}
        used = sum(max(ns - self._cpu.get(pid, ns), 0) for pid, ns in cpu.items())
        self._cpu = cpu
        if used >= MIN_CPU_NS:
            self.moved()

    def moved_at(self, when: float) -> None:
        """Something happened at ``when`` (a gateway's remote host saw its racers use CPU)."""
        self.last_move = max(self.last_move, when)

    def idle_s(self) -> float:
        """Seconds since the race last moved."""
        return time.monotonic() - self.last_move

    def stalled_for(self) -> float | None:
        """Seconds without progress, once that reaches ``stall_timeout``; else None."""
        idle = time.monotonic() - self.last_move
        return idle if idle >= self.stall_timeout else None
