"""The virtual clock inside a racer: what ``clock="virtual"`` changes in the racer's process.

freezegun does the patching (``time.time``, ``time_ns``, ``monotonic``, ``perf_counter``,
``datetime.datetime.now`` / ``utcnow`` / ``today``, ``datetime.date.today``, and the asyncio
loop's time, which reads ``time.monotonic``), in every module, also those that imported the
functions by name. It was chosen over time-machine because it also moves ``monotonic`` and
``perf_counter``, which timeouts and leases are measured with; both work in a spawned process
when started there. This module gives freezegun its "now": the controller's shared clock file
(see :mod:`pytest_racecheck.clock.control`), read on every call, so a racer that was blocked while
the clock jumped sees the new time as soon as it runs.

``time.sleep`` and ``asyncio.sleep`` are this module's own: in the racer's main thread, during
a round, a sleep tells the controller how long it sleeps and waits to be woken. Elsewhere
(another thread of the racer, a set-up hook) they sleep for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import freezegun
from freezegun import api as freezegun_api
from freezegun import config as freezegun_config

from pytest_racecheck.clock.control import SLEEP_POINT, SLOT
from pytest_racecheck.wire.messages import Sleep, Wake

_real_sleep = time.sleep
_real_async_sleep = asyncio.sleep
_EPOCH = datetime.datetime(1970, 1, 1)  # the real class: freezegun's "now" is naive UTC

IGNORED = (
    "pytest_racecheck.processes.barrier",
    "pytest_racecheck.processes.spares",
    "multiprocess.connection",
    "multiprocess.synchronize",
    "multiprocess.queues",
)
"""Modules that keep the real time: the start gate spins on ``monotonic_ns`` for a budget, and
pipes and locks time their own waits. freezegun gives the real time to any call with one of
them among its last few calling frames, so none of them may be a caller of the code under test
(``multiprocess.process``, which calls the racer, is not here)."""


class _Channel(Protocol):
    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...


class _SharedNow:
    """freezegun's source of the frozen time, read from the shared clock on every call."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, SLOT.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def ns(self) -> int:
        return SLOT.unpack_from(self._map, 0)[0]

    def __call__(self) -> datetime.datetime:
        return _EPOCH + datetime.timedelta(microseconds=self.ns() // 1000)


class RacerClock:
    """One racer's view of the virtual clock."""

    def __init__(self, path: str) -> None:
        self.now = _SharedNow(path)
        self.channel: _Channel | None = None
        self.holds: Callable[[str], bool] = lambda name: False
        self.racing = False
        self._main = threading.main_thread()

    def virtual_here(self) -> bool:
        """Sleeps are virtual in the thread that runs the function, while a round runs."""
        return self.racing and self.channel is not None and threading.current_thread() is self._main

    def sleep(self, seconds: float) -> None:
        if not self.virtual_here():
            _real_sleep(seconds)
            return
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        if seconds == 0:
            _real_sleep(0)
            return
        assert self.channel is not None
        self.channel.send(Sleep(float(seconds), self.holds(SLEEP_POINT)))
        reply = self.channel.recv()
        if reply != Wake():
            raise RuntimeError(f"racecheck: expected Wake after a virtual sleep, got {reply!r}")

    async def async_sleep(self, delay: float, result: Any = None) -> Any:
        """asyncio.sleep: virtual in a round (the racer's loop waits with it: a racer's own
        tasks do not run meanwhile), a real wait elsewhere (the loop's time is frozen there)."""
        if delay > 0:
            self.sleep(delay)
        return await _real_async_sleep(0, result)


_clock: RacerClock | None = None


def install(path: str) -> RacerClock:
    """Freeze this process's time on the shared clock and make its sleeps virtual."""
    global _clock
    _load_before_freezing()
    clock = RacerClock(path)
    offset = datetime.datetime.now().astimezone().utcoffset() or datetime.timedelta()
    freezer = freezegun.freeze_time(
        clock.now(), tz_offset=offset, tick=False, ignore=list(IGNORED), real_asyncio=False
    )
    freezer.start()
    # The one thing freezegun is not told at start: where "now" comes from. Its factory is the
    # last of its stack, called on every read of the time.
    freezegun_api.freeze_factories[-1] = clock.now  # type: ignore[index]

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)

    async def async_sleep(delay: float, result: Any = None) -> Any:
        return await clock.async_sleep(delay, result)

    sleep.__doc__ = "time.sleep on the race's virtual clock (pytest-racecheck)."
    _replace(_real_sleep, sleep)
    _replace(_real_async_sleep, async_sleep)
    _clock = clock
    return clock


PRELOADED = ("psycopg", "psycopg2", "asyncpg")
"""Drivers whose C extension takes the datetime types when it loads: loaded under freezegun's
classes, it warns that their size changed. Loaded first, they keep the real ones (freezegun's
values are subclasses of them, so they are still understood)."""


def _load_before_freezing() -> None:
    for name in PRELOADED:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _replace(real: Any, fake: Any) -> None:
    """Put ``fake`` wherever a loaded module holds ``real`` (``time.sleep``, ``from time import
    sleep``, ``asyncio.sleep``), except in the modules that keep the real time."""
    skip = (*IGNORED, *freezegun_config.settings.default_ignore_list)
    for name, module in list(sys.modules.items()):
        if module is None or name.startswith(skip) or name == __name__:
            continue
        try:
            found = [k for k, v in vars(module).items() if v is real]
        except TypeError:
            continue
        for key in found:
            setattr(module, key, fake)


def attach(channel: _Channel, holds: Callable[[str], bool]) -> None:
    """The racer's pipe, and whether the race holds a sleep at a point (explore, schedules)."""
    if _clock is not None:
        _clock.channel, _clock.holds = channel, holds


def racing(on: bool) -> None:
    """A round starts (True) or ends: sleeps are virtual only in between."""
    if _clock is not None:
        _clock.racing = on
