"""Race the groomer's run-level lock (the second story in the README) on SQLite and PostgreSQL.

The story's tests mocked the lock functions; these run real groomers in real processes against
a real database, in the four places where such locks break. Each test races both versions of
``groomer``: the lock as first written is an expected failure that must fail
(``xfail(strict=True, raises=AssertionError)``: if the race ever stopped catching it, or broke
down instead of judging, the suite goes red), and the corrected lock must pass.

What the tests judge, per round:

- no two groomers held the lock at the same time (their ``Tick.held_ns`` spans do not
  overlap). One holder *after* another is fine: a groomer that fires after the previous run
  released the lock is a new tick with work of its own;
- no issue was groomed twice (the check, on the database);
- nobody raised, where the test is about that.

The broken interleavings are forced by a ``schedule`` in every round, except in the
many-groomers race (``meet_at``), whose docstring gives its measured rate, in the explored
race, where the plugin finds them itself from the SQL statements alone, and in the race of the
real 30-minute TTL, where a virtual clock lets a holder stall 31 minutes in no real time. The
corrected lock passes for reasons that do not depend on timing (one statement decides, or a
fence does).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import groomer
import pytest

from pytest_racecheck import Race, Round, current_racer, point, runs
from pytest_racecheck.backends.base import Database

Groomer = Callable[..., groomer.Tick]

BROKEN = pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="the groomer's lock as first written"
)
VERSIONS = [
    pytest.param(groomer.run_groomer_as_first_written, id="first_written", marks=BROKEN),
    pytest.param(groomer.run_groomer, id="corrected"),
]
UNIQUE_VIOLATION = ("sqlite3.IntegrityError", "psycopg.errors.UniqueViolation")


@pytest.fixture
def db(race_db: Database) -> Database:
    """Both backends (ids sqlite, postgres), with the lock table and six open issues."""
    groomer.create_schema(race_db)
    return race_db


# --- judging a round --------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class NoIssueGroomedTwice:
    """The check's value: true when it holds; its repr is what the report shows."""

    twice: tuple[int, ...]

    def __bool__(self) -> bool:
        return not self.twice

    def __repr__(self) -> str:
        return f"issues groomed twice: {list(self.twice)}" if self.twice else "ok"


def no_issue_groomed_twice(db: Database) -> Callable[[], NoIssueGroomedTwice]:
    return lambda: NoIssueGroomedTwice(tuple(groomer.groomed_twice(db)))


def one_holder_at_a_time(rnd: Round) -> str | None:
    """Someone held the lock, and no two racers held it at once."""
    spans = sorted(
        (o.value.held_ns, o.racer)
        for o in rnd.outcomes
        if isinstance(o.value, groomer.Tick) and o.value.held_ns is not None
    )
    if not spans:
        return "nobody held the lock"
    (_, latest_end), latest = spans[0]
    for (start, end), racer in spans[1:]:
        if start < latest_end:
            return f"racers {latest} and {racer} held the lock at the same time"
        if end > latest_end:
            latest_end, latest = end, racer
    return None


def no_crash(rnd: Round, *, except_unique_violation: bool = False) -> str | None:
    bad = [
        o
        for o in rnd.outcomes
        if o.error is not None
        and not (except_unique_violation and any(t in o.error.mro for t in UNIQUE_VIOLATION))
    ]
    return ", ".join(f"racer {o.racer} raised {o.error}" for o in bad) or None


def reasons(rnd: Round, *found: str | None) -> str | None:
    """The round's failures joined, the check's included; None when the round is clean."""
    out = [r for r in found if r]
    if not rnd.check_held:
        out.append(f"check: {rnd.check!r}")
    return "; ".join(out) or None


