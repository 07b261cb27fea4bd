"""Simulated hosts for ``replicas=N``: each one machine's worth of what a process does not
share with another machine, on this one.

A host owns its hostname, its process IDs and its private paths (``/tmp``, ``/var/tmp``,
``/run``, ``/dev/shm`` and any path the race declares): each is an empty tmpfs at the race's
start, seen by that host's racers only. Everything else is shared, as replicas share what
they reach over the network: the databases, and, bound back into the private paths where it
lies inside them, what the racers need to run (the code, the test's temporary directory).

One :mod:`~pytest_racecheck.linux.anchor` process per host makes the namespaces and holds
them; racer hosts (:mod:`.hosts`) fork each racer into its host's namespaces. Closing a
:class:`SimulatedHosts` kills every host's init, which takes every process left on it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from pytest_racecheck.wire.assignment import HostPlace

PRIVATE_PATHS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
"""What every simulated host has its own of."""

START_TIMEOUT_S = 30.0
"""How long a host may take to be made (a loaded machine; it takes milliseconds)."""

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_ANCHOR = (
    "import sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; "
    "from pytest_racecheck.linux.anchor import main; main()"
)


class HostsUnavailable(Exception):
    """This machine cannot make simulated hosts (no namespaces here): the race cannot run
    as replicas, and must not run on one host instead."""


class SimulatedHosts:
    """The race's simulated hosts, made at once and ended together."""

    def __init__(self, count: int, private: list[str], keep: list[str], prefix: str) -> None:
        self.places: list[HostPlace] = []
        self._anchors: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(count):
                plan = {"hostname": f"{prefix}-{i}", "private": private, "keep": keep}
                self._anchors.append(_launch(plan))
            deadline = time.monotonic() + START_TIMEOUT_S
            for i, anchor in enumerate(self._anchors):
                init = _answer(anchor, deadline)
                self.places.append(HostPlace(f"{prefix}-{i}", f"/proc/{init}/ns"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End every host: its init, and so every process still on it."""
        anchors, self._anchors = self._anchors, []
        for anchor in anchors:
            if anchor.stdin is not None:
                anchor.stdin.close()
        for anchor in anchors:
            try:
                anchor.wait(10.0)
            except subprocess.TimeoutExpired:
                anchor.kill()
                anchor.wait()
            if anchor.stdout is not None:
                anchor.stdout.close()


def _launch(plan: dict[str, object]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _ANCHOR, _PACKAGE_ROOT, json.dumps(plan)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def _answer(anchor: subprocess.Popen[bytes], deadline: float) -> int:
    """The host's init pid, once its anchor says the host is made."""
    assert anchor.stdout is not None
    ready, _, _ = select.select([anchor.stdout], [], [], max(deadline - time.monotonic(), 0))
    line = anchor.stdout.readline() if ready else b""
    try:
        answer = json.loads(line) if line else {}
    except ValueError:
        answer = {}
    if "init" in answer:
        return int(answer["init"])
    if "unavailable" in answer:
        raise HostsUnavailable(
            f"this machine cannot make Linux namespaces for simulated hosts "
            f"({answer['unavailable']}); replicas= needs Linux and either root or user "
            f"namespaces"
        )
    why = answer.get("error") or (
        "no answer in time" if not ready else f"it ended with code {anchor.poll()}"
    )
    raise OSError(f"a simulated host could not be made: {why}")


def namespaces_possible() -> str | None:
    """None if simulated hosts can be made here, else why not (for a skip's reason)."""
    if not sys.platform.startswith("linux"):
        return f"simulated hosts need Linux namespaces; this is {sys.platform}"
    if not os.path.exists("/proc/self/ns/mnt"):
        return "simulated hosts need Linux namespaces; /proc/self/ns is missing"
    return None
