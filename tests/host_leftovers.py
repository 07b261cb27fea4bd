"""What a simulated host may have left: processes of its PID namespace.

A namespace is known by its inode (``pid:[4026532176]``), and the kernel gives a freed inode
to the next namespace made, which may be a concurrent test's (pytest-xdist). So a process
counts as left only if it is in one of the namespaces and started before ``since`` (a
:func:`now_ticks` taken when the race had ended): a process of a later namespace that
reused the inode started after that.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_racecheck.linux import procfs


def now_ticks() -> int:
    """Now, in the unit of /proc/PID/stat's start time (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def left_in(namespaces: set[str], since: int) -> list[int]:
    """Processes in one of ``namespaces`` that started before ``since``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") in namespaces and (
                int(procfs.start_time(int(entry.name)) or since) < since
            ):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found
