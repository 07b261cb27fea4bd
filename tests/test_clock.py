"""The virtual clock (``race(..., clock="virtual")``): leases, TTLs and heartbeats in seconds.

Every race here is deterministic in virtual time: the clock moves only when every racer waits,
and then by exactly the earliest wake-up, so what each racer reads does not depend on the
machine's load. The lease races are on both databases (``race_db``); the application's time is
passed into the SQL, as docs/time.md says, since the database's own clock is not virtual.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_racecheck import Round, current_racer, runs
from pytest_racecheck.backends.base import Database
from pytest_racecheck.clock.control import format_duration, parse_duration

LEASE = "nightly"
TTL = 30 * 60


# --- what the racers see ----------------------------------------------------------------------


def read_clocks() -> tuple[float, ...]:
    return (
        time.time(),
        time.time_ns() / 1e9,
        time.monotonic(),
        time.perf_counter(),
        datetime.datetime.now().timestamp(),
        datetime.datetime.now(datetime.timezone.utc).timestamp(),
    )


def sleep_and_read() -> dict[str, Any]:
    """Racer 0 sleeps 31 minutes, racer 1 30 minutes and 1 second."""
    before = read_clocks()
    today = datetime.date.today()
    time.sleep(31 * 60 if current_racer() == 0 else 30 * 60 + 1)
    after = read_clocks()
    return {
        "moved": {round(b - a, 3) for a, b in zip(before, after, strict=True)},
        "start": before[0],
        "today": (today, datetime.date.today()),
        "utc": datetime.datetime.utcnow().timestamp() - time.time() + time.timezone,
    }


@pytest.mark.parametrize("start_method", ["spawn", "fork", "forkserver"])
def test_every_clock_jumps_to_the_earliest_wake_up(race: Any, start_method: str) -> None:
    """Both sleepers wake at once; each sees its own sleep on every clock, in every round, and
    the rounds go on from the time the previous one ended. Whatever the start method: the
    clock is installed in the racer, after it started."""
    real_start = time.time()
    result = race(
        sleep_and_read,
        processes=2,
        rounds=3,
        clock="virtual",
        timeout=60,
        start_method=start_method,
    )
    for rnd in result.rounds:
        first, second = (o.value for o in rnd.outcomes)
        assert first["moved"] == {31 * 60.0}
        assert second["moved"] == {30 * 60 + 1.0}
        assert first["start"] == second["start"]
        assert abs(first["utc"]) < 1
    starts = [r.outcomes[0].value["start"] for r in result.rounds]
    assert abs(starts[0] - real_start) < 60  # it starts at the real time of the race
    assert starts[1] - starts[0] >= 31 * 60
    assert result.virtual_s == pytest.approx(3 * 31 * 60, abs=0.01)


async def async_sleep_and_read() -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    before, loop_before = time.time(), loop.time()
    await asyncio.sleep(600 * (1 + (current_racer() or 0)))
    return round(time.time() - before, 3), round(loop.time() - loop_before, 3)


def test_async_sleep_and_loop_time_are_virtual(race: Any) -> None:
    result = race(async_sleep_and_read, processes=2, rounds=2, clock="virtual", timeout=60)
    assert result.counts((600.0, 600.0)) == [1, 1]
    assert result.counts((1200.0, 1200.0)) == [1, 1]


def real_time_facts() -> tuple[bool, bool, bool, float]:
    started = time.monotonic()
    time.sleep(0.05)
    return (
        type(time.sleep).__name__ == "builtin_function_or_method",
        datetime.datetime.__module__ == "datetime",
        time.monotonic() - started >= 0.05,
        time.time(),
    )


def test_without_clock_nothing_about_time_changes(race: Any) -> None:
    """No ``clock=``: the racers' sleep is the real one, and so are their time and datetime."""
    before = time.time()
    result = race(real_time_facts, processes=2, rounds=2, timeout=60)
    after = time.time()
    for rnd in result.rounds:
        for outcome in rnd.outcomes:
            *facts, now = outcome.value
            assert facts == [True, True, True]
            assert before <= now <= after
    assert result.virtual_s is None


