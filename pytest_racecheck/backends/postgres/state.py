"""A throwaway server's directory: its state file, its lock, and how it is torn down.

Everything that decides whether a server may be stopped lives here, because three kinds of
process make that decision: an owner leaving (:mod:`.server`), the watchdog (:mod:`.watchdog`)
and any later run's sweep (:func:`sweep_stale_servers`). They agree through one lock per server
directory and its ``state.json``: who owns the server (pid and start time, so a reused pid is not
mistaken for a live owner), the postmaster, the watchdog.

Standard library only: the watchdog imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_racecheck.linux import procfs

SERVER_DIR_PREFIX = "racecheck-pg-"
"""Throwaway servers live in ``/tmp/racecheck-pg-XXXXXXXX``."""
SHARED_LOCK_NAME = "racecheck-pg.lock"
"""In a run's shared directory: the lock that lets one xdist worker start the server."""
SHARED_STATE_NAME = "racecheck-pg.json"
"""In a run's shared directory: where the run's server is."""

KIND = "pytest-racecheck-postgres"
STATE_NAME = "state.json"
LOCK_NAME = ".racecheck-pg.lock"
WATCHDOG_NAME = "watchdog.json"
"""The watchdog writes its pid and start time here as soon as it runs."""
LOG_NAME = "server.log"
ORPHAN_DIR_AGE = 60.0
"""A server directory without a state file this old was abandoned while being created."""
SERVER_PROGRAMS = frozenset({"postgres", "postmaster", "initdb", "pg_ctl"})
WATCHDOG_MODULE = "pytest_racecheck.backends.postgres.watchdog"
"""Run with ``python -I -m``; named here so that launching it does not import it."""
WATCHDOG_INTERVAL = 0.5
"""Seconds between the watchdog's looks at the owners: the bound on an orphan's lifetime."""


def server_base() -> Path:
    """``/tmp``: short enough for a socket path and reachable by the server's user."""
    tmp = Path("/tmp")
    if tmp.is_dir() and os.access(tmp, os.W_OK | os.X_OK):
        return tmp
    return Path(tempfile.gettempdir())


# --- owners and processes ---------------------------------------------------------------------


def current_owner() -> dict[str, Any]:
    """This process as an owner: a token to leave with, and what tells it from a reused pid."""
    pid = os.getpid()
    return {"id": secrets.token_hex(8), "pid": pid, "start": procfs.start_time(pid)}


