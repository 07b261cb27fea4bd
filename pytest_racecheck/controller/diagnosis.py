"""What the controller says when a race did not test what it meant to: a target never
reached, a schedule not followed, nothing explored, a hang, a timeout.

Each text says what happened racer by racer and how to fix the test.
"""

from __future__ import annotations

from pytest_racecheck.controller.crew import ControllerState, Racer
from pytest_racecheck.controller.errors import (
    NothingExplored,
    RaceNotForced,
    RaceStalled,
    ScheduleNotFollowed,
)
from pytest_racecheck.controller.stall import LOOK_EVERY_S
from pytest_racecheck.results.rounds import Round


class Diagnosis(ControllerState):
    """The controller's checks and texts for races that broke down or proved nothing."""

    def _check_targets(self) -> None:
        """A held target that no racer reached in any round means nothing was forced."""
        reached = self.coordinator.targets_reached()
        self.result.targets_reached = dict(reached)
        never = [name for name, n in reached.items() if n == 0]
        if never and self.result.rounds_run:
            raise RaceNotForced(
                f"race of {self.spec.fn_name}: {', '.join(repr(n) for n in never)} never "
                f"reached: this race was not forced. No racer passed that point in any of "
                f"{self.result.rounds_run} rounds; check the point's name, or that the code "
                "under test really runs it.",
                self.result,
            )

    def _check_steps(self, rnd: Round) -> None:
        """Every step of a schedule runs in every round; a round that skipped one replayed
        something else, and passing it would pass a regression test that tests nothing."""
        missed = self.coordinator.missed()
        if not missed:
            return
        lines = [
            f"race of {self.spec.fn_name}: the schedule was not followed in round {rnd.index}, "
            "so this round replayed another interleaving:"
        ]
        for number, step, racer, where in missed:
            lines.append(f"  step {number} {step!r} never ran: racer {racer} {where}")
        for racer in sorted({racer for _, _, racer, _ in missed}):
            outcome = next((o for o in rnd.outcomes if o.racer == racer), None)
            if outcome is not None:
                passed = ", ".join(repr(s.name) for s in outcome.steps) or "none"
                lines.append(f"  racer {racer} passed these points in round {rnd.index}: {passed}")
        lines.append(
            "A step names a point (for a statement: its SQL and the file:line that sent it). "
            "If the code under test moved or takes another path and the bug may still be "
            "there, explore again and paste the new result.failing_schedule, or name the place "
            "with pytest_racecheck.point(). If the bug was fixed, this interleaving cannot "
            "happen any more and no schedule replays it: keep a race with explore= as the "
            "regression test (it searches the fixed code's interleavings and passes)."
        )
        raise ScheduleNotFollowed("\n".join(lines), self.result)

    def _check_explored(self) -> None:
        """An explored racer that reached no point in any round gave the explorer nothing to
        order: its verdict would be the luck of free-running rounds, called a search."""
        if self.spec.explore is None or not self.result.rounds_run:
            return
        rounds = self.result._rounds
        mine = [
            [o for r in rounds for o in r.outcomes if o.racer == i]
            for i in range(self.spec.processes)
        ]
        # A racer that raised in every round is left to the assertions, which show its error.
        empty = [
            i
            for i, outcomes in enumerate(mine)
            if all(o.reached == 0 for o in outcomes) and not all(o.raised for o in outcomes)
        ]
        if not empty:
            return
        other = sum(len(o.other_threads) for r in rounds for o in r.outcomes if o.racer in empty)
        who = (
            "no racer reached a point"
            if len(empty) == self.spec.processes
            else f"racer {', '.join(map(str, empty))} reached no point"
        )
        lines = [
            f"race of {self.spec.fn_name} explored nothing: {who} in any of {len(rounds)} "
            "round(s), so there was no order to choose, and a verdict would be the luck of "
            "free-running rounds, not a search.",
        ]
        if other:
            lines.append(
                f"  {other} point(s) were reached on the racers' other threads; only the thread "
                "that runs the raced function is scheduled, so run the database work there."
            )
        lines.append(
            "  Explore makes every statement a point only for the drivers docs/explore.md lists "
            '("Every statement is a point"); code that reaches the database through another '
            "driver, or not through a database at all, sends no point. Use a hooked driver in "
            "the racers, mark the steps with pytest_racecheck.point(), or race it without "
            "explore= (rounds=N, meet_at=...)."
        )
        raise NothingExplored("\n".join(lines), self.result)

    def _look_for_progress(self, racers: list[Racer], doing: str) -> None:
        """Nothing arrived: did the racers (or what they started, or their database backends)
        use CPU? Fail the race as hung once nothing moved for ``stall_timeout`` seconds."""
        self.progress.look(
            [r.process.pid for r in racers if not r.gateway]  # a gateway's pids are not ours
            + [p for r in racers for p in r.backend_pids]
        )
        for racer in racers:
            if racer.gateway:  # its gateway's remote host reads that machine's /proc for it
                self.progress.moved_at(racer.process.host.cpu_moved_at)
        idle = self.progress.stalled_for()
        if idle is None:
            return
        spec = self.spec
        lines = [
            f"race of {spec.fn_name} made no progress for {idle:.0f} s while {doing} "
            f"(stall_timeout={spec.stall_timeout:g}, the no-progress bound; the race's "
            f"timeout={spec.timeout:g} was not reached): no racer sent a message, ran a "
            "statement or used CPU, so the race hangs rather than the machine being slow:"
        ]
        lines += [f"  {r.describe()} {self._where(r, doing)}" for r in racers]
        waiting = self.coordinator.describe_wait() if self.round is not None else ""
        if waiting:
            lines.append(f"  the controller was waiting for {waiting}")
        if waiting and any(r.gateway for r in racers):
            lines.append(
                "  racers on gateways run on other machines: the controller cannot tell one "
                "asleep outside the database (a file lock, a socket), which it reads from "
                "this machine's /proc for its own racers; only PostgreSQL's own lock waits "
                "count for them (docs/replica-gateways.md)"
            )
        lines.append(
            "if the code under test waits that long on purpose, raise stall_timeout= "
            "(or --racecheck-stall-timeout); no racer outlives the race: they were stopped"
        )
        raise RaceStalled("\n".join(lines), self.result)

    def _outer_bound_note(self) -> str:
        """Which bound ended the race, and what the no-progress watch saw before it."""
        spec, idle = self.spec, self.progress.idle_s()
        if idle <= 2 * LOOK_EVERY_S:
            return (
                f"the race's timeout={spec.timeout:g} (its outer bound) was reached while the "
                "racers still made progress: this machine is slow or the race long, it does "
                "not hang; raise timeout="
            )
        return (
            f"the race's timeout={spec.timeout:g} (its outer bound) was reached; nothing had "
            f"moved for {idle:.0f} s, less than stall_timeout={spec.stall_timeout:g} (the "
            "no-progress bound), so it may hang"
        )

    def _where(self, racer: Racer, doing: str) -> str:
        if self.round is None:
            return f"was still {doing}"
        asleep = self.clock.describe(racer.index) if self.clock is not None else ""
        if asleep:
            return asleep
        if racer.at_point:
            return f"held at point {racer.at_point!r}"
        return f"had not returned from {self.spec.fn_name}"

    def _timeout_message(self, number: int, running: list[Racer]) -> str:
        spec = self.spec
        lines = [f"race of {spec.fn_name} timed out after {spec.timeout:g} s in round {number}:"]
        lines += [f"  {r.describe()} {self._where(r, '')}" for r in running]
        waiting = self.coordinator.describe_wait()
        if waiting:
            lines.append(f"  the controller was waiting for {waiting}")
        lines.append(self._outer_bound_note())
        lines.append("no racer outlives the race: they were stopped")
        return "\n".join(lines)