# --- 1. the acquire race ----------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2], ids=["one_host", "two_replicas"])
@pytest.mark.parametrize("run", VERSIONS)
def test_many_groomers_at_once(race: Race, db: Database, run: Groomer, replicas: int) -> None:
    """Eight groomers fire at once: one holder at a time, and no issue groomed twice.

    ``meet_at="selected"`` keeps the holder at its slow LLM call until every other groomer has
    had its go. As first written, a loser that bails (or crashes) deletes the holder's lock
    from its ``finally``; a groomer that reads the lock row after that takes the lock too,
    selects the same open issues and grooms them again. (Losers that crash on the primary key
    are test 4's business and allowed here: this test shows a second defect.)

    Reliability: measured, because which loser reads the row after which delete is up to the
    scheduler (and on SQLite a loser sleeping in the busy handler counts as arrived, so the
    holder may go on early). As first written, on a 2-CPU machine, 23 races of 30 rounds on
    each database had 17 to 30 failing rounds on SQLite and 9 to 30 on PostgreSQL (88% and 92%
    of all rounds); under ``-n 2``, 10 races of 40 rounds had 13 to 40 failing rounds. At the
    worst rate seen, 30%, 40 clean rounds in a row happen with a probability of 0.7**40, below
    one in a million. Corrected, it cannot fail: a holder's lock row exists and is fresh until
    its release, so any other acquire in that time matches nothing.

    ``two_replicas`` runs the groomers on two simulated hosts, four each, as the groomer runs
    in production: the lease is a row in the database, so it holds across machines as it does
    on one (a lock file or a PID file would not: tests/test_replicas.py).
    """
    result = race(
        run,
        db,
        processes=8,
        rounds=40,
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
        meet_at="selected",
        replicas=replicas,
    )
    result.assert_each_round(
        "expected one holder at a time, no crash other than a unique violation, and no issue "
        "groomed twice",
        lambda r: reasons(r, one_holder_at_a_time(r), no_crash(r, except_unique_violation=True)),
    )


@pytest.mark.parametrize("run", VERSIONS)
def test_loser_deletes_the_holders_lock(race: Race, db: Database, run: Groomer) -> None:
    """The acquire race of test 1, one interleaving spelled out with three groomers.

    Racer 0 takes the lock and stops at ``"selected"``; racer 1 finds the lock held and bails;
    then racer 2 tries. As first written, racer 1's ``finally`` deleted the lock by name, so
    racer 2 takes it while racer 0 holds it, selects the same three issues, and both groom
    them. Corrected, racer 1 releases nothing (it holds no token) and racer 2 bails.

    Reliability: deterministic. The schedule fixes the order of every step that matters, in
    every round, on both databases; no two racers ever run at the same time.
    """
    result = race(
        run,
        db,
        processes=3,
        rounds=5,
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
        # corrected, racer 2 bails before "selected": that step is the broken lock's alone
        schedule=["0:tick", "1:tick", "2:tick", "0:selected"]
        + (["2:selected"] if run is groomer.run_groomer_as_first_written else []),
    )
    result.assert_each_round(
        "expected one holder at a time, no crash, and no issue groomed twice",
        lambda r: reasons(r, one_holder_at_a_time(r), no_crash(r)),
    )


# --- 2. the stale-reclaim race ----------------------------------------------------------------


def plant_stale_lock(db: Database) -> None:
    """Reset, then a lock that a groomer took two hours ago and never released (it crashed)."""
    groomer.reset(db)
    long_ago = (
        "(julianday('now') - 2440587.5) * 86400.0 - 7200"  # seconds since the epoch
        if db.backend == "sqlite"
        else "clock_timestamp() - interval '2 hours'"
    )
    db.execute(
        "INSERT INTO leases (name, token, holder, acquired_at) "
        f"VALUES ('groomer', 'token of the crashed groomer', 'crashed groomer', {long_ago})"
    )


RECLAIMERS = 6


def for_the_broken(run: Groomer, steps: list[str]) -> dict[str, list[str]]:
    """``schedule=steps`` for the lock as first written; the corrected lock has none of its
    points ("lease_checked"), and a schedule whose steps never run fails the race, so it races
    freely, as its docstring says."""
    return {"schedule": steps} if run is groomer.run_groomer_as_first_written else {}


