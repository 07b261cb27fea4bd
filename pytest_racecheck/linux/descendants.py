"""Every process a racer starts, at any depth, ends with its race.

Code under test may start processes: a ``subprocess.Popen`` it never waits for, an
``os.fork()``, a daemon that double-forks and calls ``setsid()``. None of them may outlive the
race, or they hold files, ports, locks and multiprocess's resource tracker (whose pipe a forked
child inherits) past the test session.

How a racer keeps them (see docs/architecture.md, "What a racer starts"):

- :func:`keep_descendants`, as the racer starts: it becomes the leader of a **process group**
  of its own, which every child joins unless it moves itself out, and a **child subreaper**
  (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): a descendant whose parent ends is handed to the
  racer instead of to init, so even a double-forked daemon in a session of its own stays
  below the racer, where the racer can find it.
- :func:`end_descendants`, when a race ends (and when the racer loses its controller, after a
  SIGKILL of pytest): SIGKILL to every process below the racer and every member of its group,
  repeated until none is left, and the racer's children reaped.
- The controller, after a racer it had to kill, sends SIGKILL to the racer's process group
  (:func:`kill_group`): what a racer that could not clean up left in its group.

Standard library only (``ctypes`` for ``prctl``); every step degrades to nothing where the
system lacks it (no ``/proc``: the group alone; not Linux: no subreaper).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

from pytest_racecheck.linux import procfs

PR_SET_CHILD_SUBREAPER = 36
"""From ``<linux/prctl.h>``."""

END_WAIT_S = 10.0
"""How long :func:`end_descendants` keeps killing and looking (a process may fork while it is
killed, and a killed process on a loaded machine takes a while to be gone); a bound that a sane
machine never reaches."""


def keep_descendants() -> bool:
    """Make this process the keeper of what it starts: own process group, child subreaper.

    Returns whether the subreaper could be set (Linux only). The process group moves the racer
    out of the terminal's foreground group too: Ctrl-C reaches the controller alone, which
    decides how the race ends (racers ignore SIGINT anyway).
    """
    with contextlib.suppress(OSError):
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(pid: int, table: dict[int, tuple[int, int, str]] | None = None) -> list[int]:
    """Live processes below ``pid`` (children, theirs, and orphans handed to it as subreaper),
    and, for this process, the other members of its process group; parents before their
    children. ``table`` is :func:`procfs.process_table`, read once for several calls."""
    if table is None:
        table = procfs.process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _group, _state) in table.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        if child not in found:
            found.append(child)
            todo.extend(children.get(child, []))
    group = os.getpgid(pid) if pid == os.getpid() else None
    if group == pid:
        found += [p for p, (_, g, _) in table.items() if g == group and p != pid and p not in found]
    return [p for p in found if table[p][2] not in ("Z", "X")]


def end_descendants() -> int:
    """SIGKILL everything below this process and in its group, until nothing is left; reap
    this process's children. Returns how many processes were killed."""
    me = os.getpid()
    killed: set[int] = set()
    deadline = time.monotonic() + END_WAIT_S
    while True:
        pids = descendants(me)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        killed.update(pids)
        reap_children()
        if not pids or time.monotonic() > deadline:
            return len(killed)
        time.sleep(0.005)


def reap_children() -> None:
    """Collect this process's ended children (its own, and orphans handed to it)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid`` (a racer's, after the racer was killed).

    A group's number stays taken while any member lives, so it names the racer's group; once
    empty, the kernel answers ESRCH."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
