"""Explore mode on real racers against real databases: every statement a point.

Why these verdicts cannot vary: with two racers the explorer's search (DPOR, see
:mod:`pytest_racecheck.explore.dpor`) is exhaustive and deterministic. It runs one serial order
first, then reverses each pair of conflicting statements it saw, depth first. A check-then-act fails
as soon as a reversal puts both checks before either write, which comes within the first few
rounds, far inside ``explore=50``. A correct strategy has no failing order at all, so whichever
orders the budget reaches, they pass. What varies from run to run is only timing inside a
step, never which racer goes next.
"""

from __future__ import annotations

import re

import pytest

from pytest_racecheck import runs
from pytest_racecheck.backends.base import Database

BROKEN = [
    pytest.param(runs.naive, {}, id="naive"),
    pytest.param(runs.in_process_lock, {}, id="in_process_lock"),
    pytest.param(runs.lease_as_first_written, {}, id="lease_as_first_written"),
]
CORRECT = [
    pytest.param(runs.A, {"form": "catch"}, True, id="A-catch"),
    pytest.param(runs.A, {"form": "upsert"}, True, id="A-upsert"),
    pytest.param(runs.B, {}, False, id="B"),
    pytest.param(runs.C, {}, False, id="C"),
    pytest.param(runs.lease, {}, False, id="lease"),
]


def _no_user_points() -> None:
    """racer_setup: turn the strategies' own point() calls off, so statements alone drive."""
    runs.point = runs.broken.point = lambda name: None  # type: ignore[assignment]


def _explore(race, db: Database, strategy, unique: bool = False, **kwargs):
    runs.create_schema(db, unique_active=unique)
    return race(
        strategy,
        db,
        processes=2,
        explore=50,
        seed=1,
        timeout=120,
        reset=lambda: runs.reset(db),
        check=lambda: runs.active_count(db) == 1,
        racer_setup=_no_user_points,
        **kwargs,
    )


@pytest.mark.parametrize(("strategy", "kwargs"), BROKEN)
def test_explore_flags_every_broken_strategy_without_points(race, race_db, strategy, kwargs):
    result = _explore(race, race_db, strategy, **kwargs)
    assert result.search == "dpor"
    with pytest.raises(AssertionError, match="replay this interleaving") as failure:
        result.assert_exactly_one(runs.CREATED)
    schedule = result.failing_schedule
    assert schedule is not None
    # every step names its SQL and the line of the strategy's code that sent it
    step = re.compile(r"\d+:[A-Z][A-Z ]*[a-z_]* @ (_base|broken|__init__)\.py:\d+")
    parts = [part for joint in schedule for part in joint.split(" & ")]
    assert all(step.fullmatch(part) for part in parts), schedule
    assert repr(schedule[0]) in str(failure.value)


@pytest.mark.parametrize(("strategy", "kwargs", "unique"), CORRECT)
def test_explore_passes_every_correct_strategy(race, race_db, strategy, kwargs, unique):
    result = _explore(race, race_db, strategy, unique, **kwargs)
    result.assert_exactly_one(runs.CREATED)
    assert len(result.rounds) == 50 or result.exhausted


def test_a_failing_interleaving_replays_every_time(race, race_db) -> None:
    explored = _explore(race, race_db, runs.naive)
    with pytest.raises(AssertionError, match="replay this interleaving"):
        explored.assert_exactly_one(runs.CREATED)
    schedule = explored.failing_schedule
    assert schedule is not None
    replayed = race(
        runs.naive,
        race_db,
        processes=2,
        rounds=10,
        schedule=schedule,
        timeout=120,
        reset=lambda: runs.reset(race_db),
        check=lambda: runs.active_count(race_db) == 1,
        racer_setup=_no_user_points,
    )
    assert replayed.counts(runs.CREATED) == [2] * 10
    # the replay ran exactly the recorded steps, in order, every round
    assert all(list(r.schedule) == schedule for r in replayed.rounds)


def test_a_small_space_runs_every_order_and_says_so(race, sqlite_db) -> None:
    """B on SQLite: BEGIN IMMEDIATE makes the second racer wait, so few orders exist; every one
    runs well inside the budget. SQLite runs one writer at a time, so the reduced search
    releases no two racers together there: nothing is left to timing, and the race is called
    exhausted, with the count the reduction saved."""
    result = _explore(race, sqlite_db, runs.B)
    result.assert_exactly_one(runs.CREATED)
    assert result.every_order
    assert result.timing_dependent == 0
    assert result.exhausted
    assert len(result.rounds) < 50
    summary = result.summary()
    assert (summary["exhausted"], summary["every_order"]) == (True, True)
    assert summary["explored"] == f"exhausted after {len(result.rounds)} interleavings " + (
        f"({result.without_reduction} without reduction)"
    )


def test_more_than_four_racers_use_pct_with_the_seed(race, sqlite_db) -> None:
    runs.create_schema(sqlite_db)
    result = race(
        runs.naive,
        sqlite_db,
        processes=5,
        explore=20,
        seed=1234,
        timeout=120,
        reset=lambda: runs.reset(sqlite_db),
        check=lambda: runs.active_count(sqlite_db) == 1,
    )
    assert (result.search, result.seed, len(result.rounds)) == ("pct", 1234, 20)
    assert not result.exhausted
    with pytest.raises(AssertionError, match=r"racers returned 'created'"):
        result.assert_exactly_one(runs.CREATED)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"schedule": ["0:checked"]}, "cannot be combined with schedule"),
        ({"meet_at": "checked"}, "cannot be combined with meet_at"),
        ({"pause_after": "pytest_racecheck.runs:reset"}, "cannot be combined with pause_after"),
        ({"explore": 0}, "explore must be at least 1"),
        ({"rounds": 10}, "do not also pass rounds=10"),
        ({"explore": 5, "processes": 9}, "explore works with 2 to 8 racers"),
    ],
)
def test_conflicting_arguments_are_refused_before_any_process(race, extra, message) -> None:
    arguments = {"explore": 5, "processes": 2, **extra}
    with pytest.raises(ValueError, match=message):
        race(runs.naive, None, **arguments)
    assert race.results == []  # nothing ran


@pytest.mark.parametrize("processes", [3, 4])
def test_three_and_four_racers_are_explored_to_the_end_where_the_space_fits(
    race, make_sqlite_db, processes
) -> None:
    """The reduced search serves up to 4 racers: the unique-index catch, whose reduced space
    is 21 interleavings with 3 racers and 150 with 4, is exhausted within a budget of 250
    (the unreduced space is millions). Its negative control: the naive strategy fails."""

    def explore(strategy, unique: bool, **kwargs):
        db = make_sqlite_db()
        runs.create_schema(db, unique_active=unique)
        return race(
            strategy,
            db,
            processes=processes,
            explore=250,
            seed=1,
            timeout=300,
            reset=lambda: runs.reset(db),
            check=lambda: runs.active_count(db) == 1,
            racer_setup=_no_user_points,
            **kwargs,
        )

    correct = explore(runs.A, True, form="catch")
    correct.assert_exactly_one(runs.CREATED)
    assert correct.search == "dpor" and correct.exhausted, correct.summary()
    assert correct.without_reduction is not None
    assert len(correct.rounds) < correct.without_reduction
    with pytest.raises(AssertionError, match="replay this interleaving"):
        explore(runs.naive, False).assert_exactly_one(runs.CREATED)
