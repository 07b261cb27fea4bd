"""Statements sent through psycopg 3's async API are points, as the sync API's are.

Real racers on a real PostgreSQL, never mocks. An ``async def`` racer runs on an event loop
of its own; a point blocks that loop, so holding the racer at a statement holds all of it.

Why the verdicts are reliable. The check-then-insert below sends SELECT, INSERT, COMMIT and
fails in every order where each racer's SELECT runs before the other's COMMIT, whatever the
timing (no lock is involved and a SELECT cannot see an uncommitted row). The search
runs each interleaving once, cheapest first, and after the two serial orders nearly every order
it tries is such a one: in 24 runs of this file here ``explore=30`` always failed, first at
round 2 to 5, with 21 to 27 failing rounds. With the guard row locked ``FOR UPDATE`` no order
can fail, whatever the timing: a racer whose lock request comes while the other holds the row
waits in the server until the other commits, and then sees its run (no failing round in those
24 runs, nor in 20 more races).

Which interleaving fails first is the same in every run (the second: the reduced search runs
one serial order, then reverses the last conflicting pair it saw, the other racer's SELECT
against the first one's COMMIT), as it is for the reference strategies of
tests/test_explore.py, although ``start_run`` connects inside the round: a racer announces its
connection and reports its backend at once, so one asleep while PostgreSQL starts its backend
is never taken for a blocked one. With the unreduced search of before, 12 of 12 runs failed
first at round 3; with the reduced one, 2 of 2 here at round 2.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pytest_racecheck import statements

FILE = Path(__file__).name
SOURCE = Path(__file__).read_text().splitlines()
CREATED, REFUSED = "created", "refused"
SCHEMA = """
CREATE TABLE runs (id serial PRIMARY KEY, status text NOT NULL);
CREATE TABLE run_guard (id integer PRIMARY KEY);
INSERT INTO run_guard VALUES (1);
"""


def line(tag: str) -> str:
    """``test_async_statements.py:N`` for the one line of this file that ends in ``# <tag>``."""
    [number] = [n for n, text in enumerate(SOURCE, 1) if text.endswith(f"  # {tag}")]
    return f"{FILE}:{number}"


async def start_run(dsn: str, guarded: bool) -> str:
    """Start a run unless one is active: check, then insert, in one transaction.

    Unguarded it is the classic check-then-act bug; ``guarded`` first locks the guard row, so
    the checks of two callers cannot overlap.
    """
    async with await psycopg.AsyncConnection.connect(dsn) as conn:  # commit
        if guarded:
            await conn.execute("SELECT id FROM run_guard WHERE id = 1 FOR UPDATE")  # guard
        cur = conn.cursor()
        await cur.execute("SELECT count(*) FROM runs WHERE status = 'running'")  # check
        row = await cur.fetchone()
        if row is not None and row[0] > 0:
            return REFUSED
        await cur.execute("INSERT INTO runs (status) VALUES ('running')")  # act
    return CREATED


def _explore(race: Any, db: Any, guarded: bool) -> Any:
    return race(
        start_run,
        db.dsn,
        guarded,
        processes=2,
        explore=30,
        timeout=120,
        reset=lambda: db.execute("DELETE FROM runs"),
        check=lambda: db.scalar("SELECT count(*) FROM runs WHERE status = 'running'") == 1,
    )


def _steps(schedule: Any, racer: int) -> list[str]:
    """One racer's points in a round, in order."""
    parts = [part.split(":", 1) for step in schedule for part in step.split(" & ")]
    return [name for r, name in parts if r == str(racer)]


def _step_of(schedule: Any) -> dict[str, int]:
    """The step at which each ``racer:point`` was let through (joint steps share one)."""
    return {part: i for i, step in enumerate(schedule) for part in step.split(" & ")}


