"""A race's result as plain JSON-able data: the summary table's row and the JSON report's
entry, with the first failing round racer by racer.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_racecheck.results.anomaly import classify
from pytest_racecheck.results.isolation import summary as isolation_summary
from pytest_racecheck.results.rounds import Round
from pytest_racecheck.results.text import check_text
from pytest_racecheck.sql.effects import effect
from pytest_racecheck.wire.outcome import Outcome

if TYPE_CHECKING:
    from pytest_racecheck.results.result import RaceResult

HISTOGRAM_ROWS = 10
"""Distinct outcomes kept in a summary: enough to read, small enough to ship per test."""


def summary_data(result: RaceResult) -> dict[str, Any]:
    """Plain JSON-able data for the summary table and the JSON report.

    It crosses pytest-xdist's wire inside ``user_properties``, so it holds only str, int,
    float, bool, None, lists and dicts; reading it does not count as checking the result.
    """
    failing = result.failing_rounds()
    rnd = result.failing_round
    skews = sorted(r.release_skew_ns for r in result.rounds_kept)
    windows = sorted(_round_window_ns(r) for r in result.rounds_kept)
    run = len(result.rounds_kept)
    return {
        "fn": result.fn_name,
        "processes": result.processes,
        "rounds": run,
        "rounds_requested": result.rounds_requested,
        "start_method": result.start_method,
        "replicas": result.replicas,
        "elapsed_s": round(result.elapsed_s, 3),
        "startup_s": round(result.startup_s, 3),
        "histogram": [[k, n] for k, n in result.outcome_histogram()[:HISTOGRAM_ROWS]],
        "distinct_outcomes": len(result.outcome_histogram()),
        "failing_histogram": [
            [k, n] for k, n in result.outcome_histogram(failing)[:HISTOGRAM_ROWS]
        ],
        "failing_rounds": len(failing),
        "mode": result.mode,
        "seed": result.seed,
        "search": result.search,
        "exhausted": result.exhausted,
        "without_reduction": result.without_reduction,
        "explored": result.explored(),
        "every_order": result.every_order,
        "timing_dependent": result.timing_dependent,
        "overlaps_held": result.overlaps_held,
        "unheld_points": result.unheld_points,
        "budget_s": result.budget_s,
        "failing_schedule": result.failing_schedule,
        "targets_reached": dict(result.targets_reached),
        "isolation": isolation_summary(result),
        "first_failure": None if rnd is None else round_data(result, rnd),
        "timings": {
            "startup_s": round(result.startup_s, 3),
            "elapsed_s": round(result.elapsed_s, 3),
            "per_round_ms": (
                round((result.elapsed_s - result.startup_s) / run * 1000, 3) if run else None
            ),
            "round_ms": _quantiles(windows, 1e6),
            "release_skew_us": _quantiles(skews, 1e3),
        },
    }


def round_data(result: RaceResult, rnd: Round) -> dict[str, Any]:
    """One round racer by racer, as plain data (the JSON report's first failing round)."""
    first = min((o.released_ns for o in rnd.outcomes), default=0)
    why = result.failure_reason if rnd is result.first_failure else None
    if why is None and rnd.failed_plainly:
        why = "; ".join(
            [f"racer {o.racer} raised {o.error}" for o in rnd.outcomes if o.error is not None]
            + ([] if rnd.check_held else [check_text(rnd)])
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
        "check": check_text(rnd) if rnd.has_check or rnd.check_error else None,
        "check_held": rnd.check_held,
        "trace": list(rnd.trace),
        "schedule": list(rnd.schedule),
        "clock": list(rnd.clock),
    }
    for racer in data["racers"]:
        for step in racer["steps"]:
            step["kind"] = effect(step["sql"]).kind if step["sql"] else "point"
    data["anomaly"] = classify(data)
    return data


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
