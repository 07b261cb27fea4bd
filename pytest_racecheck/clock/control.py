"""The race's virtual clock, on the controller's side (``race(..., clock="virtual")``).

One clock serves every racer of a race. It starts at the real time when the race starts and
moves only when every racer waits: asleep in a virtual sleep, held at a point, or blocked (on a
lock, in the kernel). Then it jumps to the earliest wake-up and wakes that sleeper: a racer that
sleeps 31 minutes wakes at once, with 31 minutes gone for everyone. This is the "autojump" of
Trio's ``MockClock`` (``trio.testing.MockClock(autojump_threshold=0)``), across processes.

The time lives in a small shared file, mapped by the controller and by every racer, so a racer
that was blocked while the clock jumped reads the new time as soon as it runs again. What the
racers see is arranged by :mod:`pytest_racecheck.clock.in_racer`, on their side.

A schedule moves the clock with a step of its own (``"+31m"``); in explore mode a virtual sleep
is a point named :data:`SLEEP_POINT`, and waking it moves the clock to its wake-up.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import struct
import tempfile
import time

CLOCKS = ("real", "virtual")
"""The values of ``race(..., clock=)``: the machine's clock, or the race's own."""
SLEEP_POINT = "sleep"
"""The point a virtual sleep is when the race holds it (explore, a schedule that names it)."""
SLOT = struct.Struct("q")
"""The shared file holds one signed 64-bit count: nanoseconds since the epoch."""

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION = re.compile(r"^\+(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$")


def is_time_step(step: object) -> bool:
    """Whether a schedule step moves the clock (``"+31m"``, ``"+30m1s"``, ``"+1.5s"``)."""
    return isinstance(step, str) and step.strip().startswith("+")


def parse_duration(text: str) -> float:
    """``"+31m"`` into seconds; ValueError naming the step and the format otherwise."""
    compact = text.strip()
    if not _DURATION.match(compact):
        raise ValueError(
            f"race(): schedule step {text!r} is not a clock step: write '+' and a duration in "
            "h, m, s or ms, e.g. '+31m', '+30m1s', '+1.5s'"
        )
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """Seconds as a clock step, the inverse of :func:`parse_duration` (``1861`` -> ``+31m1s``)."""
    whole, fraction = divmod(round(seconds * 1000), 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if fraction:
        parts.append(f"{secs + fraction / 1000:g}s")
    elif secs or not (hours or minutes):
        parts.append(f"{secs}s")
    return "+" + "".join(parts)


def validate_clock(clock: object, where: str = "race()") -> None:
    """Refuse a bad ``clock=`` before any process starts; ``where`` names what set it."""
    if clock not in CLOCKS:
        raise ValueError(
            f"{where}: unknown clock {clock!r}: use clock='virtual' for the race's own clock "
            "(sleeps end at once, time jumps when every racer waits) or clock='real' (the default)"
        )


def _shared_dir() -> str | None:
    """Memory-backed where the machine has it: the clock is read on every time call."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class VirtualClock:
    """The shared time of one race, and the racers asleep on it.

    ``sleepers`` are the racers in a virtual sleep that the race does not hold at a point:
    they wake when the clock reaches their wake-up. A held sleeper (explore, a schedule) is
    woken by its coordinator instead, through :meth:`wake_held`.
    """

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="racecheck-clock-", dir=_shared_dir())
        try:
            os.ftruncate(fd, SLOT.size)
            self._map = mmap.mmap(fd, SLOT.size)
        finally:
            os.close(fd)
        self.started_ns = time.time_ns()
        self.now_ns = self.started_ns
        self.sleepers: dict[int, int] = {}
        self.held: dict[int, int] = {}
        self.round_started_ns = self.now_ns
        self.log: list[str] = []
        """This round's timeline, for the failure report: who slept, when the clock moved."""
        self._write()

    def _write(self) -> None:
        SLOT.pack_into(self._map, 0, self.now_ns)

    @property
    def elapsed_s(self) -> float:
        """Virtual seconds since the race started."""
        return (self.now_ns - self.started_ns) / 1e9

    def advance_to(self, ns: int) -> None:
        """Move the clock forward to ``ns`` (never back)."""
        if ns > self.now_ns:
            self.now_ns = ns
            self._write()

    def advance(self, seconds: float, why: str = "") -> None:
        self.advance_to(self.now_ns + round(seconds * 1e9))
        if why:
            self._note(why)

    def _note(self, event: str) -> None:
        at = format_duration((self.now_ns - self.round_started_ns) / 1e9)
        self.log.append(f"{at:>9}  {event}")

    def begin_round(self) -> None:
        self.round_started_ns = self.now_ns
        self.log = []

    def sleep(self, racer: int, seconds: float, held: bool) -> None:
        """``racer`` went to sleep for ``seconds`` of virtual time."""
        wake = self.now_ns + max(round(seconds * 1e9), 0)
        (self.held if held else self.sleepers)[racer] = wake
        how = " (held at the point 'sleep')" if held else ""
        self._note(f"racer {racer} sleeps {format_duration(seconds)[1:]}{how}")

    def asleep(self, racer: int) -> bool:
        return racer in self.sleepers

    def wake_held(self, racer: int) -> None:
        """A coordinator lets a held sleeper go: the clock moves to its wake-up (if later)."""
        self.advance_to(self.held.pop(racer, self.now_ns))
        self._note(f"racer {racer} wakes")

    def due(self) -> list[int]:
        """Sleepers whose wake-up has come, taken off the clock (to be woken)."""
        woken = sorted(r for r, wake in self.sleepers.items() if wake <= self.now_ns)
        for racer in woken:
            del self.sleepers[racer]
            self._note(f"racer {racer} wakes")
        return woken

    def jump(self) -> list[int]:
        """Every racer waits: move to the earliest wake-up; return the sleepers to wake."""
        if self.sleepers:
            self.advance_to(min(self.sleepers.values()))
        return self.due()

    def describe(self, racer: int) -> str:
        """What a sleeping racer waits for, for timeout messages."""
        wake = self.sleepers.get(racer, self.held.get(racer))
        if wake is None:
            return ""
        return f"asleep in a virtual sleep until {format_duration((wake - self.started_ns) / 1e9)}"

    def end_round(self) -> tuple[str, ...]:
        """A round ended: nobody sleeps any more; the time stays. Returns its timeline."""
        self.sleepers.clear()
        self.held.clear()
        return tuple(self.log)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
