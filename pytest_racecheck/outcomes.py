"""What racers did: outcomes, rounds, the result of a race, and the assertions on it.

This module knows neither pytest nor processes: it is plain data, so it can be built in a racer,
pickled to the controller, and read in a report.
"""

from __future__ import annotations

import dataclasses
import statistics
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


def qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


@dataclass(frozen=True)
class RaisedError:
    """An exception a racer raised, carried by name: its class may not exist in the controller."""

    type_name: str
    message: str
    traceback: str
    mro: tuple[str, ...] = ()

    @classmethod
    def from_exception(cls, exc: BaseException) -> RaisedError:
        return cls(
            type_name=qualified_name(type(exc)),
            message=str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            mro=tuple(qualified_name(c) for c in type(exc).__mro__),
        )

    @property
    def short_type(self) -> str:
        return self.type_name.rsplit(".", 1)[-1]

    def is_instance(self, types: Iterable[type[BaseException]]) -> bool:
        """isinstance() by qualified class name, across the process boundary."""
        from pytest_racecheck.isolation import allows  # SerializationFailure etc., by name

        return any(qualified_name(t) in self.mro or allows(self, t) for t in types)

    def __str__(self) -> str:
        return f"{self.short_type}: {self.message}" if self.message else self.short_type


@dataclass(frozen=True)
class Step:
    """One point a racer reached in a round: a SQL statement (``sql`` set) or a user point.

    Times are ``time.monotonic_ns()``, one clock for every process of the machine, so the steps
    of several racers can be laid on one time axis. ``passed_ns - reached_ns`` is the time the
    racer was held there; the statement itself runs from ``passed_ns`` to the racer's next step
    (or its return).
    """

    name: str
    reached_ns: int
    passed_ns: int
    sql: str | None = None
    """The statement's text, parameters bound where the driver gives them; None for a point."""
    conn: int = 0
    """Which of the racer's connections sent it (0, 1, ... in the order they were first used)."""


MAX_STEPS = 200
"""Steps a racer records per round: enough for any interleaving worth drawing."""


@dataclass(frozen=True)
class Outcome:
    """What one racer's call did in one round."""

    racer: int
    value: Any = None
    error: RaisedError | None = None
    released_ns: int = 0
    ended_ns: int = 0
    last_point: str | None = None
    steps: tuple[Step, ...] = ()
    """The points and statements the racer passed, in order (at most :data:`MAX_STEPS`)."""
    reached: int = 0
    """How many points the racer's round thread reached (explore: 0 means nothing to order;
    kept when :attr:`steps` are dropped to keep a long race small)."""
    other_threads: tuple[str, ...] = ()
    """Points reached on the racer's other threads: let through, never held (the first 200)."""

    @property
    def raised(self) -> bool:
        return self.error is not None

    @property
    def label(self) -> str:
        """The outcome as it appears in a histogram: the value, or the exception's type."""
        if self.error is not None:
            return f"raised {self.error.short_type}"
        return self.value if isinstance(self.value, str) else repr(self.value)

    @property
    def duration_ns(self) -> int:
        return self.ended_ns - self.released_ns


