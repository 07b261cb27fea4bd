"""Telling whether a racer is blocked: waiting for something another racer holds.

A meeting, a schedule and the explorer all wait until every racer is *still*: held at a point,
finished, or blocked. A racer blocked on a lock can make no progress until another racer
moves, so counting it as still is what keeps correct locking from deadlocking a meeting.

Three kinds of evidence, each a probe:

- PostgreSQL knows which sessions wait on a lock (``pg_blocking_pids``): ask the server, by
  the backend pids racers report when they first use a connection, or by ``application_name``.
- SQLite has no server: a racer waiting out the busy timeout sleeps inside the database call,
  between attempts to take the lock. It is waiting only if the write lock is held at that
  moment; a sleeper whose lock was just released will take it when it wakes up.
- Anything else (a file lock, ``flock``, a semaphore, a socket): the racer is asleep in the
  kernel and its CPU time does not advance. Two looks a few milliseconds apart that find it
  asleep with the same CPU time count it as blocked. A racer held at a point is never probed.

Every probe answers for one instant; the coordinators forget an answer as soon as any racer
arrives somewhere or returns, and ask again.
"""

from __future__ import annotations

import fcntl
import os
import platform
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_racecheck.controller.overlap import SequenceHold
from pytest_racecheck.linux import procfs

SLEEP_SYSCALLS = {
    "x86_64": {35, 230},  # nanosleep, clock_nanosleep
    "aarch64": {101, 115},
}

WAIT_SYSCALLS = {
    # flock, fcntl (F_SETLKW), futex, poll, select, pselect6, ppoll, epoll_wait, epoll_pwait,
    # read, recvfrom, semop, semtimedop, msgrcv, mq_timedreceive: where one process waits for
    # another. Not fsync, write or open: a racer asleep there waits for the disk, not a racer.
    "x86_64": {73, 72, 202, 7, 23, 270, 271, 232, 281, 0, 45, 65, 220, 70, 243},
    "aarch64": {32, 25, 98, 72, 73, 22, 63, 207, 193, 192, 188, 183},
}

SOCKET_WAIT_SYSCALLS = {
    # poll, select, pselect6, ppoll, epoll_wait, epoll_pwait, read, recvfrom: where a database
    # client waits for its server's answer.
    "x86_64": {7, 23, 270, 271, 232, 281, 0, 45},
    "aarch64": {73, 72, 22, 63, 207},
}

IDLE_AFTER_S = 0.003
"""How long a racer must sleep without using CPU before it counts as blocked."""


@dataclass(frozen=True)
class RacerView:
    """What a probe may know about one racer that is running (not held at a point)."""

    index: int
    pid: int
    app_name: str = ""
    backend_pids: frozenset[int] = frozenset()
    connecting: bool = False
    """It is making a PostgreSQL connection and has no backend pid for it yet."""
    gateway: str = ""
    """The gateway it runs on ("" for this machine): its pid is that machine's, so no probe
    reads this machine's ``/proc`` for it."""


class BlockedProbe(Protocol):
    """Tells which running racers are blocked."""

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        """Indexes of the racers in ``racers`` that are blocked now."""
        ...


def notify_event(probe: object) -> None:
    """Tell a probe that a racer moved (arrived at a point or returned), if it cares."""
    event = getattr(probe, "event", None)
    if event is not None:
        event()


class SleepingProbe:
    """Racers whose main thread sleeps in ``nanosleep`` (Linux ``/proc``).

    SQLite's busy handler sleeps between attempts to take a lock; a racer held at a sync point
    waits in a pipe read instead, and one running Python code does not sleep at all.
    """

    def __init__(self) -> None:
        self.syscalls = SLEEP_SYSCALLS.get(platform.machine(), set())
        if not self.available:
            procfs.warn_unavailable("telling a racer that waits for a SQLite lock")

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        return {
            r.index
            for r in racers
            if not r.gateway and procfs.syscall_number(r.pid) in self.syscalls
        }

    @property
    def available(self) -> bool:
        return bool(self.syscalls) and procfs.available()


_FLOCK = "hhqqi0q"  # Linux's struct flock: type, whence, start, len, pid (padded)
_WAL_WRITE_LOCK = (120, "-shm")  # WAL mode: the writer's byte in the shared-memory file
_RESERVED_BYTE = (0x40000001, "")  # rollback journal: the writer's RESERVED byte in the file