def one_at_a_time(processes: int) -> list[str]:
    """Hold every racer after it read the lock row, then let each write and stop at its work."""
    return [f"{i}:lease_checked" for i in range(processes)] + [
        f"{i}:selected" for i in range(processes)
    ]


@pytest.mark.parametrize("run", VERSIONS)
def test_stale_lock_reclaimed_once(race: Race, db: Database, run: Groomer) -> None:
    """A stale lock, six groomers at once: exactly one reclaims it, the others bail.

    As first written, each groomer reads the row, finds it stale by its own clock, and
    overwrites it. The schedule holds every groomer after that read (``"lease_checked"``)
    until all have read, then lets them write one by one and holds each at ``"selected"``:
    all six hold the lock at once, select the same issues, and groom them six times.

    Reliability: deterministic for the broken lock (the schedule fixes the order in every
    round). The corrected lock never reaches ``"lease_checked"``: its six acquires run freely,
    and its reclaim is one ``UPDATE ... WHERE acquired_at <= now - ttl`` on the database's
    clock, which exactly one racer's statement can match, whatever the timing. A groomer that
    comes after the reclaimer released is a new holder of a free lock, not a second reclaim:
    the spans tell them apart.
    """
    result = race(
        run,
        db,
        processes=RECLAIMERS,
        rounds=10,
        reset=lambda: plant_stale_lock(db),
        check=no_issue_groomed_twice(db),
        **for_the_broken(run, one_at_a_time(RECLAIMERS)),
    )
    result.assert_each_round(
        "expected one holder at a time (a single reclaim), no crash, and no issue groomed twice",
        lambda r: reasons(r, one_holder_at_a_time(r), no_crash(r)),
    )


# --- 3. release after reclaim -----------------------------------------------------------------


def expire_lock(db: Database) -> None:
    """Move the lock's ``acquired_at`` an hour into the past: the holder has been that slow."""
    shift = "acquired_at - 3600" if db.backend == "sqlite" else "acquired_at - interval '1 hour'"
    with closing(db.connect()) as conn:
        conn.execute(f"UPDATE leases SET acquired_at = {shift} WHERE name = 'groomer'")


def slow_holder_round(db: Database, run: Groomer) -> groomer.Tick:
    """Racer 0 is the slow holder A, racer 1 the reclaimer B, racer 2 the newcomer C.

    B waits at ``"an hour later"`` until A holds the lock and sits in its LLM call; then the
    hour passes (on A's lock row only) and B runs the groomer.
    """
    if current_racer() == 1:
        point("an hour later")
        expire_lock(db)
    return run(db)


@pytest.mark.parametrize("run", VERSIONS)
def test_release_after_reclaim(race: Race, db: Database, run: Groomer) -> None:
    """A slow holder's release must not delete the lock of the groomer that reclaimed it.

    A takes the lock and stops at ``"selected"``; an hour later B reclaims the stale lock and
    stops at ``"selected"`` too; A goes on and releases; C tries; B finishes. Corrected, A's
    fenced write finds B's token, so A grooms nothing more; A's release matches no row; C finds
    B's fresh lock and bails. As first written, A grooms anyway (no fence) and its release by
    name deletes B's lock, so C takes the lock while B holds it, and B grooms A's issues again.
    (A and B overlap in both versions: A cannot know it was reclaimed until it looks, which is
    why the write is fenced. So this test judges C and the issues, not the spans.)

    Reliability: deterministic. The schedule orders every step in every round, and the hour is
    moved on A's lock row instead of waited for: nothing depends on the scheduler or the clock.
    """
    result = race(
        slow_holder_round,
        db,
        run,
        processes=3,
        rounds=5,
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
        schedule=["1:an hour later", "0:selected", "2:tick", "1:selected"],
    )

    def newcomer_bailed(rnd: Round) -> str | None:
        c = rnd.outcomes[2]
        if c.value == groomer.EMPTY_TICK:
            return None
        return f"C (racer 2) did not bail but returned {c.label}: B's lock was gone"

    result.assert_each_round(
        "expected C to find B's lock and bail, no crash, and no issue groomed twice",
        lambda r: reasons(r, newcomer_bailed(r), no_crash(r)),
    )


