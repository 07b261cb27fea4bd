"""The failure texts of a race: its histogram, a round racer by racer, hints.

Plain data in, text out: what an assertion's message and the terminal show.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pytest_racecheck.results.rounds import Round

if TYPE_CHECKING:
    from pytest_racecheck.results.result import RaceResult


def format_histogram(histogram: list[tuple[str, int]], bad: Iterable[Round] = ()) -> str:
    """The histogram as lines, the keys of ``bad`` rounds marked."""
    bad_keys = {r.key for r in bad}
    lines = []
    hist = histogram
    width = max((len(k) for k, _ in hist), default=0)
    for key, n in hist:
        mark = "   <-- fails" if key in bad_keys else ""
        lines.append(f"  {key:<{width}}  {n:>5} round{'s' if n != 1 else ' '}{mark}")
    return "\n".join(lines)


def format_round(rnd: Round, hosts: tuple[str, ...] = ()) -> str:
    """A round racer by racer: outcome, time from the first release, duration, last point;
    with ``hosts`` (``replicas=``), the simulated host each racer ran on."""
    first = min(o.released_ns for o in rnd.outcomes)
    rows = [("racer", "outcome", "released", "took", "last point", "waited on a lock")]
    for o in sorted(rnd.outcomes, key=lambda o: o.racer):
        outcome = str(o.error) if o.error is not None else repr(o.value)
        rows.append(
            (
                f"{o.racer} on {hosts[o.racer]}" if o.racer < len(hosts) else str(o.racer),
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
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
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


def leftover_hint(result: RaceResult, first: Round) -> str | None:
    """A race without ``reset=`` whose rounds held until one failed: the failing round may
    have seen what an earlier round left in the database."""
    if result.has_reset or first.index <= 1 or not result._rounds:
        return None
    return (
        f"hint: round{'s' if first.index > 2 else ''} 1"
        f"{f' to {first.index - 1}' if first.index > 2 else ''} passed and this race has "
        "no reset=: round "
        f"{first.index} may have seen what earlier rounds left in the database. Pass "
        "reset= (run before each round, in the test process) to start every round from "
        "the same state."
    )


def with_check(rnd: Round, why: str | None) -> str | None:
    """The judge's reason, with the check's failure added when the check did not hold."""
    if rnd.check_held:
        return why
    check = check_text(rnd)
    return check if why is None else f"{why}; {check}"


def check_text(rnd: Round) -> str:
    if rnd.check_error is not None:
        return f"check() raised {rnd.check_error}"
    return f"check() returned {rnd.check!r}"
