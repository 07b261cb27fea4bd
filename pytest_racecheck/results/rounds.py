"""One round: every racer's outcome, and what the check said afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_racecheck.wire.outcome import Outcome, RaisedError


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
