"""Progress lines for a long race, written past output capturing while its test runs."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import pytest

from pytest_racecheck.results.result import RaceResult

PROGRESS_AFTER_S = 3.0
"""A race that runs longer than this prints progress lines..."""
PROGRESS_EVERY_S = 5.0
"""...at most this often."""


class Progress:
    """Progress lines for a long race: one after PROGRESS_AFTER_S, then one every
    PROGRESS_EVERY_S, with the rounds done and the failing rounds so far; none under -q."""

    def __init__(self, config: pytest.Config, nodeid: str, budget_s: float | None) -> None:
        self._config = config
        self._nodeid = nodeid
        self._budget_s = budget_s
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_AFTER_S

    def __call__(self, result: RaceResult) -> None:
        now = time.monotonic()
        if now < self._next or self._config.get_verbosity() < 0:
            return
        self._next = now + PROGRESS_EVERY_S
        done, failing = result.rounds_run, result.failing_rounds_so_far()
        of = "" if self._budget_s else f"/{result.rounds_requested}"
        line = (
            f"racecheck: {self._nodeid}: {result.fn_name}: round {done}{of}, "
            f"{failing} failing so far, {now - self._started:.0f}s"
        )
        write_live(self._config, line)


def write_live(config: pytest.Config, line: str) -> None:
    """Write a line to the terminal while a test runs, as pytest's live logging does: past
    output capturing, through the terminal reporter; an xdist worker has no terminal of its
    own, so it writes to its real stderr, which the controller's terminal shows."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
        worker = getattr(config, "workerinput", None)
        if worker is None and terminal is not None:
            terminal.write_line(line)
        elif sys.__stderr__ is not None:
            prefix = f"[{worker['workerid']}] " if worker is not None else ""
            sys.__stderr__.write(prefix + line + "\n")
            sys.__stderr__.flush()
