"""Telling whether a racer is blocked, waiting for a lock another racer holds.

Two sources, combined: the operating system (SQLite waits out its busy timeout by sleeping
inside the database call, so a racer whose main thread sleeps in ``nanosleep`` is waiting) and
the database server (PostgreSQL knows which backends wait on a lock, see ``pg_blocking_pids``).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence

SLEEP_SYSCALLS = {
    "x86_64": {35, 230},  # nanosleep, clock_nanosleep
    "aarch64": {101, 115},
}


class SleepingProbe:
    """Racers whose main thread sleeps in the kernel (Linux ``/proc``).

    SQLite's busy handler sleeps between attempts to take a lock; a racer held at a sync point
    waits in a pipe read instead, and one running Python code does not sleep at all. A racer
    that calls ``time.sleep`` in the code under test also counts as waiting.
    """

    def __init__(self) -> None:
        self.syscalls = SLEEP_SYSCALLS.get(platform.machine(), set())

    def blocked(self, pids: Mapping[int, int], apps: Mapping[str, int]) -> set[int]:
        found = set()
        for index, pid in pids.items():
            try:
                with open(f"/proc/{pid}/syscall") as f:
                    first = f.read().split(" ", 1)[0]
            except OSError:
                continue
            if first.isdigit() and int(first) in self.syscalls:
                found.add(index)
        return found

    @property
    def available(self) -> bool:
        return bool(self.syscalls)


class ServerProbe:
    """Racers whose database sessions wait on a lock, as the server reports it."""

    def __init__(self, blocked_application_names: Callable[[str], set[str]]) -> None:
        self._names = blocked_application_names

    def blocked(self, pids: Mapping[int, int], apps: Mapping[str, int]) -> set[int]:
        if not apps:
            return set()
        race_token = next(iter(apps)).rsplit("-", 1)[0]
        return {apps[name] for name in self._names(race_token) if name in apps}


class AnyProbe:
    """A racer is blocked when any probe says so."""

    def __init__(self, probes: Sequence[object]) -> None:
        self.probes = list(probes)

    def blocked(self, pids: Mapping[int, int], apps: Mapping[str, int]) -> set[int]:
        found: set[int] = set()
        for probe in self.probes:
            found |= probe.blocked(pids, apps)  # type: ignore[attr-defined]
        return found
