"""Reading Linux's ``/proc``: the one place in the package that knows its file formats.

The harness asks the kernel about processes it does not control: is a racer asleep in a system
call (a lock wait), has it used CPU since the last look, is a server process still the one we
started (a pid can be reused), which processes belong to a postmaster's session. Linux answers
all of that in ``/proc``; other systems do not have it, so every function here returns ``None``
(or an empty list) when it cannot read, and callers degrade. Callers that lose a feature say so
once with :func:`warn_unavailable` instead of silently doing less.

Standard library only: the PostgreSQL server's watchdog process imports this module.
"""

from __future__ import annotations

import os
import warnings

PROC = "/proc"

_warned: set[str] = set()


def available() -> bool:
    """Whether this system has a Linux-style ``/proc`` (Linux, and WSL2; not macOS or BSDs)."""
    return os.path.exists(f"{PROC}/self/stat")


def warn_unavailable(what: str, instead: str = "it is left out") -> None:
    """Warn once per process that ``what`` needs ``/proc`` and this system has none.

    ``what`` names the feature ("telling a racer that waits for a SQLite lock"), ``instead``
    what happens without it. A feature lost on macOS must be said, not silently skipped.
    """
    if what in _warned:
        return
    _warned.add(what)
    warnings.warn(
        f"pytest-racecheck: {what} needs Linux's /proc, which this system does not have; {instead}",
        RuntimeWarning,
        stacklevel=3,
    )


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _stat_fields(path: str) -> list[str] | None:
    """The fields after the command name, which may itself hold spaces and parentheses."""
    data = _read(path)
    if data is None or ")" not in data:
        return None
    return data[data.rindex(")") + 2 :].split()


def stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` from the state on: state, ppid, pgrp, session, ...

    Index ``i`` here is field ``i + 3`` of proc(5); None when the process is gone or unreadable.
    """
    return _stat_fields(f"{PROC}/{pid}/stat")


def state(pid: int) -> str | None:
    """The process's state letter (``R``, ``S``, ``D``, ``Z`` ...), or None."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


def thread_state(pid: int, tid: int | None = None) -> str | None:
    """The state letter of one thread (``/proc/PID/task/TID/stat``); the main thread by default."""
    fields = _stat_fields(f"{PROC}/{pid}/task/{pid if tid is None else tid}/stat")
    return fields[0] if fields else None


def session_id(pid: int) -> int | None:
    """The process's session (field 6): a postmaster's backends share the postmaster's."""
    fields = stat_fields(pid)
    try:
        return int(fields[3]) if fields else None
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22), as the text it is.

    A pid is reused once its process is gone; the pair (pid, start time) names one process.
    Kept as text: it is only ever compared, and it is what state files record.
    """
    fields = stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def cmdline(pid: int) -> list[str]:
    """The process's arguments (empty when gone, unreadable, a kernel thread or no ``/proc``)."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def pids() -> list[int]:
    """Every process this one can see (empty without ``/proc``)."""
    try:
        entries = os.listdir(PROC)
    except OSError:
        return []
    return [int(entry) for entry in entries if entry.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes in session ``sid``."""
    found: list[int] = []
    for pid in pids():
        fields = stat_fields(pid)
        if fields is not None and fields[3] == str(sid) and fields[0] not in ("Z", "X"):
            found.append(pid)
    return found


def process_table() -> dict[int, tuple[int, int, str]]:
    """Every visible process as ``pid: (parent pid, process group, state letter)``: the
    family tree a racer walks to end what it started (empty without ``/proc``)."""
    table: dict[int, tuple[int, int, str]] = {}
    for pid in pids():
        fields = stat_fields(pid)
        try:
            table[pid] = (int(fields[1]), int(fields[2]), fields[0]) if fields else (0, 0, "X")
        except (IndexError, ValueError):
            continue
    return table


def cpu_ticks(pid: int) -> int | None:
    """Clock ticks the whole process (every thread) has run, user and system (fields 14 and
    15 of ``stat``); None when it is gone or unreadable."""
    fields = stat_fields(pid)
    try:
        return int(fields[11]) + int(fields[12]) if fields else None
    except (IndexError, ValueError):
        return None


def sysv_shm_creator(shmid: int) -> int | None:
    """The pid that created System V shared memory segment ``shmid`` (``/proc/sysvipc/shm``),
    or None when there is no such segment or no way to read it."""
    data = _read(f"{PROC}/sysvipc/shm")
    if data is None:
        return None
    lines = data.splitlines()
    if not lines:
        return None
    header = lines[0].split()
    try:
        at_id, at_cpid = header.index("shmid"), header.index("cpid")
    except ValueError:
        return None
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > max(at_id, at_cpid) and fields[at_id] == str(shmid):
            return int(fields[at_cpid]) if fields[at_cpid].isdigit() else None
    return None


def process_cpu_ns(pid: int) -> int | None:
    """Nanoseconds every thread of the process has run (the sum of its threads' ``schedstat``;
    clock ticks from ``stat`` where that is missing); None when it is gone or unreadable."""
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return None
    total, found = 0, False
    for tid in tids:
        ns = cpu_time_ns(pid, int(tid)) if tid.isdigit() else None
        if ns is not None:
            total, found = total + ns, True
    if found:
        return total
    ticks = cpu_ticks(pid)
    return None if ticks is None else ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def mapped_files(pid: int, prefix: str) -> set[str]:
    """The files under ``prefix`` that process ``pid`` maps (``/proc/PID/maps``); empty when
    it is gone or not readable."""
    data = _read(f"{PROC}/{pid}/maps")
    found: set[str] = set()
    for line in (data or "").splitlines():
        at = line.find(prefix)
        if at >= 0:
            found.add(line[at:].removesuffix(" (deleted)"))
    return found


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[4026531836]``): the pids it sees mean what they say
    only inside it, so containers sharing a ``/tmp`` must not judge each other's processes."""
    try:
        return os.readlink(f"{PROC}/self/ns/pid")
    except OSError:
        return None


def syscall_number(pid: int) -> int | None:
    """The system call the main thread is blocked in (first field of ``/proc/PID/syscall``).

    None when it is running (``running``), not in a call (``-1``), or the file is unreadable
    (another user's process, no ``/proc``, or a kernel without ``CONFIG_HAVE_ARCH_TRACEHOOK``).
    """
    data = _read(f"{PROC}/{pid}/syscall")
    if data is None:
        return None
    first = data.split(" ", 1)[0].strip()
    return int(first) if first.isdigit() else None


def cpu_time_ns(pid: int, tid: int | None = None) -> int | None:
    """Nanoseconds the thread has run on a CPU (first field of ``/proc/PID/task/TID/schedstat``).

    Finer than utime + stime in ``stat`` (clock ticks): two looks a few ms apart tell a thread
    that makes progress from one asleep. The main thread by default; None when unreadable.
    """
    data = _read(f"{PROC}/{pid}/task/{pid if tid is None else tid}/schedstat")
    if data is None:
        return None
    first = data.split(" ", 1)[0].strip()
    return int(first) if first.isdigit() else None


def thread_ids(pid: int) -> list[int]:
    """The ids of the process's threads (``/proc/PID/task``), the main thread's among them."""
    try:
        return [int(tid) for tid in os.listdir(f"{PROC}/{pid}/task") if tid.isdigit()]
    except OSError:
        return []


def all_threads(pid: int) -> tuple[set[str], int] | None:
    """The state letters of the process's other threads (not the main one), and the CPU time
    of all its threads together, in ns; None when unreadable. A process whose main thread waits
    for another of its threads (aiosqlite's, say) is making progress while that thread runs
    (``R``), waits for the disk (``D``) or spends CPU time."""
    states: set[str] = set()
    total = 0
    for tid in thread_ids(pid):
        cpu = cpu_time_ns(pid, tid)
        if cpu is None:
            continue  # it ended between the listing and the read
        total += cpu
        if tid != pid:
            state = thread_state(pid, tid)
            if state is not None:
                states.add(state)
    return (states, total) if total else None