def _byte_locked(path: str, offset: int) -> bool | None:
    """Whether another process holds a POSIX lock on byte ``offset`` of ``path`` (Linux).

    ``F_GETLK`` only asks: it takes nothing, so no racer can find the lock taken by the probe.
    None when the question cannot be asked here (no such file, another system's layout).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK
    except OSError:
        return None
    finally:
        os.close(fd)


class SqliteLockProbe:
    """Sleeping racers, while some connection holds the SQLite database's write lock.

    SQLite's writer holds a POSIX lock on one byte: in WAL mode the write-lock byte of the
    ``-shm`` file, otherwise the RESERVED byte of the database file. The probe asks the kernel
    whether that byte is locked (``F_GETLK``), which takes nothing. Where that cannot be asked,
    it takes the lock itself with a zero busy timeout and gives it back at once (a racer that
    looks at that instant finds it held: only there can the probe disturb a race).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._sleeping = SleepingProbe()
        self._conn: sqlite3.Connection | None = None

    def write_lock_held(self) -> bool:
        offset, suffix = _WAL_WRITE_LOCK if os.path.exists(self.path + "-shm") else _RESERVED_BYTE
        locked = _byte_locked(self.path + suffix, offset)
        if locked is not None:
            return locked
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True  # SQLITE_BUSY: another connection has it
        self._conn.execute("ROLLBACK")
        return False

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        sleeping = self._sleeping.blocked(racers)
        if not sleeping or not self.write_lock_held():
            return set()
        # A sleeper may have woken and taken the lock itself in between: it is the holder, not
        # a waiter. Count only the racers still asleep after the lock was seen held.
        return sleeping & self._sleeping.blocked(racers)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ServerProbe:
    """Racers whose PostgreSQL sessions wait on a lock, found by application name."""

    def __init__(self, blocked_application_names: Callable[[str], set[str]]) -> None:
        self._names = blocked_application_names

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        apps = {r.app_name: r.index for r in racers if r.app_name}
        if not apps:
            return set()
        race_token = next(iter(apps)).rsplit("-", 1)[0]
        return {apps[name] for name in self._names(race_token) if name in apps}