# --- 4. the loser bails cleanly ---------------------------------------------------------------


@pytest.mark.parametrize("run", VERSIONS)
def test_loser_bails_quietly(race: Race, db: Database, run: Groomer) -> None:
    """A groomer that loses the race for the lock returns the empty tick: nobody raises.

    As first written, every groomer reads "no lock" and then inserts the row. The schedule
    holds all eight after that read (``"lease_checked"``), then lets them insert one by one,
    each holder stopping at ``"selected"``: racer 1's insert meets racer 0's row and fails on
    the primary key, and the exception escapes the job. (Its ``finally`` then deletes racer 0's
    lock by name, so racer 2 gets in and racer 3 crashes, and so on: four crash per round.)

    Reliability: deterministic for the broken lock (the schedule fixes the order in every
    round; a free race with ``meet_at`` is not, because a crasher's delete lets a later insert
    through). The corrected lock never reaches ``"lease_checked"``: its eight acquires run
    freely, each one ``INSERT ... ON CONFLICT DO NOTHING`` whose row count says who won, with
    nothing that can raise for the loser.
    """
    result = race(
        run,
        db,
        processes=8,
        rounds=10,
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
        # the odd racers crash on their insert and never reach "selected"
        **for_the_broken(run, one_at_a_time(8)[:8] + [f"{i}:selected" for i in (0, 2, 4, 6)]),
    )
    result.assert_each_round(
        "expected no racer to raise, one holder at a time, and no issue groomed twice",
        lambda r: reasons(r, no_crash(r), one_holder_at_a_time(r)),
    )


# --- 5. found without points ------------------------------------------------------------------


def statements_only() -> None:
    """racer_setup: switch every sync point in the groomer and the lease off, in this racer."""
    groomer.point = lambda name: None  # type: ignore[assignment]
    runs.point = runs.broken.point = lambda name: None  # type: ignore[assignment]


@pytest.mark.parametrize("run", VERSIONS)
def test_explored_without_points(race: Race, db: Database, run: Groomer) -> None:
    """Two groomers, no point, no schedule: the explorer finds the broken interleaving itself.

    ``explore=50`` holds both groomers at every SQL statement they send and tries the orders of
    those statements, fewest switches first. As first written, the first order with one switch
    between a groomer's read of the lock row and its insert makes the second insert fail on
    the primary key (the loser crashes instead of bailing). Corrected, no order fails: the
    acquire is one statement.

    Reliability: deterministic. With two racers the search is exhaustive and always tries the
    same orders in the same sequence; the failing one comes long before the budget of 50.
    """
    result = race(
        run,
        db,
        processes=2,
        explore=50,
        seed=1,
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
        racer_setup=statements_only,
    )
    result.assert_each_round(
        "expected one holder at a time, no crash, and no issue groomed twice",
        lambda r: reasons(r, one_holder_at_a_time(r), no_crash(r)),
    )


# --- 6. the real 30-minute TTL, on a virtual clock --------------------------------------------


def on_the_app_clock(run: Groomer) -> dict[str, Any]:
    """The corrected groomer judges the lock's age on the (virtual) clock of the process; the
    first-written one always does."""
    return {"app_clock": True} if "app_clock" in inspect.signature(run).parameters else {}


def stalled_holder_round(db: Database, run: Groomer) -> groomer.Tick:
    """Racer 0 holds the lock and its first LLM call stalls 31 minutes; racer 1 is the next
    scheduler tick, 30 minutes and 1 second after the first."""
    if current_racer() == 0:
        return run(db, llm_call_s=31 * 60, **on_the_app_clock(run))
    time.sleep(30 * 60 + 1)
    return run(db, **on_the_app_clock(run))