CHECK, ACT, COMMIT = (
    f"SELECT runs @ {line('check')}",
    f"INSERT runs @ {line('act')}",
    f"COMMIT @ {line('commit')}",
)
GUARD = f"SELECT run_guard @ {line('guard')}"


def test_explore_finds_an_async_check_then_insert_without_points(race, postgres_db) -> None:
    """The negative control: no point() anywhere, yet explore finds the double insert."""
    postgres_db.executescript(SCHEMA)
    result = _explore(race, postgres_db, guarded=False)
    assert result.search == "dpor"
    with pytest.raises(AssertionError, match="replay this interleaving"):
        result.assert_exactly_one(CREATED)
    schedule = result.failing_schedule
    assert schedule is not None
    assert result.failing_round.count(CREATED) == 2
    first = next(i for i, r in enumerate(result.rounds, 1) if r.count(CREATED) == 2)
    assert first == 2, "the search's order is fixed: the first failure must not move"
    # each racer's statements, named for the line of start_run that sent them
    assert _steps(schedule, 0) == _steps(schedule, 1) == [CHECK, ACT, COMMIT]
    # and each racer checked before the other committed
    step = _step_of(schedule)
    for racer, other in ((0, 1), (1, 0)):
        assert step[f"{racer}:{CHECK}"] <= step[f"{other}:{COMMIT}"], schedule


def test_the_failing_async_interleaving_replays_in_every_round(race, postgres_db) -> None:
    """``schedule=`` replays what explore found, in every round: each racer's steps are held
    and let through in the reported order, whatever the timing. (Before connecting racers were
    known as such, 3 of 10 replays here skipped steps; since, 5 of 5 replayed all 10 rounds.)"""
    postgres_db.executescript(SCHEMA)
    explored = _explore(race, postgres_db, guarded=False)
    with pytest.raises(AssertionError, match="replay this interleaving"):
        explored.assert_exactly_one(CREATED)
    schedule = explored.failing_schedule
    assert schedule is not None
    replayed = race(
        start_run,
        postgres_db.dsn,
        False,
        processes=2,
        rounds=10,
        schedule=schedule,
        timeout=120,
        reset=lambda: postgres_db.execute("DELETE FROM runs"),
        check=lambda: postgres_db.scalar("SELECT count(*) FROM runs") == 1,
    )
    assert replayed.counts(CREATED) == [2] * 10


def test_explore_passes_the_async_check_then_insert_under_a_row_lock(race, postgres_db) -> None:
    """The same code with the guard row locked first passes every order explore tries, among
    them orders where a racer asks for the row while the other holds it, and waits."""
    postgres_db.executescript(SCHEMA)
    result = _explore(race, postgres_db, guarded=True)
    result.assert_exactly_one(CREATED)
    for rnd in result.rounds:
        steps = sorted((_steps(rnd.schedule, 0), _steps(rnd.schedule, 1)), key=len)
        assert steps == [[GUARD, CHECK, COMMIT], [GUARD, CHECK, ACT, COMMIT]], rnd.schedule

    def contended(schedule: Any) -> bool:
        step = _step_of(schedule)
        return any(
            step[f"{a}:{GUARD}"] <= step[f"{b}:{GUARD}"] < step[f"{a}:{COMMIT}"]
            for a, b in ((0, 1), (1, 0))
        )

    assert any(contended(rnd.schedule) for rnd in result.rounds)


# -- every async method, in this process --------------------------------------------------