def alive(pid: int, start: str | None = None) -> bool:
    """Whether that process runs (a zombie has ended; a reused pid is another process).

    Without ``/proc`` only the pid can be checked: a reused pid counts as alive, which keeps a
    server up longer than needed, never stops one in use.
    """
    if procfs.available():
        fields = procfs.stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start is None or procfs.start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_owners(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [o for o in state.get("owners", []) if alive(o["pid"], o.get("start"))]


def foreign(state: Mapping[str, Any]) -> bool:
    """Started where its owners' pids mean something else (another container sharing /tmp)."""
    return state.get("pid_namespace") != procfs.pid_namespace()


def wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def program(pid: int) -> str:
    argv = procfs.cmdline(pid)
    return Path(argv[0]).name if argv else ""


def mentions(pid: int, text: str) -> bool:
    return any(text in arg for arg in procfs.cmdline(pid))


def server_processes(root: Path) -> list[int]:
    """Live server programs (initdb, pg_ctl, postgres) run on the directory ``root``.

    Found by their command lines, which name the data directory: a server whose postmaster.pid
    was never written, or an initdb interrupted half-way, is known nowhere else.
    """
    text = str(root)
    found: list[int] = []
    for pid in procfs.pids():
        argv = procfs.cmdline(pid)
        ours = argv and Path(argv[0]).name in SERVER_PROGRAMS and any(text in a for a in argv)
        if ours and alive(pid):
            found.append(pid)
    return found


def postmaster_pid(datadir: Path) -> int | None:
    try:
        first = (datadir / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def postmaster_shm(datadir: Path) -> int | None:
    """The postmaster's System V shared memory id (line 7 of postmaster.pid: key, id)."""
    try:
        line = (datadir / "postmaster.pid").read_text().splitlines()[6]
        return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None


POSIX_SHM_PREFIX = "/dev/shm/PostgreSQL."
"""Where a server with ``dynamic_shared_memory_type = posix`` keeps its segments."""


def posix_segments(pids: Sequence[int]) -> set[str]:
    """The POSIX shared memory segments these server processes map. The throwaway server keeps
    its dynamic shared memory in its data directory (``mmap``); a server told otherwise
    (``settings=``) has them in ``/dev/shm``, which a killed postmaster does not clean."""
    return {path for pid in pids for path in procfs.mapped_files(pid, POSIX_SHM_PREFIX)}


def remove_shm(shmid: int) -> None:
    """``ipcrm -m``: a SIGKILLed postmaster cannot free its segment itself."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmctl(shmid, 0, None)  # IPC_RMID


# --- files and locks --------------------------------------------------------------------------


@contextlib.contextmanager
def root_lock(root: Path, timeout: float) -> Iterator[bool]:
    """Hold the server directory's lock; yields False when it could not be taken in time or the
    directory is gone.

    Not filelock: that recreates a missing directory, and a removed server directory must stay
    removed. The lock file exists exactly as long as the directory.
    """
    import fcntl

    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + timeout
        held = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
        # The previous holder may have removed the directory while we waited.
        yield held and exists(root / LOCK_NAME)
    finally:
        os.close(fd)


def exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_state(root: Path) -> dict[str, Any] | None:
    state = read_json(root / STATE_NAME)
    return state if state is not None and state.get("kind") == KIND else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write whole or not at all: readers without the lock must never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def tail(path: Path, size: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def pointer(state: Mapping[str, Any]) -> dict[str, Any]:
    """What shared_dir holds: where this run's server is (its owners are in its own state)."""
    keys = ("kind", "root", "datadir", "socket_dir", "port")
    return {k: state[k] for k in keys}


# --- tearing down -----------------------------------------------------------------------------


def watchdogs(root: Path, state: Mapping[str, Any] | None) -> list[int]:
    """The live watchdog of ``root``: as the state recorded it, or as it recorded itself (it
    writes its own file before the state knows it, so a start that fails early finds it too)."""
    found: list[int] = []
    for record in ((state or {}).get("watchdog"), read_json(root / WATCHDOG_NAME)):
        pid = record.get("pid") if record else None
        if pid and pid not in found and alive(pid, (record or {}).get("start")):
            found.append(pid)
    return found


def destroy(root: Path, state: Mapping[str, Any] | None) -> None:
    """Stop everything running from ``root`` and delete it. Call with the root lock held.

    Immediate shutdown (SIGQUIT) first: the postmaster ends its backends and frees its shared
    memory. Then SIGKILL for whatever is left (initdb, pg_ctl, a stuck server); a killed
    postmaster's System V segment is removed by hand.
    """
    datadir = root / "data"
    shm = postmaster_shm(datadir)
    postmaster = postmaster_pid(datadir)
    recorded = state or {}
    if postmaster is None and recorded.get("pid"):
        postmaster = recorded["pid"] if alive(recorded["pid"], recorded.get("pid_start")) else None
    if postmaster is not None:
        if procfs.available():
            if not mentions(postmaster, str(root)):
                postmaster = None  # a stale postmaster.pid, and the number now names another
        elif postmaster != recorded.get("pid") or not alive(postmaster):
            postmaster = None  # without /proc, only the pid we started ourselves is trusted
    me = os.getpid()
    others = [p for p in server_processes(root) if p not in (me, postmaster)]
    segments = posix_segments([p for p in (postmaster, *others) if p is not None])
    others += [p for p in watchdogs(root, state) if p != me and p not in others]
    if postmaster is not None:
        send_signal(postmaster, signal.SIGQUIT)
    for pid in others:
        is_server = program(pid) in ("postgres", "postmaster")
        send_signal(pid, signal.SIGQUIT if is_server else signal.SIGTERM)
    everyone = [p for p in [postmaster, *others] if p is not None]
    killed = not wait_gone(everyone, 10)
    if killed:
        for pid in everyone:
            send_signal(pid, signal.SIGKILL)
        wait_gone(everyone, 5)
    if shm is not None:
        creators = {p for p in (postmaster, recorded.get("pid"), postmaster_pid(datadir)) if p}
        if procfs.sysv_shm_creator(shm) in creators:
            # A postmaster that was killed, by us or by anyone before, left its segment; it
            # is removed once its last backend detaches.
            remove_shm(shm)
        elif killed and postmaster is not None and not procfs.available():
            wait_gone(procfs.session_members(postmaster), 5)
            remove_shm(shm)
    for path in segments:  # what the processes, all gone now, mapped and did not remove
        with contextlib.suppress(OSError):
            os.unlink(path)
    shutil.rmtree(root, ignore_errors=True)
    if state is not None and state.get("shared_dir"):
        pointer_path = Path(state["shared_dir"]) / SHARED_STATE_NAME
        found = read_json(pointer_path)
        if found is not None and found.get("root") == str(root):
            with contextlib.suppress(OSError):
                pointer_path.unlink()


def sweep_stale_servers(base: Path | None = None) -> list[Path]:
    """Stop and remove throwaway servers whose owners are all dead; return their directories.

    These are what runs killed before they could close leave behind, when their watchdog
    could not clean up either. Servers being started or closed right now are left alone.
    Without ``/proc`` the sweep is weaker, and a warning says so: an owner is judged by its pid
    alone (a reused pid keeps a dead run's server), and only the postmaster the state recorded
    is stopped (an interrupted initdb or a server started elsewhere is not found).
    """
    if not procfs.available():
        procfs.warn_unavailable(
            "telling a killed run's leftover PostgreSQL server processes from others",
            "stale throwaway servers are judged by their owners' pids alone (a reused pid keeps "
            "one) and only their recorded postmaster is stopped",
        )
    removed: list[Path] = []
    for root in sorted((base or server_base()).glob(SERVER_DIR_PREFIX + "*")):
        if not exists(root / LOCK_NAME):
            continue  # not ours, or not ours to enter
        state = read_state(root)
        if state is not None and (foreign(state) or live_owners(state)):
            continue
        with root_lock(root, timeout=0) as held:
            if not held:
                continue
            state = read_state(root)
            if state is None:
                try:
                    age = time.time() - root.stat().st_mtime
                except OSError:
                    continue
                if age < ORPHAN_DIR_AGE:
                    continue  # being created right now
            elif foreign(state) or live_owners(state):
                continue
            destroy(root, state)
            removed.append(root)
    return removed
