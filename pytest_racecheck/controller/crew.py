"""The racers as the controller holds them: their processes, pipes, and how they end.

:func:`shutdown` stops every racer of a race, whatever happened: through the gate, then
SIGTERM, then SIGKILL, then whatever each left in its process group.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import multiprocess as _multiprocess
import multiprocess.connection

# Imported here, not lazily by multiprocess on first use, so that every race in a process
# pickles against the same classes (pytester's in-process runs unload modules imported later).
import multiprocess.heap
import multiprocess.popen_spawn_posix
import multiprocess.sharedctypes
import multiprocess.synchronize

from pytest_racecheck.controller.blocking import BlockedProbe, RacerView
from pytest_racecheck.controller.stall import LOOK_EVERY_S
from pytest_racecheck.linux.descendants import kill_group
from pytest_racecheck.processes.barrier import Gate
from pytest_racecheck.wire.outcome import Outcome

if TYPE_CHECKING:
    from pytest_racecheck.clock.control import VirtualClock
    from pytest_racecheck.controller.spec import RaceSpec
    from pytest_racecheck.controller.stall import ProgressWatch
    from pytest_racecheck.policies.coordinator import Coordinator
    from pytest_racecheck.results.result import RaceResult

SHUTDOWN_GRACE_S = 0.5
"""How long racers get to leave through the gate before they are terminated, then killed."""


multiprocess: Any = _multiprocess  # an untyped package


@dataclass
class Racer:
    """The controller's view of one racer process."""

    index: int
    process: Any
    channel: Any
    app_name: str
    at_point: str | None = None
    finished: bool = False
    backend_pids: set[int] = field(default_factory=set)
    connecting: bool = False
    host: str | None = None
    """The simulated host it runs on (``replicas=``), None on this one."""
    gateway: str = ""
    """The gateway it runs on, "" for this machine (its pid is then another machine's)."""

    def describe(self) -> str:
        on = f", host {self.host}" if self.host is not None else ""
        where = f" on {self.gateway}" if self.gateway else ""
        return f"racer {self.index} (pid {self.process.pid}{where}{on})"

    def view(self) -> RacerView:
        return RacerView(
            self.index,
            self.process.pid,
            self.app_name,
            frozenset(self.backend_pids),
            self.connecting,
            self.gateway,
        )


@dataclass
class RoundState:
    """What the controller knows about the round in flight."""

    number: int
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    waited: set[int] = field(default_factory=set)
    lock_waits: list[tuple[int, int]] = field(default_factory=list)
    """(racer, when) a probe first found it blocked since its last arrival or return."""
    blocked_now: set[int] = field(default_factory=set)

    @property
    def doing(self) -> str:
        return f"round {self.number}"


class ControllerState:
    """What the controller knows during a race: the parts of :class:`~.loop.Controller` that
    :class:`~.messages.RacerMessages` and :class:`~.diagnosis.Diagnosis` read and change."""

    spec: RaceSpec
    probe: BlockedProbe | None
    coordinator: Coordinator
    result: RaceResult
    racers: list[Racer]
    round: RoundState | None
    deadline: float
    progress: ProgressWatch
    clock: VirtualClock | None
    _expected: str
    """What the controller waits for outside a round: "ready", "warm", or ""."""
    _awaiting: set[int]


class Holds:
    """The overlap holds of the race's databases, as the explorer sees them: racers, not pids."""

    def __init__(self, holds: Sequence[Any], racers: list[Racer]) -> None:
        self._holds = list(holds)
        self._racers = racers  # filled as racers start

    def hold(self) -> bool:
        return bool(self._holds) and any([h.hold() for h in self._holds])

    def release(self) -> set[int]:
        pids: set[int] = set()
        for h in self._holds:
            try:
                pids |= h.release()
            except Exception:
                h.close()  # nothing stays held; the step counts as timing-dependent
        return {r.index for r in self._racers if r.backend_pids & pids}


def wake_after(poll: float | None) -> float:
    """How long to wait for a message: the probe's poll, and at least every LOOK_EVERY_S to
    look for progress."""
    return LOOK_EVERY_S if poll is None else min(poll, LOOK_EVERY_S)


def wait_for(racers: list[Racer], deadline: float, timeout: float | None = None) -> list[Any]:
    remaining = deadline - time.monotonic()
    if timeout is not None:
        remaining = min(remaining, timeout)
    objects = [r.channel for r in racers] + [r.process.sentinel for r in racers]
    return multiprocess.connection.wait(objects, timeout=max(remaining, 0))


def shutdown(racers: list[Racer], gate: Gate) -> None:
    """Stop every racer: politely through the gate, then SIGTERM, then SIGKILL."""
    gate.stop()
    for racer in racers:
        racer.channel.close()
    end = time.monotonic() + SHUTDOWN_GRACE_S
    for racer in racers:
        racer.process.join(max(end - time.monotonic(), 0))
    for signal_name in ("terminate", "kill"):
        alive = [r for r in racers if r.process.is_alive()]
        for racer in alive:
            getattr(racer.process, signal_name)()
        for racer in alive:
            racer.process.join(SHUTDOWN_GRACE_S)
    for racer in racers:
        # What a racer that could not clean up (it was killed) left in its process group.
        # A host's racer that was never forked has no pid; a gateway's remote host ends its
        # racer's group itself (the pid is that machine's).
        if racer.process.pid is not None and not racer.gateway:
            kill_group(racer.process.pid)
        if racer.process.exitcode is not None:
            racer.process.close()
