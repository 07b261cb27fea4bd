"""The one place that decides how a race's racers are driven: stress, a meeting, a pause,
a schedule, or explore.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_racecheck.explore.choose import make_search
from pytest_racecheck.instrument.points import pause_point_name, resolve_target
from pytest_racecheck.policies.coordinator import Coordinator
from pytest_racecheck.policies.explore import Explorer
from pytest_racecheck.policies.meet_at import MeetAt
from pytest_racecheck.policies.schedule import Schedule, parse_schedule


def make_coordinator(
    processes: int,
    meet_at: str | None = None,
    pause_after: str | None = None,
    pause_before: str | None = None,
    schedule: Sequence[str] | None = None,
    *,
    explore: int | None = None,
    seed: int = 0,
) -> Coordinator:
    """The policy that the race's arguments ask for; conflicting arguments are refused."""
    if explore is not None:
        given = [
            n
            for n, v in (
                ("meet_at", meet_at),
                ("pause_after", pause_after),
                ("pause_before", pause_before),
            )
            if v
        ] + (["schedule"] if schedule is not None else [])
        if given:
            raise ValueError(
                f"race(): explore= chooses the interleaving itself; it cannot be combined "
                f"with {', '.join(given)}. Drop one of them (a failing explored "
                "interleaving is replayed with schedule= alone)."
            )
        return Explorer(processes, make_search(processes, seed))
    pauses = [(w, t) for w, t in (("after", pause_after), ("before", pause_before)) if t]
    chosen = [n for n, v in (("meet_at", meet_at), ("schedule", schedule)) if v is not None] + [
        f"pause_{w}" for w, _ in pauses
    ]
    if len(chosen) > 1:
        raise ValueError(
            f"race(): use one of meet_at, pause_after, pause_before, schedule; got {chosen}"
        )
    if schedule is not None:  # an empty schedule is refused, not raced freely
        return Schedule(parse_schedule(schedule, processes), processes)
    if pauses:
        where, target = pauses[0]
        resolve_target(target)  # a wrong name fails here, not in every racer
        return MeetAt(pause_point_name(where, target), processes)
    if meet_at is not None:
        if not isinstance(meet_at, str) or not meet_at:
            raise ValueError(f"race(): meet_at must be a point name, got {meet_at!r}")
        return MeetAt(meet_at, processes)
    return Coordinator()