def late_holder_stopped(rnd: Round) -> str | None:
    late, reclaimer = (o.value for o in rnd.outcomes)
    if not (isinstance(reclaimer, groomer.Tick) and reclaimer.held):
        return f"the next tick did not reclaim the stale lock: it returned {reclaimer!r}"
    if isinstance(late, groomer.Tick) and late.lost_lock and not late.groomed:
        return None
    return f"the late holder did not stop at its fence: it returned {late!r}"


@pytest.mark.parametrize("run", VERSIONS)
def test_holder_stalls_past_its_lease(race: Race, db: Database, run: Groomer) -> None:
    """A holder stalls past its 30-minute lease while the next tick reclaims it.

    On the virtual clock both racers sleep (the holder in its LLM call, the next tick until it
    fires); the clock jumps to the tick at 30 minutes and 1 second, which finds the lock stale
    and reclaims it, then to the holder's wake-up at 31 minutes. As first written, the late
    holder grooms the issues the new holder groomed (no fence), and both held the lock at the
    same time. Corrected, the late holder's fenced write finds the new holder's token, so it
    grooms nothing, and its token-checked release leaves the new lease alone.

    Reliability: deterministic. What each racer reads from the clock, and when, is fixed by the
    sleeps alone (the clock moves only when both wait); a round takes well under a second.
    """
    result = race(
        stalled_holder_round,
        db,
        run,
        processes=2,
        rounds=3,
        clock="virtual",
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
    )
    result.assert_each_round(
        "expected the next tick to reclaim, the late holder to stop at its fence, no crash, and "
        "no issue groomed twice",
        lambda r: reasons(r, late_holder_stopped(r), no_crash(r)),
    )


def reclaimer_waits_round(db: Database, run: Groomer) -> groomer.Tick:
    """Racer 0 is the slow holder A, racer 1 the reclaimer B, racer 2 the newcomer C; B waits
    at ``"31 minutes later"`` (the schedule moves the clock meanwhile)."""
    if current_racer() == 1:
        point("31 minutes later")
    return run(db, **on_the_app_clock(run))


@pytest.mark.parametrize("run", VERSIONS)
def test_release_after_reclaim_on_the_clock(race: Race, db: Database, run: Groomer) -> None:
    """Test 3 again, with the time passing on the clock instead of in the lock row.

    A takes the lock and stops at ``"selected"``; the schedule moves the clock 31 minutes
    (``"+31m"``); B reclaims the now stale lock and stops at ``"selected"``; A goes on and
    releases; C tries; B finishes. The verdicts are test 3's, and B must have reclaimed.

    Reliability: deterministic, as test 3: the schedule orders every step, and the clock moves
    only at its ``"+31m"`` step.
    """
    result = race(
        reclaimer_waits_round,
        db,
        run,
        processes=3,
        rounds=3,
        clock="virtual",
        reset=lambda: groomer.reset(db),
        check=no_issue_groomed_twice(db),
        schedule=["+31m", "1:31 minutes later", "0:selected", "2:tick", "1:selected"],
    )

    def b_reclaimed_and_c_bailed(rnd: Round) -> str | None:
        b, c = rnd.outcomes[1], rnd.outcomes[2]
        if not (isinstance(b.value, groomer.Tick) and b.value.held):
            return f"B (racer 1) did not reclaim the stale lock but returned {b.label}"
        if c.value != groomer.EMPTY_TICK:
            return f"C (racer 2) did not bail but returned {c.label}: B's lock was gone"
        return None

    result.assert_each_round(
        "expected B to reclaim, C to find B's lock and bail, no crash, no issue groomed twice",
        lambda r: reasons(r, b_reclaimed_and_c_bailed(r), no_crash(r)),
    )
