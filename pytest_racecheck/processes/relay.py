"""Forking a racer, into its simulated host when the race has them (``replicas=``).

A racer host (:mod:`.hosts`) forks each race's racer. Into a simulated host
(:mod:`.replicas`) it forks through a relay: entering a mount namespace takes a process of
one thread, and an unprivileged host's user namespace is one a process never leaves, so the
host itself stays where it is and a child does both.
"""

from __future__ import annotations

import os
import signal

from pytest_racecheck.linux import namespaces
from pytest_racecheck.wire.assignment import HostPlace


def fork_racer(place: HostPlace | None, channel_fd: int) -> tuple[int, int]:
    """Fork the racer: (the child to wait for, the racer's pid), (0, 0) in the racer.

    Into a simulated host, through a relay: a child that enters the host's namespaces (which
    takes a process of one thread, and for the user namespace of an unprivileged host, one
    that never goes back), forks the racer into its PID namespace, and ends as the racer
    ends. Its pid (in this namespace) is what the controller signals and probes."""
    if place is None:
        pid = os.fork()
        return pid, pid
    report_r, report_w = os.pipe()
    relay = os.fork()
    if relay == 0:
        os.close(report_r)
        _relay(place, report_w, channel_fd)
        return 0, 0
    os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        said = report.read().decode()
    if not said.isdigit():
        os.waitpid(relay, 0)
        raise OSError(f"could not enter simulated host {place.name}: {said or 'no answer'}")
    return relay, int(said)


def _relay(place: HostPlace, report: int, channel_fd: int) -> None:
    """In the relay: returns only in the racer it forks."""
    namespaces.die_with_parent(signal.SIGKILL)  # the host gone, the race is
    try:
        namespaces.enter_host(place.ns_dir)
        racer = os.fork()
    except OSError as exc:
        os.write(report, f"{type(exc).__name__}: {exc}".encode())
        os._exit(3)
    if racer == 0:
        os.close(report)
        return
    os.write(report, str(racer).encode())
    os.close(report)
    os.close(channel_fd)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(racer, signum))
    status = os.waitpid(racer, 0)[1]
    if os.WIFSIGNALED(status):  # die the same way, for the host's report
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))
