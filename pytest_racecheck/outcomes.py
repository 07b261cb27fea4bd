"""What racers did: outcomes, rounds, the result of a race, and the assertions on it.

This module knows neither pytest nor processes: it is plain data, so it can be built in a racer,
pickled to the controller, and read in a report.
"""

from __future__ import annotations

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
        return any(qualified_name(t) in self.mro for t in types)

    def __str__(self) -> str:
        return f"{self.short_type}: {self.message}" if self.message else self.short_type


@dataclass(frozen=True)
class Outcome:
    """What one racer's call did in one round."""

    racer: int
    value: Any = None
    error: RaisedError | None = None
    released_ns: int = 0
    ended_ns: int = 0
    last_point: str | None = None

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
    """Every round of a race, with assertions whose failures show what every racer did."""

    fn_name: str
    processes: int
    rounds: list[Round] = field(default_factory=list)
    rounds_requested: int = 0
    start_method: str = "spawn"
    startup_s: float = 0.0
    elapsed_s: float = 0.0

    def histogram(self) -> list[tuple[str, int]]:
        """Each distinct round outcome with its number of rounds, the most frequent first."""
        return Counter(r.key for r in self.rounds).most_common()

    def counts(self, value: Any) -> list[int]:
        """How many racers returned ``value``, round by round."""
        return [r.count(value) for r in self.rounds]

    @property
    def release_skews_ns(self) -> list[int]:
        return [r.release_skew_ns for r in self.rounds]

    def format_histogram(self, bad: Iterable[Round] = ()) -> str:
        bad_keys = {r.key for r in bad}
        lines = []
        hist = self.histogram()
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
        tracebacks = [o for o in rnd.outcomes if o.error is not None]
        for o in tracebacks[:2]:
            assert o.error is not None
            lines.append(f"  racer {o.racer} traceback:")
            lines.extend("    " + ln for ln in o.error.traceback.rstrip().splitlines())
        return "\n".join(lines)

    def _fail(self, rule: str, bad: list[tuple[Round, str]]) -> None:
        __tracebackhide__ = True
        first, why = bad[0]
        message = (
            f"race of {self.fn_name} failed in {len(bad)} of {len(self.rounds)} rounds "
            f"({self.processes} racers): {rule}\n"
            f"outcomes (rounds):\n{self.format_histogram(r for r, _ in bad)}\n"
            f"first failing round, #{first.index}: {why}\n{self.format_round(first)}"
        )
        raise AssertionError(message)

    def assert_each_round(self, rule: str, judge: Callable[[Round], str | None]) -> None:
        """Fail unless ``judge`` returns None for every round; it returns the reason otherwise."""
        __tracebackhide__ = True
        if not self.rounds:
            raise AssertionError(f"race of {self.fn_name} ran no round")
        bad = [(r, why) for r in self.rounds if (why := judge(r)) is not None]
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
            if not rnd.check_held:
                reasons.append(
                    f"check() raised {rnd.check_error}"
                    if rnd.check_error is not None
                    else f"check() returned {rnd.check!r}"
                )
            return "; ".join(reasons) or None

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
            if not rnd.check_held:
                return f"check() returned {rnd.check!r}"
            return None

        self.assert_each_round(
            f"expected every racer to return one of {allowed_values!r} and check() to hold", judge
        )

    def summary(self) -> dict[str, Any]:
        """Plain data for the end-of-session table (it crosses pytest-xdist's wire)."""
        return {
            "fn": self.fn_name,
            "processes": self.processes,
            "rounds": len(self.rounds),
            "rounds_requested": self.rounds_requested,
            "elapsed_s": round(self.elapsed_s, 3),
            "histogram": self.histogram()[:3],
        }
