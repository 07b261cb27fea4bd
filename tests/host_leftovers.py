"""What a simulated host may have left: its init, and with it any process of the host.

A namespace is known by its inode (``pid:[4026532176]``), and the kernel gives a freed inode
to the next namespace made, which may be a concurrent test's (pytest-xdist). So a host is
named by its PID namespace *and* its init's start time (:func:`host_identity`, read inside
the host). The kernel ends every process of a PID namespace before its init is reaped, so a
host has left nothing once no process of that namespace has that start time.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_racecheck.linux import procfs


def host_identity() -> str:
    """Inside a racer: its PID namespace and the start time of that namespace's process 1."""
    return f"{os.readlink('/proc/self/ns/pid')}@{procfs.start_time(1)}"


def namespace_of(identity: str) -> str:
    return identity.split("@")[0]


def left_in(hosts: set[str]) -> list[int]:
    """The inits of ``hosts`` (identities) still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            here = f"{os.readlink(entry / 'ns' / 'pid')}@{procfs.start_time(int(entry.name))}"
        except OSError:
            continue
        if here in hosts:
            found.append(int(entry.name))
    return found