def hold_the_write_lock_and_sleep(path: str) -> float:
    """Racer 0 holds SQLite's write lock through a 31-minute sleep; racer 1 waits for that lock
    (in SQLite's busy handler, blocked, not asleep on the clock), then reads the time."""
    import sqlite3

    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        start = time.time()
        if current_racer() == 0:
            conn.execute("BEGIN IMMEDIATE")
            time.sleep(31 * 60)
            conn.execute("COMMIT")
        else:
            time.sleep(1)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        return round(time.time() - start)
    finally:
        conn.close()


def test_a_blocked_racer_sees_the_jump(race: Any, sqlite_db: Database) -> None:
    """The clock moves while racer 1 is blocked on a lock: it reads the new time once it runs
    (the clock is shared memory, read on every call, not a message it would have missed)."""
    sqlite_db.executescript("CREATE TABLE IF NOT EXISTS t (x)")
    result = race(
        hold_the_write_lock_and_sleep, sqlite_db.path, processes=2, rounds=3, clock="virtual"
    )
    assert result.counts(31 * 60) == [2, 2, 2]


def sleep_or_spin() -> None:
    """Racer 0 sleeps a minute; racer 1 waits for a deadline without sleeping, which the
    virtual clock never reaches (it moves only when every racer waits)."""
    if current_racer() == 0:
        time.sleep(60)
        return
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        os.sched_yield()  # runs all the same, but lets the machine's other work go first


def test_a_busy_wait_never_ends_and_the_timeout_says_who_slept(race: Any) -> None:
    """The documented limit: a busy wait on the clock never ends. The race's timeout (start-up
    included, hence 15 s on a loaded machine) ends it and names the sleeper."""
    from pytest_racecheck.controller.errors import RaceTimeout

    with pytest.raises(RaceTimeout) as info:
        race(sleep_or_spin, processes=2, rounds=1, clock="virtual", timeout=15)
    message = str(info.value)
    assert "asleep in a virtual sleep until +1m" in message
    assert "had not returned from sleep_or_spin" in message