async def every_method(dsn: str) -> int:
    conn = await psycopg.AsyncConnection.connect(dsn)
    cur = conn.cursor()
    await cur.execute("CREATE TABLE runs (id serial PRIMARY KEY, status text)")  # create
    await cur.executemany("INSERT INTO runs (status) VALUES (%s)", [("a",), ("b",)])  # many
    assert len([row async for row in cur.stream("SELECT id FROM runs")]) == 2  # stream
    async with cur.copy("COPY runs (status) FROM STDIN") as copier:  # copy
        await copier.write_row(("c",))
    await conn.execute("UPDATE runs SET status = 'x'")  # update
    await conn.commit()  # commit()
    await conn.commit()  # idle: nothing is sent, no point
    await conn.set_autocommit(True)
    async with conn.transaction():  # outer
        await conn.execute("DELETE FROM runs WHERE id = 1")  # delete
        async with conn.transaction() as inner:  # inner
            await conn.execute("DELETE FROM runs")  # all
            raise psycopg.Rollback(inner)
    await conn.set_autocommit(False)
    async with conn.cursor(name="named") as server:
        await server.execute("SELECT status FROM runs")  # server
        assert await server.fetchall() == [("x",)] * 2
    await conn.rollback()  # rollback()
    await asyncio.gather(conn.execute("SELECT 1"))  # no frame of this file above it
    pid = conn.info.backend_pid
    await conn.close()
    return pid


def test_every_async_method_is_a_point_named_for_its_line(postgres_db, rec) -> None:
    pid = asyncio.run(every_method(postgres_db.dsn))  # loop
    assert rec.names == [
        f"CREATE TABLE runs @ {line('create')}",
        f"INSERT runs @ {line('many')}",
        f"SELECT runs @ {line('stream')}",
        f"COPY runs @ {line('copy')}",
        f"UPDATE runs @ {line('update')}",
        f"COMMIT @ {line('commit()')}",
        f"BEGIN @ {line('outer')}",
        f"DELETE runs @ {line('delete')}",
        f"SAVEPOINT @ {line('inner')}",
        f"DELETE runs @ {line('all')}",
        f"ROLLBACK TO @ {line('inner')}",
        f"COMMIT @ {line('outer')}",
        f"SELECT runs @ {line('server')}",
        f"ROLLBACK @ {line('rollback()')}",
        # asyncio's frames are skipped too: the line that runs the loop
        f"SELECT @ {line('loop')}",
    ]
    assert rec.pids == [pid]


ASYNC_PATCHED = [
    ("AsyncCursor", "execute"),
    ("AsyncCursor", "executemany"),
    ("AsyncCursor", "copy"),
    ("AsyncCursor", "stream"),
    ("AsyncServerCursor", "execute"),
    ("AsyncConnection", "commit"),
    ("AsyncConnection", "rollback"),
    ("AsyncTransaction", "__aenter__"),
    ("AsyncTransaction", "__aexit__"),
]


async def outside_a_race(dsn: str) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        async for _ in cur.stream("SELECT generate_series(1, 1000)"):
            break  # the stream is closed when its generator goes: the next query must run
        await asyncio.sleep(0)
        rows = await (await conn.execute("SELECT 'after'")).fetchall()
        async with cur.copy("COPY (SELECT 1) TO STDOUT") as copier:
            rows += [bytes(data) async for data in copier]
        return rows


def test_outside_a_race_async_calls_reach_nothing_and_report_no_pid(postgres_db) -> None:
    pids: list[int] = []
    statements.install(pids.append)
    try:
        rows = asyncio.run(outside_a_race(postgres_db.dsn))
    finally:
        statements.uninstall()
    assert rows == [("after",), b"1\n"]
    assert pids == []


def test_async_methods_keep_their_kind_and_uninstall_restores_them() -> None:
    before = {(c, a): getattr(psycopg, c).__dict__.get(a) for c, a in ASYNC_PATCHED}
    statements.install()
    try:
        assert all(getattr(psycopg, c).__dict__.get(a) is not before[c, a] for c, a in before)
        assert inspect.iscoroutinefunction(psycopg.AsyncCursor.execute)
        assert inspect.iscoroutinefunction(psycopg.AsyncTransaction.__aexit__)
        assert inspect.isasyncgenfunction(psycopg.AsyncCursor.stream)
    finally:
        statements.uninstall()
    assert all(getattr(psycopg, c).__dict__.get(a) is before[c, a] for c, a in before)