class BackendProbe:
    """Racers whose PostgreSQL backends wait on another session's lock, found by backend pid.

    Racers report the pid of every backend they talk to, so this works on any server the
    probe can reach, made by the plugin or not. ``connect`` opens an autocommit connection to
    any database of that server. The same look also tells which racers wait for a statement
    the server is still running (not on a lock): :attr:`running`, which no other probe may
    count as blocked.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self.running: set[int] = set()
        self.hold = SequenceHold(connect)
        """Holds a joint step's inserts in this database (see
        :mod:`pytest_racecheck.controller.overlap`)."""

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        owner = {pid: r.index for r in racers for pid in r.backend_pids}
        self.running = set()
        if not owner:
            return set()
        if self._conn is None:
            self._conn = self._connect()
        rows = self._conn.execute(
            "SELECT pid, state = 'active', cardinality(pg_blocking_pids(pid)) > 0"
            " FROM pg_stat_activity WHERE pid = ANY(%s::int[])",
            (list(owner),),
        ).fetchall()
        blocked = {owner[pid] for pid, _, waits in rows if waits}
        self.running = {owner[pid] for pid, active, waits in rows if active and not waits}
        return blocked

    def close(self) -> None:
        self.hold.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class _Idle:
    cpu_ns: int  # all the racer's threads
    since: float
    must_wake: bool = False
    main_cpu_ns: int | None = None


@dataclass
class IdleProbe:
    """Racers asleep in the kernel whose CPU time has not moved for :data:`IDLE_AFTER_S`.

    This is what catches waits outside the database: ``flock``, a file lock, a semaphore. A
    racer blocked in a system call that waits for another process (``flock``, a futex, a
    socket or pipe read, ``poll``: :data:`WAIT_SYSCALLS`) becomes runnable the moment that
    process lets go, so sleeping there means blocked. Sleeping anywhere else (``fsync``, say)
    means waiting for the disk: slow, not blocked. A racer in
    ``nanosleep`` is different: it may be a poller (filelock's ``FileLock``, SQLite's busy
    handler) that only finds out that a lock is free when it wakes up. So after any racer moved
    (:meth:`event`), a sleeper counts as blocked again only once it has woken, looked, and gone
    back to sleep; otherwise the others would run on while it could have gone.

    A racer that talks to PostgreSQL and sleeps on its socket is left to the database: while it
    connects (:attr:`RacerView.connecting`) it waits for the server, not for a racer; once its
    backends are known and ``postgres_judges`` (a :class:`BackendProbe` asks that server), the
    server says whether it waits on a lock. Counting it here instead made a loaded machine,
    whose server answers late, skip steps of a schedule. It still counts a racer that sleeps on
    purpose: the others then go on, which changes the interleaving but never the verdict of
    correct code.
    """

    idle_after_s: float = IDLE_AFTER_S
    postgres_judges: bool = False
    _seen: dict[int, _Idle] = field(default_factory=dict)
    _sleeps: set[int] = field(default_factory=lambda: SLEEP_SYSCALLS.get(platform.machine(), set()))
    _waits: set[int] = field(default_factory=lambda: WAIT_SYSCALLS.get(platform.machine(), set()))
    _sockets: set[int] = field(
        default_factory=lambda: SOCKET_WAIT_SYSCALLS.get(platform.machine(), set())
    )

    def __post_init__(self) -> None:
        if not procfs.available():
            procfs.warn_unavailable("telling a racer that waits outside the database")

    _moved: bool = False

    def event(self) -> None:
        """A racer arrived somewhere or returned: it may have let go of a lock."""
        self._moved = True
        for idle in self._seen.values():
            idle.must_wake = True

    timers: set[int] = field(default_factory=set)
    """Of the last answer, the racers counted only because they sleep on a timer
    (``nanosleep``): a poller waiting for a lock, or code that sleeps on purpose; a schedule
    waits for the latter when the next step is its own (see
    :class:`~pytest_racecheck.policies.schedule.Schedule`)."""

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        now = time.monotonic()
        found: set[int] = set()
        self.timers = set()
        racers = [r for r in racers if not r.gateway]  # another machine's pids
        current = {r.pid for r in racers}
        for pid in [p for p in self._seen if p not in current]:
            del self._seen[pid]  # held at a point, or done, since the last look: start again
        for racer in racers:
            state = procfs.thread_state(racer.pid)
            threads = procfs.all_threads(racer.pid)
            # D is disk I/O: slow, not waiting for a racer. Another thread of the racer that
            # runs or waits for the disk (aiosqlite's, running the statement its main thread
            # awaits) is progress too, and so is CPU time spent by any of them.
            if state != "S" or threads is None or threads[0] & {"R", "D"}:
                self._seen.pop(racer.pid, None)
                continue
            cpu, main_cpu = threads[1], procfs.cpu_time_ns(racer.pid)
            idle = self._seen.get(racer.pid)
            if idle is None or idle.main_cpu_ns != main_cpu:
                # New, or it woke: a fresh start. If a racer moved since the last look, the
                # wake may have come before that, so it must wake once more to count.
                self._seen[racer.pid] = _Idle(cpu, now, self._moved, main_cpu)
                continue
            if idle.cpu_ns != cpu:
                # Another thread ran (the racer's watchdog, aiosqlite's): not idle yet, but
                # the main thread has not looked at anything since.
                self._seen[racer.pid] = _Idle(cpu, now, idle.must_wake, main_cpu)
                continue
            if now - idle.since < self.idle_after_s:
                continue
            call = procfs.syscall_number(racer.pid)
            if call in self._sleeps:
                if idle.must_wake:
                    continue  # a poller that has not looked at its lock since it may be free
                self.timers.add(racer.index)
            elif call not in self._waits:
                continue  # woke just now, or waits for the disk (fsync), not for a racer
            elif call in self._sockets and (
                racer.connecting or (racer.backend_pids and self.postgres_judges)
            ):
                continue  # waits for its PostgreSQL server: the database judges it
            found.add(racer.index)
        self._moved = False
        return found


def lock_probe(db: Any) -> BlockedProbe | None:
    """The probe that asks ``db`` (a handle) which racers wait on its locks."""
    if db.backend == "sqlite":
        return SqliteLockProbe(db.path)
    if db.backend == "postgres":
        return BackendProbe(db.connect)
    return None


def race_probe(registered: Sequence[Any], handles: Sequence[Any]) -> tuple[AnyProbe, AnyProbe]:
    """The probe one race uses: ``registered`` (the test's databases), one more per database
    handle (``handles``) they do not cover yet, and the idle probe for waits outside any
    database. Returns it, and the part made here, which the caller closes after the race."""
    covered = {p.path for p in registered if isinstance(p, SqliteLockProbe)}
    server_known = any(isinstance(p, BackendProbe) for p in registered)
    own: list[Any] = []
    for db in handles:
        if (db.backend == "sqlite" and getattr(db, "path", None) in covered) or (
            db.backend == "postgres" and server_known
        ):
            continue
        probe = lock_probe(db)
        if probe is not None:
            own.append(probe)
            covered |= {getattr(probe, "path", None)} - {None}
            server_known |= isinstance(probe, BackendProbe)
    idle = IdleProbe(postgres_judges=server_known)
    return AnyProbe([*registered, *own, idle]), AnyProbe(own)


class AnyProbe:
    """A racer is blocked when any probe says so."""

    def __init__(self, probes: Sequence[BlockedProbe]) -> None:
        self.probes = list(probes)
        self.asleep: set[int] = set()
        """Of the last answer, the racers no probe saw waiting for anything but a timer."""

    def holds(self) -> list[SequenceHold]:
        """The overlap holds of the databases this probe asks (PostgreSQL ones)."""
        return [p.hold for p in self.probes if isinstance(p, BackendProbe)]

    def close(self) -> None:
        """Close the probes' own connections."""
        for probe in self.probes:
            close = getattr(probe, "close", None)
            if close is not None:
                close()

    def blocked(self, racers: Sequence[RacerView]) -> set[int]:
        found: set[int] = set()
        running: set[int] = set()
        timers: set[int] = set()
        evidence: set[int] = set()  # waiting on something a probe can name: a lock, a call
        for probe in self.probes:
            answer = probe.blocked(racers)
            found |= answer
            running |= getattr(probe, "running", set())
            timer = getattr(probe, "timers", None)
            if timer is None:
                evidence |= answer
            else:
                timers |= timer
                evidence |= answer - timer
        self.asleep = timers - evidence - running
        return found - running

    def event(self) -> None:
        for probe in self.probes:
            notify_event(probe)