@dataclass(frozen=True)
class Round:
    """One release of every racer, and what the check said afterwards."""

    index: int
    outcomes: tuple[Outcome, ...]
    check: Any = None
    check_error: RaisedError | None = None
    has_check: bool = False
    trace: tuple[str, ...] = ()
    waited_on_lock: frozenset[int] = frozenset()
    schedule: tuple[str, ...] = ()
    """The steps that ran, in the ``schedule=`` format (explored and scheduled rounds)."""
    lock_waits: tuple[tuple[int, int], ...] = ()
    """(racer, monotonic ns) each time a probe first found a racer blocked in a statement."""
    clock: tuple[str, ...] = ()
    """``clock="virtual"``: the round's timeline (sleeps, wake-ups, clock steps)."""

    @property
    def failed_plainly(self) -> bool:
        """The check failed or a racer raised: bad under any assertion."""
        return not self.check_held or any(o.error is not None for o in self.outcomes)

    @property
    def release_skew_ns(self) -> int:
        times = [o.released_ns for o in self.outcomes]
        return max(times) - min(times)

    @property
    def check_held(self) -> bool:
        return self.check_error is None and (not self.has_check or bool(self.check))

    def count(self, value: Any) -> int:
        return sum(1 for o in self.outcomes if o.error is None and o.value == value)

    def errors(self, allowed: Sequence[type[BaseException]] = ()) -> list[Outcome]:
        return [
            o for o in self.outcomes if o.error is not None and not o.error.is_instance(allowed)
        ]

    @property
    def key(self) -> str:
        """The round's outcome, racer order ignored: the unit of the histogram."""
        counts = Counter(o.label for o in self.outcomes)
        text = ", ".join(f"{label} x{n}" for label, n in sorted(counts.items()))
        if self.check_error is not None:
            text += f" | check raised {self.check_error.short_type}"
        elif self.has_check:
            text += f" | check={self.check!r}"
        return text


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
    (:mod:`pytest_racecheck.isolation`); None when the race set none."""
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
        bad_keys = {r.key for r in bad}
        lines = []
        hist = self._histogram()
        width = max((len(k) for k, _ in hist), default=0)
        for key, n in hist:
            mark = "   <-- fails" if key in bad_keys else ""
            lines.append(f"  {key:<{width}}  {n:>5} round{'s' if n != 1 else ' '}{mark}")
        return "\n".join(lines)

    def format_round(self, rnd: Round) -> str:
        """A round racer by racer: outcome, time from the first release, duration, last point."""
        first = min(o.released_ns for o in rnd.outcomes)
        rows = [("racer", "outcome", "released", "took", "last point", "waited on a lock")]
        for o in sorted(rnd.outcomes, key=lambda o: o.racer):
            outcome = str(o.error) if o.error is not None else repr(o.value)
            rows.append(
                (
                    str(o.racer),
                    outcome if len(outcome) <= 70 else outcome[:67] + "...",
                    f"+{(o.released_ns - first) / 1e6:.3f} ms",
                    f"{o.duration_ns / 1e6:.3f} ms",
                    o.last_point or "-",
                    "yes" if o.racer in rnd.waited_on_lock else "-",
                )
            )
        if not rnd.waited_on_lock:  # only known while racers were held at points
            rows = [r[:-1] for r in rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
        if rnd.check_error is not None:
            lines.append(f"  check() raised {rnd.check_error}")
        elif rnd.has_check:
            lines.append(f"  check() returned {rnd.check!r}")
        if rnd.trace:
            lines.append("  interleaving:")
            lines.extend(f"    {step}" for step in rnd.trace)
        for o in sorted(rnd.outcomes, key=lambda o: o.racer):
            if o.other_threads:
                shown = ", ".join(repr(n) for n in o.other_threads[:3])
                more = f" and {len(o.other_threads) - 3} more" if len(o.other_threads) > 3 else ""
                lines.append(
                    f"  racer {o.racer} ran {len(o.other_threads)} point(s) on other threads, "
                    f"let through unscheduled: {shown}{more}"
                )
        if rnd.clock:
            lines.append("  virtual clock (since the round began):")
            lines.extend(f"    {event}" for event in rnd.clock)
        tracebacks = [o for o in rnd.outcomes if o.error is not None]
        for o in tracebacks[:2]:
            assert o.error is not None
            lines.append(f"  racer {o.racer} traceback:")
            lines.extend("    " + ln for ln in o.error.traceback.rstrip().splitlines())
        return "\n".join(lines)

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
            from pytest_racecheck.anomaly import summary_line

            message += "\n" + summary_line(named)
        if first.schedule:
            steps = "".join(f"\n    {step!r}," for step in first.schedule)
            message += "\nreplay this interleaving with race(..., schedule=[" + steps + "\n])"
        from pytest_racecheck.isolation import failure_text

        message += failure_text(self)
        hint = self._leftover_hint(first)
        if hint:
            message += "\n" + hint
        raise AssertionError(message)

    def _leftover_hint(self, first: Round) -> str | None:
        """A race without ``reset=`` whose rounds held until one failed: the failing round may
        have seen what an earlier round left in the database."""
        if self.has_reset or first.index <= 1 or not self._rounds:
            return None
        return (
            f"hint: round{'s' if first.index > 2 else ''} 1"
            f"{f' to {first.index - 1}' if first.index > 2 else ''} passed and this race has "
            "no reset=: round "
            f"{first.index} may have seen what earlier rounds left in the database. Pass "
            "reset= (run before each round, in the test process) to start every round from "
            "the same state."
        )

    def assert_each_round(self, rule: str, judge: Callable[[Round], str | None]) -> None:
        """Fail unless ``judge`` returns None for every round; it returns the reason otherwise.

        A round whose ``check()`` returned a false value or raised fails too, whatever
        ``judge`` says: the check is the database's word, and no assertion may overrule it.
        """
        __tracebackhide__ = True
        self._checked = True
        if not self._rounds:
            raise AssertionError(f"race of {self.fn_name} ran no round")
        bad = [(r, why) for r in self._rounds if (why := _with_check(r, judge(r))) is not None]
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
        failing = self._failing()
        rnd = self.failing_round
        skews = sorted(r.release_skew_ns for r in self._rounds)
        windows = sorted(_round_window_ns(r) for r in self._rounds)
        run = len(self._rounds)
        return {
            "fn": self.fn_name,
            "processes": self.processes,
            "rounds": run,
            "rounds_requested": self.rounds_requested,
            "start_method": self.start_method,
            "elapsed_s": round(self.elapsed_s, 3),
            "startup_s": round(self.startup_s, 3),
            "histogram": [[k, n] for k, n in self._histogram()[:HISTOGRAM_ROWS]],
            "distinct_outcomes": len(self._histogram()),
            "failing_histogram": [[k, n] for k, n in self._histogram(failing)[:HISTOGRAM_ROWS]],
            "failing_rounds": len(failing),
            "mode": self.mode,
            "seed": self.seed,
            "search": self.search,
            "exhausted": self.exhausted,
            "without_reduction": self.without_reduction,
            "explored": self.explored(),
            "every_order": self.every_order,
            "timing_dependent": self.timing_dependent,
            "overlaps_held": self.overlaps_held,
            "unheld_points": self.unheld_points,
            "budget_s": self.budget_s,
            "failing_schedule": self.failing_schedule,
            "targets_reached": dict(self.targets_reached),
            "isolation": _isolation_summary(self),
            "first_failure": None if rnd is None else self._round_data(rnd),
            "timings": {
                "startup_s": round(self.startup_s, 3),
                "elapsed_s": round(self.elapsed_s, 3),
                "per_round_ms": (
                    round((self.elapsed_s - self.startup_s) / run * 1000, 3) if run else None
                ),
                "round_ms": _quantiles(windows, 1e6),
                "release_skew_us": _quantiles(skews, 1e3),
            },
        }

    def _round_data(self, rnd: Round) -> dict[str, Any]:
        """One round racer by racer, as plain data (the JSON report's first failing round)."""
        first = min((o.released_ns for o in rnd.outcomes), default=0)
        why = self.failure_reason if rnd is self.first_failure else None
        if why is None and rnd.failed_plainly:
            why = "; ".join(
                [f"racer {o.racer} raised {o.error}" for o in rnd.outcomes if o.error is not None]
                + ([] if rnd.check_held else [_check_text(rnd)])
            )
        data = {
            "index": rnd.index,
            "why": why,
            "key": rnd.key,
            "racers": [
                {
                    "racer": o.racer,
                    "outcome": o.label,
                    "value": None if o.error is not None else _plain(o.value),
                    "error": None if o.error is None else str(o.error),
                    "error_type": None if o.error is None else o.error.type_name,
                    "released_ms": round((o.released_ns - first) / 1e6, 3),
                    "took_ms": round(o.duration_ns / 1e6, 3),
                    "last_point": o.last_point,
                    "waited_on_lock": o.racer in rnd.waited_on_lock,
                    "other_thread_points": list(o.other_threads),
                    "steps": _steps_data(o, rnd, first),
                }
                for o in sorted(rnd.outcomes, key=lambda o: o.racer)
            ],
            "check": _check_text(rnd) if rnd.has_check or rnd.check_error else None,
            "check_held": rnd.check_held,
            "trace": list(rnd.trace),
            "schedule": list(rnd.schedule),
            "clock": list(rnd.clock),
        }
        # Imported here: the statements package they read SQL with imports this module.
        from pytest_racecheck.anomaly import classify
        from pytest_racecheck.statements.effects import effect

        for racer in data["racers"]:
            for step in racer["steps"]:
                step["kind"] = effect(step["sql"]).kind if step["sql"] else "point"
        data["anomaly"] = classify(data)
        return data


KEPT_FAILING_STEPS = 100
"""Failing rounds (beyond the first of each outcome) whose steps a result keeps."""

HISTOGRAM_ROWS = 10
"""Distinct outcomes kept in a summary: enough to read, small enough to ship per test."""


def _isolation_summary(result: RaceResult) -> dict[str, Any] | None:
    from pytest_racecheck.isolation import summary

    return summary(result)


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _steps_data(outcome: Outcome, rnd: Round, first: int) -> list[dict[str, Any]]:
    """A racer's steps on the round's time axis (ms from its first release): where each was
    reached, how long the racer was held there, how long it ran until its next step (a
    statement's own time), and where a probe first found it blocked in that time."""
    waits = sorted(t for r, t in rnd.lock_waits if r == outcome.racer)
    steps = outcome.steps
    data = []
    for i, step in enumerate(steps):
        until = steps[i + 1].reached_ns if i + 1 < len(steps) else outcome.ended_ns
        blocked = next((t for t in waits if step.passed_ns <= t <= until), None)
        data.append(
            {
                "name": step.name,
                "sql": step.sql,
                "conn": step.conn,
                "at_ms": _ms(step.reached_ns - first),
                "held_ms": _ms(step.passed_ns - step.reached_ns),
                "ran_ms": _ms(max(until - step.passed_ns, 0)),
                "blocked_at_ms": None if blocked is None else _ms(blocked - first),
            }
        )
    return data


def _with_check(rnd: Round, why: str | None) -> str | None:
    """The judge's reason, with the check's failure added when the check did not hold."""
    if rnd.check_held:
        return why
    check = _check_text(rnd)
    return check if why is None else f"{why}; {check}"


def _check_text(rnd: Round) -> str:
    if rnd.check_error is not None:
        return f"check() raised {rnd.check_error}"
    return f"check() returned {rnd.check!r}"


def _plain(value: Any) -> Any:
    """``value`` if JSON can carry it as it is, else its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _round_window_ns(rnd: Round) -> int:
    """From the first racer's release to the last racer's return."""
    if not rnd.outcomes:
        return 0
    return max(o.ended_ns for o in rnd.outcomes) - min(o.released_ns for o in rnd.outcomes)


def _quantiles(ordered: Sequence[int], unit: float) -> dict[str, float] | None:
    """p50, p99 and max of sorted nanosecond values, in ``unit`` nanoseconds."""
    if not ordered:
        return None

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / unit, 3)

    return {
        "p50": round(statistics.median(ordered) / unit, 3),
        "p99": at(0.99),
        "max": round(ordered[-1] / unit, 3),
    }


def _get_rounds(self: RaceResult) -> list[Round]:
    self._checked = True
    return self._rounds


def _set_rounds(self: RaceResult, value: list[Round]) -> None:
    self._rounds = value


# ``rounds`` stays a dataclass field (``RaceResult(..., rounds=[...])`` works, repr and == show
# it) but is read through a property, so that the plugin can tell a result nobody looked at.
setattr(RaceResult, "rounds", property(_get_rounds, _set_rounds, doc="Every round, in order."))  # noqa: B010
