"""Telling whether a racer is blocked, waiting for a lock another racer holds.

PostgreSQL knows which sessions wait on a lock (``pg_blocking_pids``): ask the server. SQLite
has no server: a racer waiting out the busy timeout sleeps inside the database call, between
attempts to take the lock, so a racer whose main thread sleeps in ``nanosleep`` *may* be waiting.
It is waiting only if the lock is held at that moment: a sleeper whose lock was just released
will take it when it wakes up, and a meeting must wait for it.
"""

from __future__ import annotations

import platform
import sqlite3
from collections.abc import Callable, Mapping, Sequence

SLEEP_SYSCALLS = {
    "x86_64": {35, 230},  # nanosleep, clock_nanosleep
    "aarch64": {101, 115},
}


class SleepingProbe:
    """Racers whose main thread sleeps in the kernel (Linux ``/proc``).

    SQLite's busy handler sleeps between attempts to take a lock; a racer held at a sync point
    waits in a pipe read instead, and one running Python code does not sleep at all. On its own
    this over-counts (a sleeper may be about to get a lock that was just released, or be in
    ``time.sleep``): it is the fallback for a race on a SQLite file the plugin did not make.
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


class SqliteLockProbe:
    """Sleeping racers, while some connection holds the SQLite database's write lock.

    The lock is tested by taking it with a zero busy timeout and giving it back at once; that
    happens only while some racer sleeps, at most once per probe.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._sleeping = SleepingProbe()
        self._conn: sqlite3.Connection | None = None

    def write_lock_held(self) -> bool:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True  # SQLITE_BUSY: another connection has it
        self._conn.execute("ROLLBACK")
        return False

    def blocked(self, pids: Mapping[int, int], apps: Mapping[str, int]) -> set[int]:
        sleeping = self._sleeping.blocked(pids, apps)
        if not sleeping or not self.write_lock_held():
            return set()
        # A sleeper may have woken and taken the lock itself in between: it is the holder, not
        # a waiter. Count only the racers still asleep after the lock was seen held.
        return sleeping & self._sleeping.blocked(pids, apps)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
