"""The result of a race: its rounds, what it says about them, and the assertions on it.

This module knows neither pytest nor processes: it is plain data, built by the controller and
read by the test, the reports and the HTML page.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_racecheck.results.anomaly import summary_line
from pytest_racecheck.results.data import round_data, summary_data
from pytest_racecheck.results.isolation import failure_text
from pytest_racecheck.results.rounds import Round
from pytest_racecheck.results.text import format_histogram, format_round, leftover_hint, with_check


@dataclass
class RaceResult:
    """Every round of a race, with assertions whose failures show what every racer did.

    A result remembers whether the test looked at it (an assertion, ``rounds``,
    ``histogram()``, ``counts()``): the plugin warns about a race whose verdict nobody read,
    since such a race passes whatever its racers did. The controller adds rounds with
    :meth:`add_round`, which is not a look.
    """

    fn_name: str
    processes: int
    rounds: list[Round] = field(default_factory=list)
    """Every round, in order (a property: reading it counts as checking the result)."""
    rounds_requested: int = 0
    start_method: str = "spawn"
    racers: str = "fresh"
    replicas: int = 1
    """Simulated hosts the racers ran on (``replicas=``); 1: this one."""
    hosts: tuple[str, ...] = ()
    """With ``replicas=``: racer ``i``'s simulated host is ``hosts[i]``."""
    """How the racers were started: "hosted" (forked by racer hosts), "spares" or "fresh"."""
    startup_s: float = 0.0
    elapsed_s: float = 0.0
    virtual_s: float | None = None
    """``clock="virtual"``: how far the race's clock moved, in virtual seconds."""
    mode: str = "stress"
    """How racers were driven: stress, meet_at, pause_after, pause_before, schedule, explore."""
    seed: int | None = None
    search: str | None = None
    """Explore mode: 'dpor' (every class of interleavings once, up to 4 racers), 'pct', or
    'exhaustive' (the unreduced search)."""
    exhausted: bool = False
    """Explore mode: nothing was left untried and nothing was left to timing: every order of
    the racers' points ran (:attr:`every_order`), and every step that released several racers
    together had its overlap held in place by the database (:attr:`timing_dependent` is 0)."""
    every_order: bool = False
    """Explore mode: every order of the racers' points ran (the search's tree is used up, and
    no round strayed from it). Overlaps inside a joint step may still have been up to timing."""
    timing_dependent: int = 0
    """Explore mode: joint steps (several racers released together) whose overlap was left to
    timing, counted over every round; each such step is tried again while the budget lasts."""
    overlaps_held: int = 0
    """Explore mode: joint steps whose racers were all held by the database after their
    snapshot and before their write (see docs/explore.md): deterministic, not timing."""
    unheld_points: int = 0
    """Points reached on racers' other threads, let through unscheduled, over every round."""
    without_reduction: int | None = None
    """Explore mode: how many interleavings the unreduced search has for the statements the
    racers ran (every order of every step); the rounds run are what the reduction kept."""
    targets_reached: dict[str, int] = field(default_factory=dict)
    """For a held target (meet_at, pause_after/before): in how many rounds a racer reached it."""
    first_failure: Round | None = None
    """The first round the last failed assertion rejected."""
    failure_reason: str | None = None
    """Why the last failed assertion rejected :attr:`first_failure`."""
    failed_rounds: tuple[int, ...] = ()
    """The indexes of the rounds the last failed assertion rejected."""
    budget_s: float | None = None
    """The time budget the race ran under (``--racecheck-soak-seconds``), if any."""
    has_reset: bool = True
    """Whether the race reset the database before each round (``reset=``): without it, a
    failure that starts after round 1 may be the earlier rounds' leftovers (a hint says so)."""
    isolation: dict[str, Any] | None = None
    """The race's isolation level, where it was set and what the code named itself
    (:mod:`pytest_racecheck.controller.isolation`); None when the race set none."""
    _rounds: list[Round] = field(init=False, repr=False, compare=False)
    _checked: bool = field(default=False, init=False, repr=False, compare=False)
    _step_keys: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _failing_kept: int = field(default=0, init=False, repr=False, compare=False)

    def add_round(self, rnd: Round) -> None:
        """Record a finished round (the controller's way in: it does not count as a look).

        Steps are kept for the first round of each distinct outcome and for the first
        :data:`KEPT_FAILING_STEPS` rounds that failed plainly: the first round an assertion
        rejects is one of those, and a soak run of a million rounds stays small.
        """
        if any(o.steps for o in rnd.outcomes):
            key = rnd.key
            keep = key not in self._step_keys or (
                rnd.failed_plainly and self._failing_kept < KEPT_FAILING_STEPS
            )
            if keep:
                self._step_keys.add(key)
                self._failing_kept += rnd.failed_plainly
            else:
                rnd = dataclasses.replace(
                    rnd, outcomes=tuple(dataclasses.replace(o, steps=()) for o in rnd.outcomes)
                )
        self._rounds.append(rnd)
        self.unheld_points += sum(len(o.other_threads) for o in rnd.outcomes)

    @property
    def rounds_run(self) -> int:
        """How many rounds ran, without counting as a look at the result."""
        return len(self._rounds)

    @property
    def checked(self) -> bool:
        """Whether the test asserted on the result or read its rounds, histogram or counts."""
        return self._checked

    def reset_checked(self) -> None:
        """Forget earlier looks: the plugin calls this as it hands the result to the test."""
        self._checked = False

    def failing_rounds_so_far(self) -> int:
        """Rounds where a racer raised or the check failed (progress lines; not a look)."""
        return sum(1 for r in self._rounds if r.failed_plainly)

    def explored(self) -> str | None:
        """Explore mode in words: ``'exhausted after 9 interleavings (321 without
        reduction)'``; None for other modes."""
        if self.mode != "explore":
            return None
        run = len(self._rounds)
        said = f"{'exhausted after' if self.exhausted else 'stopped after'} {run} interleaving"
        said += "" if run == 1 else "s"
        if self.without_reduction is not None:
            said += f" ({self.without_reduction} without reduction)"
        return said

    @property
    def failing_schedule(self) -> list[str] | None:
        """The steps of the first failing round, ready for ``race(..., schedule=...)``."""
        rnd = self.failing_round
        return list(rnd.schedule) if rnd is not None and rnd.schedule else None

    @property
    def failing_round(self) -> Round | None:
        """The first round an assertion rejected, else the first where a racer raised or the
        check failed; None when every round was fine."""
        return self.first_failure or next((r for r in self._rounds if r.failed_plainly), None)

    def _failing(self) -> list[Round]:
        """The rounds the last failed assertion rejected, else those that failed plainly."""
        if self.failed_rounds:
            wanted = set(self.failed_rounds)
            return [r for r in self._rounds if r.index in wanted]
        return [r for r in self._rounds if r.failed_plainly]

    def _histogram(self, rounds: Iterable[Round] | None = None) -> list[tuple[str, int]]:
        chosen = self._rounds if rounds is None else rounds
        return Counter(r.key for r in chosen).most_common()

    def histogram(self) -> list[tuple[str, int]]:
        """Each distinct round outcome with its number of rounds, the most frequent first."""
        self._checked = True
        return self._histogram()

    def counts(self, value: Any) -> list[int]:
        """How many racers returned ``value``, round by round."""
        self._checked = True
        return [r.count(value) for r in self._rounds]

    @property
    def release_skews_ns(self) -> list[int]:
        return [r.release_skew_ns for r in self._rounds]

    def format_histogram(self, bad: Iterable[Round] = ()) -> str:
        return format_histogram(self._histogram(), bad)

    def format_round(self, rnd: Round) -> str:
        """A round racer by racer: outcome, time from the first release, duration, last point."""
        return format_round(rnd, self.hosts)

    def _fail(self, rule: str, bad: list[tuple[Round, str]]) -> None:
        __tracebackhide__ = True
        first, why = bad[0]
        self.first_failure = first
        self.failure_reason = why
        self.failed_rounds = tuple(r.index for r, _ in bad)
        message = (
            f"race of {self.fn_name} failed in {len(bad)} of {len(self._rounds)} rounds "
            f"({self.processes} racers): {rule}\n"
            f"outcomes (rounds):\n{self.format_histogram(r for r, _ in bad)}\n"
            f"first failing round, #{first.index}: {why}\n{self.format_round(first)}"
        )
        named = self._round_data(first)["anomaly"]
        if named["name"] != "unclassified" or any(o.steps for o in first.outcomes):
            message += "\n" + summary_line(named)
        if first.schedule:
            steps = "".join(f"\n    {step!r}," for step in first.schedule)
            message += "\nreplay this interleaving with race(..., schedule=[" + steps + "\n])"
        message += failure_text(self)
        hint = leftover_hint(self, first)
        if hint:
            message += "\n" + hint
        raise AssertionError(message)

    def assert_each_round(self, rule: str, judge: Callable[[Round], str | None]) -> None:
        """Fail unless ``judge`` returns None for every round; it returns the reason otherwise.

        A round whose ``check()`` returned a false value or raised fails too, whatever
        ``judge`` says: the check is the database's word, and no assertion may overrule it.
        """
        __tracebackhide__ = True
        self._checked = True
        if not self._rounds:
            raise AssertionError(f"race of {self.fn_name} ran no round")
        bad = [(r, why) for r in self._rounds if (why := with_check(r, judge(r))) is not None]
        if bad:
            self._fail(rule, bad)

    def assert_exactly_one(self, value: Any, allowed: Sequence[type[BaseException]] = ()) -> None:
        """Per round: exactly one racer returned ``value``, no racer raised, and check() held."""
        __tracebackhide__ = True
        allowed = tuple(allowed)

        def judge(rnd: Round) -> str | None:
            reasons = []
            n = rnd.count(value)
            if n != 1:
                reasons.append(f"{n} racers returned {value!r}")
            errors = rnd.errors(allowed)
            if errors:
                reasons.append(", ".join(f"racer {o.racer} raised {o.error}" for o in errors))
            return "; ".join(reasons) or None  # assert_each_round adds a failed check()

        allowed_text = f" (other than {', '.join(t.__name__ for t in allowed)})" if allowed else ""
        self.assert_each_round(
            f"expected exactly one racer to return {value!r}, no racer to raise{allowed_text}"
            ", and check() to hold, in every round",
            judge,
        )

    def assert_outcomes(
        self, allowed: Iterable[Any], errors: Sequence[type[BaseException]] = ()
    ) -> None:
        """Per round: every racer returned one of ``allowed`` (or raised one of ``errors``)."""
        __tracebackhide__ = True
        allowed_values = list(allowed)
        errors = tuple(errors)

        def judge(rnd: Round) -> str | None:
            wrong = [
                o
                for o in rnd.outcomes
                if (o.error is not None and not o.error.is_instance(errors))
                or (o.error is None and o.value not in allowed_values)
            ]
            if wrong:
                return ", ".join(f"racer {o.racer}: {o.label}" for o in wrong)
            return None  # assert_each_round adds a failed check()

        self.assert_each_round(
            f"expected every racer to return one of {allowed_values!r} and check() to hold", judge
        )

    def summary(self) -> dict[str, Any]:
        """Plain JSON-able data for the summary table and the JSON report.

        It crosses pytest-xdist's wire inside ``user_properties``, so it holds only str, int,
        float, bool, None, lists and dicts; reading it does not count as checking the result.
        """
        return summary_data(self)

    def _round_data(self, rnd: Round) -> dict[str, Any]:
        """One round racer by racer, as plain data (the JSON report's first failing round)."""
        return round_data(self, rnd)

    @property
    def rounds_kept(self) -> list[Round]:
        """Every round, without counting as a look at the result (reports read this)."""
        return self._rounds

    def failing_rounds(self) -> list[Round]:
        """The rounds the last failed assertion rejected, else those that failed plainly."""
        return self._failing()

    def outcome_histogram(self, rounds: Iterable[Round] | None = None) -> list[tuple[str, int]]:
        """:meth:`histogram` without counting as a look (reports read this)."""
        return self._histogram(rounds)


KEPT_FAILING_STEPS = 100
"""Failing rounds (beyond the first of each outcome) whose steps a result keeps."""


def _get_rounds(self: RaceResult) -> list[Round]:
    self._checked = True
    return self._rounds


def _set_rounds(self: RaceResult, value: list[Round]) -> None:
    self._rounds = value


# ``rounds`` stays a dataclass field (``RaceResult(..., rounds=[...])`` works, repr and == show
# it) but is read through a property, so that the plugin can tell a result nobody looked at.
setattr(RaceResult, "rounds", property(_get_rounds, _set_rounds, doc="Every round, in order."))  # noqa: B010
