"""Run one program under two searches on a real database and compare what each reached.

The *reduced* search is the one explore uses (source-set DPOR, whose conflicts come from the
statements' footprints). The *full enumeration* (:class:`FullEnumeration`, below) runs every
interleaving of the racers' statements, one racer at a time, and nothing else. For each search
the oracle collects, over every round, the set of (every racer's outcome, the tables and
marker files the round left). A **mismatch** is a member of the full enumeration's set that the
reduced search never reached: an interleaving the reduction pruned as equivalent to one it ran,
which was not. A program counts only when both searches say they are exhausted (every order
they meant to run ran, nothing strayed, nothing was left to timing); otherwise it is
*skipped*, never a pass.

Why the full enumeration is a search of its own here, not the unreduced search explore keeps
(``make_search(..., reduce=False)``): that one also releases two racers together at every
decision, and such a step is left to timing wherever the database cannot hold it (on SQLite,
always), so its race is never exhausted and what its rounds reach varies from run to run (on
a SQLite program of 10 such orders it ran its whole budget of 400 rounds, 515 joint steps left
to timing, not exhausted; measured 2026-12-05). The
reduced search is meant to reach every outcome of every one-racer-at-a-time order (its joint
steps are extras), so that is the set to compare with.

Everything that reaches into the plugin's internals is in :func:`explore_with` (marked
ADAPTER): repoint it when the package's layout changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oracle.programs import Program, final_state, reset, run_racer
from pytest_racecheck.explore.search import OrderOnly

Reached = frozenset[tuple[tuple[Any, ...], tuple[Any, ...]]]

SEARCHES = ("reduced", "full", "blind")
"""``reduced``: explore's own search; ``full``: every one-racer-at-a-time order; ``blind``:
the reduced search told that no two statements conflict (how the oracle is shown to fail)."""


# -- the full enumeration ------------------------------------------------------------------


@dataclass
class FullEnumeration(OrderOnly):
    """Every interleaving of the racers' points, one racer at a time, depth first.

    Racers still held at their start are let go first, lowest number first, with no other
    choice: a program's racers do nothing at their start that another racer can see (a file
    action never comes before a racer's first statement). At every later decision each held
    racer is one branch. A decision that offers other racers than the same decision did in an
    earlier round (the program took another path) is counted as ``diverged``, and the search is
    then not exhausted.
    """

    name: str = "full enumeration"
    stack: list[list[Any]] = field(default_factory=list)
    """Per decision of the current path: [the racers it offered, the index of the one taken]."""
    depth: int = 0
    diverged: int = 0
    rounds: int = 0
    _finished: bool = False
    _at_start: set[int] = field(default_factory=set)

    def arrived(self, racer: int, statement: Any, start: bool = False) -> None:
        if start:
            self._at_start.add(racer)
        else:
            self._at_start.discard(racer)

    def begin(self) -> None:
        self.depth, self._at_start = 0, set()
        self.rounds += 1

    def choose(self, enabled: Sequence[int], previous: int | None) -> tuple[int, ...]:
        starting = [r for r in enabled if r in self._at_start]
        if starting:
            self._at_start.discard(starting[0])
            return (starting[0],)
        offered = list(enabled)
        d, self.depth = self.depth, self.depth + 1
        if d < len(self.stack):
            if self.stack[d][0] == offered:
                return (offered[self.stack[d][1]],)
            self.diverged += 1
            del self.stack[d:]
        self.stack.append([offered, 0])
        return (offered[0],)

    def end(self) -> None:
        if self.depth < len(self.stack):  # the round ended before the path did: it strayed
            self.diverged += 1
            del self.stack[self.depth :]
        while self.stack and self.stack[-1][1] == len(self.stack[-1][0]) - 1:
            self.stack.pop()
        if self.stack:
            self.stack[-1][1] += 1
        else:
            self._finished = True

    def done(self) -> bool:
        return self._finished

    def exhausted(self) -> bool:
        return self._finished and not self.diverged


# -- ADAPTER: the one place that knows the plugin's internal layout ------------------------


def explore_with(
    search: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    processes: int,
    explore: int,
    reset: Callable[[], Any],
    check: Callable[[], Any],
    probe_handles: Sequence[Any],
    timeout: float,
    seed: int = 1,
) -> Any:
    """ADAPTER (repoint when pytest_racecheck's modules move): run one explored race of ``fn``
    with the search named ``search`` (see :data:`SEARCHES`) and return its ``RaceResult``.

    What it reaches into, as of this writing:

    - ``pytest_racecheck.explore.choose.searching`` (the documented internal that makes the
      races inside it use another search) and ``pytest_racecheck.explore.dpor.DPOR`` (the
      reduced search; ``blind`` is a subclass whose every statement commutes with everything,
      ``INERT`` of ``pytest_racecheck.sql.footprint``);
    - ``pytest_racecheck.controller.spec.RaceSpec``, ``pytest_racecheck.controller.loop.run_race``
      and ``pytest_racecheck.controller.blocking.race_probe`` (how the ``race`` fixture runs a
      race and tells racers blocked on a lock).
    """
    from pytest_racecheck.controller.blocking import race_probe
    from pytest_racecheck.controller.loop import run_race
    from pytest_racecheck.controller.spec import RaceSpec
    from pytest_racecheck.explore.choose import searching
    from pytest_racecheck.explore.dpor import DPOR
    from pytest_racecheck.sql.footprint import INERT

    class BlindDPOR(DPOR):
        """The reduced search with footprints that say no two statements conflict."""

        def arrived(self, racer: int, statement: Any, start: bool = False) -> None:
            super().arrived(racer, statement, start=start)
            self.next_steps[racer] = INERT

    def make(processes: int, seed: int) -> Any:
        if search == "reduced":
            return DPOR()
        if search == "blind":
            return BlindDPOR()
        if search == "full":
            return FullEnumeration()
        raise ValueError(f"unknown search {search!r}: one of {SEARCHES}")

    spec = RaceSpec(
        fn=fn,
        args=args,
        processes=processes,
        explore=explore,
        seed=seed,
        timeout=timeout,
        reset=reset,
        check=check,
    )
    probe, own = race_probe([], list(probe_handles))
    try:
        with searching(make):
            return run_race(spec, probe=probe)
    finally:
        own.close()


# -- the comparison ------------------------------------------------------------------------


@dataclass
class Run:
    """One search's race of one program."""

    search: str
    reached: Reached
    rounds: int
    exhausted: bool
    seconds: float


@dataclass
class Verdict:
    program: Program
    runs: dict[str, Run]

    @property
    def skipped(self) -> bool:
        """A search that was not exhausted proves nothing either way."""
        return not all(run.exhausted for run in self.runs.values())

    @property
    def reduced(self) -> str:
        """The search compared with the full enumeration ("reduced", or "blind")."""
        return next(s for s in self.runs if not s.startswith("full"))

    @property
    def unstable(self) -> bool:
        """Two full enumerations of the program (``full`` and ``full#2``) reached different
        sets: what the program reaches depends on timing, so it cannot judge a search."""
        again = self.runs.get("full#2")
        return again is not None and again.reached != self.runs["full"].reached

    def missed(self) -> Reached:
        """What the full enumeration reached and the reduced search never did."""
        return self.runs["full"].reached - self.runs[self.reduced].reached

    @property
    def mismatch(self) -> bool:
        return not self.skipped and bool(self.missed())

    def explain(self) -> str:
        lines = [self.program.show()]
        for run in self.runs.values():
            lines.append(
                f"  {run.search}: {run.rounds} rounds, {len(run.reached)} outcome sets, "
                f"{'exhausted' if run.exhausted else 'NOT exhausted'}, {run.seconds:.2f} s"
            )
        for outcomes, state in sorted(self.missed(), key=repr)[:3]:
            lines.append(f"  reached only by the full enumeration: outcomes {outcomes}")
            left = "; ".join(f"{name} {' '.join(map(str, rows))}" for name, rows in state)
            lines.append(f"    leaving {left}")
        return "\n".join(lines)


def budget(program: Program) -> int:
    """Rounds enough for the full enumeration of ``program`` and then some: a failing
    statement adds a ROLLBACK, so a path can be one point longer than :meth:`Program.orders`
    counts."""
    return 4 * program.orders() + 20


def run_one(program: Program, db: Any, workdir: str, search: str, *, timeout: float = 300.0) -> Run:
    """Race ``program`` on ``db`` (schema made) under ``search`` (a name of :data:`SEARCHES`,
    with a ``#n`` suffix for a repeat); collect what it reached."""
    started = time.monotonic()
    result = explore_with(
        search.split("#")[0],
        run_racer,
        (db, program, workdir),
        processes=len(program.racers),
        explore=budget(program),
        reset=lambda: reset(db, workdir),
        check=lambda: final_state(db, workdir),
        probe_handles=[db],
        timeout=timeout,
    )
    reached: set[tuple[tuple[Any, ...], tuple[Any, ...]]] = set()
    for round_ in result.rounds:
        outcomes = tuple(
            o.value if o.error is None else f"raised {o.error.short_type}" for o in round_.outcomes
        )
        reached.add((outcomes, round_.check))
    # Every order of the racers' points ran: what the full enumeration (one racer at a time)
    # covers. Steps that released two statements together and were left to timing (a function
    # that checks then writes, on PostgreSQL outside a transaction) keep a race from being
    # called exhausted, but add outcomes, never remove any.
    return Run(
        search,
        frozenset(reached),
        len(result.rounds),
        bool(result.exhausted or result.every_order),
        time.monotonic() - started,
    )


def compare(
    program: Program,
    db: Any,
    workdir: str,
    searches: Sequence[str] = ("reduced", "full"),
) -> Verdict:
    """Run ``program`` under each search, in order, on the same database (``full#2``: the full
    enumeration once more, to see that what it reaches does not depend on timing)."""
    return Verdict(program, {s: run_one(program, db, workdir, s) for s in searches})
