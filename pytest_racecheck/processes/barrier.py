"""The cross-process start gate that releases every racer of a round at once.

Why two phases: racers wait for the controller's reset and check, which can take milliseconds,
so they sleep on a semaphore there (spinning would steal the cores the controller needs). The
controller then *arms* the gate: every racer wakes, checks in, and spins (yielding the CPU) for a
short while; the last racer to check in opens the gate itself, so the release does not wait for
a round trip through the controller. A racer that spins past its budget parks on a semaphore of
its own, which the opener posts: with more racers than cores, the racers still on their way get
the CPU instead of being starved by spinners.

A gate's semaphores can only be handed to a process when it starts, so a gate made for racer
hosts (:mod:`pytest_racecheck.processes.hosts`) has room for more racers than one race has: each
race :meth:`~StartGate.reset` s it for its own number of racers, which use the first slots, or
the slots it names (a remote host of :mod:`pytest_racecheck.processes.remote_host` serves racers
``g, g + N, ...`` of a race on ``N`` gateways).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

SPIN_BUDGET_NS = 2_000_000
"""How long a checked-in racer spins before it parks (ns)."""

POLL_S = 0.2
"""How often a sleeping racer looks up from the gate to see whether its controller is alive."""


class Gate(Protocol):
    """The controller's side of a start gate: :class:`StartGate`, or the gates of racers on
    execnet gateways (:class:`~pytest_racecheck.processes.gateways.GatewayGate`)."""

    def reset(self, parties: int) -> None: ...

    def arm(self, generation: int) -> None: ...

    def stop(self) -> None: ...

    @property
    def released_generation(self) -> int: ...


class GateClosed(Exception):
    """The controller stopped the race while a racer was waiting at the gate."""


class StartGate:
    """A reusable start gate for ``parties`` racers, opened once per generation (round);
    ``capacity`` (at least ``parties``) is how many it can ever serve at once."""

    def __init__(self, ctx: Any, parties: int, capacity: int | None = None) -> None:
        capacity = max(capacity or parties, parties)
        self.capacity = capacity
        self._parties = ctx.RawValue("i", parties)
        self._top = ctx.RawValue("i", parties)
        """One past the highest slot in use: the opener posts every ``go`` below it."""
        self._slots: tuple[int, ...] = tuple(range(parties))
        """The slots in use (the controller's side only: racers read ``_top``)."""
        self._released = ctx.RawValue("q", -1)
        self._target = ctx.RawValue("q", -1)
        self._stopped = ctx.RawValue("b", 0)
        self._checked_in = ctx.Value("i", 0)
        self._wake = [ctx.Semaphore(0) for _ in range(capacity)]
        self._go = [ctx.Semaphore(0) for _ in range(capacity)]

    @property
    def parties(self) -> int:
        return self._parties.value

    # The controller's side.

    def reset(self, parties: int, slots: Sequence[int] | None = None) -> None:
        """Make a stopped gate ready for a new race of ``parties`` racers (none may wait), in
        ``slots`` (``parties`` of them; default the first ``parties``)."""
        if not 0 < parties <= self.capacity:
            raise ValueError(f"a gate for {self.capacity} racers cannot serve {parties}")
        chosen = tuple(range(parties)) if slots is None else tuple(slots)
        if len(set(chosen)) != parties or not all(0 <= s < self.capacity for s in chosen):
            raise ValueError(f"{parties} racers cannot use slots {chosen} of {self.capacity}")
        for sem in (*self._wake, *self._go):
            while sem.acquire(block=False):
                pass  # tokens the last race's racers did not take
        self._parties.value = parties
        self._slots = chosen
        self._top.value = max(chosen) + 1
        self._released.value = -1
        self._target.value = -1
        self._stopped.value = 0

    def arm(self, generation: int) -> None:
        """Wake every racer for ``generation``; the last one to check in releases them all."""
        with self._checked_in.get_lock():
            self._checked_in.value = 0
        self._target.value = generation
        for slot in self._slots:
            self._wake[slot].release()

    def stop(self) -> None:
        """Send every racer home, wherever it waits."""
        self._stopped.value = 1
        for slot in self._slots:
            self._wake[slot].release()
            self._go[slot].release()

    @property
    def released_generation(self) -> int:
        return self._released.value

    # The racer's side.

    def wait(self, racer: int, controller_alive: Callable[[], bool]) -> int:
        """Block until the gate opens; return the generation released. Raise GateClosed on stop."""
        wake, go = self._wake[racer], self._go[racer]
        while not wake.acquire(timeout=POLL_S):
            self._check_alive(controller_alive)
        if self._stopped.value:
            raise GateClosed
        generation = self._target.value
        while go.acquire(block=False):
            pass  # tokens left from earlier rounds, when this racer did not need to park
        with self._checked_in.get_lock():
            self._checked_in.value += 1
            last = self._checked_in.value == self.parties
        if last:
            self._released.value = generation
            for sem in self._go[: self._top.value]:
                sem.release()  # a slot no racer uses keeps a token until the next reset
            return generation
        deadline = time.monotonic_ns() + SPIN_BUDGET_NS
        while self._released.value != generation:
            if time.monotonic_ns() < deadline:
                os.sched_yield()
            elif not go.acquire(timeout=POLL_S):
                self._check_alive(controller_alive)
            if self._stopped.value:
                raise GateClosed
        return generation

    def _check_alive(self, controller_alive: Callable[[], bool]) -> None:
        if self._stopped.value or not controller_alive():
            raise GateClosed