def test_the_clock_file_is_gone_after_the_race(
    race: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared clock file lives as long as its race, whether the race passes or breaks."""
    from pytest_racecheck.clock import control as clock
    from pytest_racecheck.controller.errors import RaceTimeout

    monkeypatch.setattr(clock, "_shared_dir", lambda: str(tmp_path))
    race(sleep_and_read, processes=2, rounds=1, clock="virtual").counts(None)
    with pytest.raises(RaceTimeout):
        race(sleep_or_spin, processes=2, rounds=1, clock="virtual", timeout=0.5)
    assert list(tmp_path.iterdir()) == []


# --- bad input --------------------------------------------------------------------------------


def nothing() -> None:
    return None


def test_bad_clock_is_refused_before_any_process_starts(race: Any) -> None:
    with pytest.raises(ValueError, match=r"unknown clock 'fast'.*clock='virtual'"):
        race(nothing, processes=2, rounds=1, clock="fast")


def test_a_clock_step_needs_the_virtual_clock(race: Any) -> None:
    with pytest.raises(ValueError, match=r"'\+31m' moves the virtual clock: pass clock='virtual'"):
        race(nothing, processes=2, schedule=["0:a", "+31m"])
    with pytest.raises(ValueError, match=r"'\+31x' is not a clock step"):
        race(nothing, processes=2, schedule=["0:a", "+31x"], clock="virtual")


@pytest.mark.parametrize(
    ("text", "seconds"), [("+31m", 1860), ("+30m1s", 1801), ("+1h", 3600), ("+1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


# --- the stalled holder: a 30-minute lease, held 31 minutes ------------------------------------


def _sql(db: Database, sql: str) -> str:
    return sql if db.backend == "sqlite" else sql.replace("?", "%s")


def create_work_table(db: Database) -> None:
    runs.create_schema(db)
    key = "INTEGER PRIMARY KEY" if db.backend == "sqlite" else "serial PRIMARY KEY"
    db.executescript(f"CREATE TABLE IF NOT EXISTS work (id {key}, who TEXT NOT NULL);")


def reset_work(db: Database) -> None:
    db.executescript("DELETE FROM leases;\nDELETE FROM work;\n")


def do_work(db: Database, who: str) -> None:
    with closing(db.connect()) as conn:
        conn.execute(_sql(db, "INSERT INTO work (who) VALUES (?)"), (who,))


def stalled_holder(db: Database, checked: bool) -> str:
    """Racer 0 takes a 30-minute lease and stalls 31 minutes before its work; racer 1 comes
    30 minutes and 1 second later and reclaims. ``checked``: the work first checks, by token,
    that the lease is still this racer's, and the release is by token."""
    if current_racer() == 0:
        token = runs.lease_acquire(db, LEASE, ttl_seconds=TTL, now=time.time())
        time.sleep(31 * 60)
    else:
        time.sleep(30 * 60 + 1)
        token = runs.lease_acquire(db, LEASE, ttl_seconds=TTL, now=time.time())
    if token is None:
        return "no lease"
    try:
        if checked and not runs.lease_renew(db, LEASE, token, now=time.time()):
            return "lost the lease"
        do_work(db, f"racer {current_racer()}")
        return "worked as the holder"
    finally:
        if checked:
            runs.lease_release(db, LEASE, token)
        else:
            runs.lease_release_as_first_written(db, LEASE, token)


@pytest.fixture
def work_db(race_db: Database) -> Database:
    create_work_table(race_db)
    return race_db


def test_stalled_holder_unchecked_both_believe_they_hold(race: Any, work_db: Database) -> None:
    """The negative control: without a token check, both racers do the lease holder's work,
    in every round (the clock makes the stall exact: 31 minutes against a 30-minute TTL)."""
    result = race(
        stalled_holder,
        work_db,
        False,
        processes=2,
        rounds=5,
        clock="virtual",
        reset=lambda: reset_work(work_db),
    )
    assert result.counts("worked as the holder") == [2] * 5
    with pytest.raises(AssertionError, match="exactly one") as failure:
        result.assert_exactly_one("worked as the holder")
    # the report shows the round's timeline on the clock (the two sleeps in either order)
    timeline = str(failure.value).split("virtual clock (since the round began):\n")[1]
    events = [line.split() for line in timeline.splitlines()[:4]]
    assert sorted(events[:2]) == [
        ["+0s", "racer", "0", "sleeps", "31m"],
        ["+0s", "racer", "1", "sleeps", "30m1s"],
    ]
    assert events[2:] == [["+30m1s", "racer", "1", "wakes"], ["+31m", "racer", "0", "wakes"]]


def test_stalled_holder_token_checked_finds_it_lost(race: Any, work_db: Database) -> None:
    """The fix: the late holder's token check finds the lease reclaimed, so only the reclaimer
    works; the reclaimer's lease is released by its own token."""
    result = race(
        stalled_holder,
        work_db,
        True,
        processes=2,
        rounds=5,
        clock="virtual",
        reset=lambda: reset_work(work_db),
        check=lambda: work_db.execute("SELECT who FROM work") == [("racer 1",)],
    )
    result.assert_exactly_one("worked as the holder")
    assert result.counts("lost the lease") == [1] * 5


# --- the heartbeat that comes too late -------------------------------------------------------

HEARTBEAT_TTL = 15 * 60


def heartbeat_or_reclaim(db: Database, checked: bool) -> str:
    """Racer 0 holds a 15-minute lease and renews it every 10 minutes, working after each
    renewal; racer 1 comes 16 minutes later and takes the lease if it is stale. ``checked``:
    the renewal is by token and the heartbeat stops when it fails; else by name, always."""
    if current_racer() == 1:
        time.sleep(16 * 60)
        token = runs.lease_acquire(db, LEASE, ttl_seconds=HEARTBEAT_TTL, now=time.time())
        if token is None:
            return "no lease"
        do_work(db, "reclaimer")
        return "reclaimed"
    token = runs.lease_acquire(db, LEASE, ttl_seconds=HEARTBEAT_TTL, now=time.time())
    if token is None:
        return "no lease"
    for _ in range(2):
        time.sleep(10 * 60)
        if checked:
            if not runs.lease_renew(db, LEASE, token, now=time.time()):
                return "lost the lease"
        else:
            with closing(db.connect()) as conn:
                sql = "UPDATE leases SET acquired_at = ? WHERE name = ?"
                if db.backend != "sqlite":
                    sql = "UPDATE leases SET acquired_at = to_timestamp(%s) WHERE name = %s"
                conn.execute(sql, (time.time(), LEASE))
        do_work(db, "heartbeat")
    runs.lease_release(db, LEASE, token)
    return "renewed"


@dataclass(frozen=True, repr=False)
class WorkOrder:
    """The check's value: who worked, in commit order; false when the heartbeat worked after
    the reclaimer took its lease (the harm)."""

    who: tuple[str, ...]

    def __bool__(self) -> bool:
        after = self.who[self.who.index("reclaimer") :] if "reclaimer" in self.who else ()
        return "heartbeat" not in after

    def __repr__(self) -> str:
        return "ok" if self else f"heartbeat worked after the reclaim: {list(self.who)}"


def no_heartbeat_work_after_the_reclaim(db: Database) -> Any:
    return lambda: WorkOrder(
        tuple(row[0] for row in db.execute("SELECT who FROM work ORDER BY id"))
    )


def judge(rnd: Round) -> str | None:
    if not rnd.check_held:
        return repr(rnd.check)
    raised = [o for o in rnd.outcomes if o.error is not None]
    return f"racer {raised[0].racer} raised {raised[0].error}" if raised else None


def heartbeat_race(race: Any, db: Database, checked: bool) -> Any:
    return race(
        heartbeat_or_reclaim,
        db,
        checked,
        processes=2,
        explore=40,
        clock="virtual",
        reset=lambda: reset_work(db),
        check=no_heartbeat_work_after_the_reclaim(db),
    )


def test_heartbeat_too_late_is_found_by_explore(race: Any, work_db: Database) -> None:
    """Explore orders the heartbeat's wake-ups against the reclaimer's: where the reclaimer wakes
    first, the renewal comes too late, and a renewal by name steals the lease back. The search
    is deterministic (2 racers); the failing order is replayed with schedule=."""
    result = heartbeat_race(race, work_db, checked=False)
    with pytest.raises(AssertionError, match="heartbeat worked after the reclaim"):
        result.assert_each_round("no heartbeat work after the reclaim", judge)
    failing = result.failing_schedule
    assert failing is not None
    # which failing order comes first is the search's affair; that it fails again is the point
    replay = race(
        heartbeat_or_reclaim,
        work_db,
        False,
        processes=2,
        rounds=3,
        clock="virtual",
        schedule=failing,
        reset=lambda: reset_work(work_db),
        check=no_heartbeat_work_after_the_reclaim(work_db),
    )
    with pytest.raises(AssertionError, match="heartbeat worked after the reclaim"):
        replay.assert_each_round("no heartbeat work after the reclaim", judge)
    assert replay.failed_rounds == (1, 2, 3)


def test_heartbeat_checked_renewal_passes_explore(race: Any, work_db: Database) -> None:
    """Renewal by token: in every explored order the late heartbeat finds the lease lost."""
    result = heartbeat_race(race, work_db, checked=True)
    result.assert_each_round("no heartbeat work after the reclaim", judge)
    assert any(o.value == "lost the lease" for r in result.rounds for o in r.outcomes)
