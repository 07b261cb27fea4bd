"""psycopg2, asyncpg and aiosqlite (and Django on psycopg2, SQLAlchemy on asyncpg): their
statements are points, so explore finds a check-then-act race through each with no point() in
the code, its failing schedule replays in every round, and a correct strategy passes.

First, in this process with the points recorded instead of held (the ``rec`` fixture): every
hooked method is a point named for the line that sent it, each PostgreSQL backend reported
before its first point. Then real racers on real databases, the same three races through one
helper (:func:`explore_replay_and_pass`) for each driver.

Why the race verdicts are reliable. Each naive ``start`` checks (SELECT) and then acts
(INSERT); it creates a second run in every order where both checks run before either insert
is committed, whatever the timing (no lock is involved, and no SELECT sees an uncommitted
row). The exhaustive search runs each order once, cheapest first, and most orders after the
serial ones are such orders. A replay holds each racer at each statement and lets them through
in the failing order, so every round fails. The correct ``start`` serializes the checks: on
PostgreSQL it first locks a guard row ``FOR UPDATE``, on SQLite it opens with ``BEGIN
IMMEDIATE``; a racer that asks while the other holds the lock waits in the database until the
other commits, and then sees its run, so no order can fail.

Measured here, at load averages of 23 to 39 on the 2 cores (other suites running beside): 5
runs of this whole file and 6 more of the aiosqlite race, all passed. Each naive race failed in
46 to 48 of its 50 rounds (psycopg2, Django), 29 to 34 of 50 (asyncpg, SQLAlchemy: BEGIN is a
step too) and 11 or 12 of 13 (aiosqlite, whose 13 interleavings are all there are); every
replay failed 10 of 10 rounds; every correct race passed, over 15 interleavings (the whole
space) or 50. Before the idle probe counted a racer's other threads, aiosqlite's replay let the
other racer through while aiosqlite's thread ran a statement, in 3 of 5 runs. One replay of
SQLAlchemy on asyncpg failed only 8 of its 10 rounds, once, in a run during which this
checkout's code was being changed (a merge); 7 runs after it, at load averages near 50, failed
10 of 10. If it shows again, it is a defect to chase, not noise to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import psycopg2
import psycopg2.extras
import pytest

from pytest_racecheck import statements

FILE = Path(__file__).name
SOURCE = Path(__file__).read_text().splitlines()


def line(tag: str) -> str:
    """``test_drivers.py:N`` for the one line of this file that ends in ``# <tag>``."""
    [number] = [n for n, text in enumerate(SOURCE, 1) if text.endswith(f"  # {tag}")]
    return f"{FILE}:{number}"


def psycopg2_methods(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("CREATE TABLE runs (id serial PRIMARY KEY, status text)")  # p-create
    cur.executemany("INSERT INTO runs (status) VALUES (%s)", [("a",), ("b",)])  # p-many
    conn.commit()  # p-commit
    conn.commit()  # idle: nothing is sent, no point
    with conn:  # p-with
        dict_cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        dict_cur.execute("UPDATE runs SET status = 'x' RETURNING id")  # p-dict
        assert len(dict_cur.fetchall()) == 2
    with conn.cursor("named") as named:
        named.execute("SELECT status FROM runs")  # p-named
        assert named.fetchall() == [("x",)] * 2
    conn.rollback()  # p-rollback
    pid = conn.info.backend_pid
    conn.close()
    return pid


def test_every_psycopg2_statement_is_a_point_named_for_its_line(postgres_db, rec) -> None:
    pid = psycopg2_methods(postgres_db.dsn)
    assert rec.names == [
        f"CREATE TABLE runs @ {line('p-create')}",
        f"INSERT runs @ {line('p-many')}",
        f"COMMIT @ {line('p-commit')}",
        f"UPDATE runs @ {line('p-dict')}",
        f"COMMIT @ {line('p-with')}",
        f"SELECT runs @ {line('p-named')}",
        f"ROLLBACK @ {line('p-rollback')}",
    ]
    assert rec.sqls[0] == "CREATE TABLE runs (id serial PRIMARY KEY, status text)"
    assert rec.events[:2] == ["connecting", pid]


async def asyncpg_methods(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE runs (id serial PRIMARY KEY, status text)")  # a-create
    await conn.executemany("INSERT INTO runs (status) VALUES ($1)", [("a",), ("b",)])  # a-many
    async with conn.transaction():  # a-tx
        assert await conn.fetchval("SELECT count(*) FROM runs") == 2  # a-fetchval
        async with conn.transaction():  # a-inner
            await conn.fetch("UPDATE runs SET status = 'x' RETURNING id")  # a-fetch
    statement = await conn.prepare("SELECT status FROM runs WHERE id = $1")
    assert await statement.fetchrow(1) is not None  # a-prepared
    pid = conn.get_server_pid()
    await conn.close()
    return pid


def test_every_asyncpg_statement_is_a_point_named_for_its_line(postgres_db, rec) -> None:
    pid = asyncio.run(asyncpg_methods(postgres_db.uri))
    assert rec.names == [
        f"CREATE TABLE runs @ {line('a-create')}",
        f"INSERT runs @ {line('a-many')}",
        f"BEGIN @ {line('a-tx')}",
        f"SELECT runs @ {line('a-fetchval')}",
        f"SAVEPOINT @ {line('a-inner')}",
        f"UPDATE runs @ {line('a-fetch')}",
        f"RELEASE @ {line('a-inner')}",
        f"COMMIT @ {line('a-tx')}",
        f"SELECT runs @ {line('a-prepared')}",
    ]
    assert rec.sqls[0] == "CREATE TABLE runs (id serial PRIMARY KEY, status text)"
    assert rec.events[:2] == ["connecting", pid]


async def asyncpg_pool(dsn: str) -> None:
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")  # pool-acquired
        await pool.fetchval("SELECT 2")  # pool-fetchval


def test_asyncpg_pool_statements_are_points_and_its_own_are_not(postgres_db, rec) -> None:
    """A pool's connections are made through the patched ``connect`` and run the patched
    methods; the reset a pool sends when a connection comes back is asyncpg's, not a point."""
    asyncio.run(asyncpg_pool(postgres_db.uri))
    assert rec.names == [f"SELECT @ {line('pool-acquired')}", f"SELECT @ {line('pool-fetchval')}"]
    assert rec.events[0] == "connecting" and isinstance(rec.events[1], int)


async def aiosqlite_methods(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")  # s-create
        await db.execute("INSERT INTO runs (status) VALUES ('a')")  # s-insert
        await db.commit()  # s-commit
        async with db.execute("SELECT status FROM runs") as cur:  # s-select
            assert await cur.fetchall() == [("a",)]
        await db.executescript("UPDATE runs SET status = 'x'; DELETE FROM runs;")  # s-script


def test_every_aiosqlite_statement_is_a_point_on_the_loops_thread(tmp_path, rec) -> None:
    """The ``rec`` recorder takes only the points reached on this thread: aiosqlite's own
    thread runs the statements, yet every point is reached here, on the loop's."""
    asyncio.run(aiosqlite_methods(str(tmp_path / "a.sqlite3")))
    assert rec.names == [
        f"CREATE TABLE runs @ {line('s-create')}",
        f"BEGIN @ {line('s-insert')}",
        f"INSERT runs @ {line('s-insert')}",
        f"COMMIT @ {line('s-commit')}",
        f"SELECT runs @ {line('s-select')}",
        f"UPDATE runs @ {line('s-script')}",
        f"DELETE runs @ {line('s-script')}",
    ]
    assert rec.sqls[0] == "CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)"


def test_sqlalchemy_on_psycopg2_is_named_for_the_users_line(postgres_db, rec) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = postgres_db.uri.replace("postgresql://", "postgresql+psycopg2://", 1)
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # the dialect's first queries come before it
        conn.commit()
        rec.names.clear()
        with conn.begin():  # q-begin
            conn.execute(text("SELECT 2"))  # q-select
    engine.dispose()
    assert rec.names == [f"SELECT @ {line('q-select')}", f"COMMIT @ {line('q-begin')}"]


async def sqlalchemy_aiosqlite(path: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
    async with engine.connect() as conn:
        await conn.execute(text("CREATE TABLE runs (id INTEGER PRIMARY KEY)"))  # q-create
        await conn.execute(text("INSERT INTO runs DEFAULT VALUES"))  # q-insert
        await conn.commit()  # q-commit
    await engine.dispose()


def test_sqlalchemy_on_aiosqlite_is_named_for_the_users_line(tmp_path, rec) -> None:
    asyncio.run(sqlalchemy_aiosqlite(str(tmp_path / "a.sqlite3")))
    assert rec.names[-4:] == [
        f"CREATE TABLE runs @ {line('q-create')}",
        f"BEGIN @ {line('q-insert')}",
        f"INSERT runs @ {line('q-insert')}",
        f"COMMIT @ {line('q-commit')}",
    ]


def test_an_aiosqlite_statement_nobody_awaits_runs_without_a_point(tmp_path, rec) -> None:
    """aiosqlite's thread hands each statement's point to the event loop and waits; when the
    loop is not running, nobody can take the point, and the statement runs without one rather
    than wait for ever (a call whose caller has gone, a loop that stopped). Deterministic: the
    statement is queued behind a call that blocks aiosqlite's thread until the loop has
    stopped, and the check only waits for the statement's effect."""
    path = str(tmp_path / "a.sqlite3")
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(aiosqlite.connect(path, isolation_level=None))
        gate = threading.Event()
        queued = [
            loop.create_task(db._execute(gate.wait)),
            loop.create_task(db.execute("CREATE TABLE t (x)")),
        ]
        loop.run_until_complete(asyncio.sleep(0.05))  # both calls are queued, the loop stops
        gate.set()
        deadline = time.monotonic() + 30
        while not _has_table(path, "t"):
            assert time.monotonic() < deadline, "the statement waited for a loop that had stopped"
            time.sleep(0.01)
        loop.run_until_complete(asyncio.gather(*queued))
        loop.run_until_complete(db.close())
    finally:
        loop.close()
    assert [name for name in rec.names if "sqlite_master" not in name] == []  # _has_table's


def _has_table(path: str, name: str) -> bool:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            is not None
        )


def test_outside_a_race_the_drivers_reach_nothing(postgres_db, tmp_path) -> None:
    pids: list[int] = []
    statements.install(pids.append)
    try:
        psycopg2_methods(postgres_db.dsn)
        postgres_db.execute("DROP TABLE runs")
        asyncio.run(asyncpg_methods(postgres_db.uri))
        asyncio.run(aiosqlite_methods(str(tmp_path / "a.sqlite3")))
    finally:
        statements.uninstall()
    assert pids == []


IMPORTED_LATER = """
import sys
from pytest_racecheck import statements

statements.install()
assert not {"psycopg2", "asyncpg", "aiosqlite"} & set(sys.modules)
from psycopg2 import connect
import asyncpg.connection
import aiosqlite
from pytest_racecheck.statements import psycopg2_hooks

assert connect is psycopg2_hooks._traced_connect
assert hasattr(asyncpg.connect, "__wrapped__")
assert hasattr(asyncpg.connection.connect, "__wrapped__")
assert hasattr(aiosqlite.core.Connection._execute, "__wrapped__")
statements.uninstall()
assert not hasattr(aiosqlite.core.Connection._execute, "__wrapped__")
assert not hasattr(asyncpg.connect, "__wrapped__")
print("patched when imported")
"""


def test_a_driver_is_patched_when_first_imported_and_not_imported_before() -> None:
    """A racer pays the import of only the drivers its code uses (asyncpg alone takes 0.1 to
    0.5 s here); one imported after install is patched before the importer gets it."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_LATER], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "patched when imported", done.stderr


def test_uninstall_restores_the_drivers() -> None:
    connect = psycopg2.connect
    fetch = asyncpg.connection.Connection.fetch
    execute = aiosqlite.core.Connection._execute
    statements.install()
    try:
        assert psycopg2.connect is not connect
        assert asyncpg.connection.Connection.fetch is not fetch
        assert aiosqlite.core.Connection._execute is not execute
    finally:
        statements.uninstall()
    assert psycopg2.connect is connect
    assert asyncpg.connection.Connection.fetch is fetch
    assert aiosqlite.core.Connection._execute is execute


# -- races through each driver, in real racers --------------------------------------------

CREATED, REFUSED = "created", "refused"
PG_SCHEMA = """
CREATE TABLE runs (id serial PRIMARY KEY, status text NOT NULL);
CREATE TABLE run_guard (id integer PRIMARY KEY);
INSERT INTO run_guard VALUES (1);
"""
GUARD = "SELECT id FROM run_guard WHERE id = 1 FOR UPDATE"
CHECK = "SELECT count(*) FROM runs WHERE status = 'running'"
ACT = "INSERT INTO runs (status) VALUES ('running')"


def explore_replay_and_pass(
    race: Any,
    start: Callable[..., Any],
    db: Any,
    *args: Any,
    racer_setup: Callable[[], Any] | None = None,
    rounds: int = 10,
) -> None:
    """The three races every driver must pass, on ``start(*args, guarded)``:

    - naive: ``explore=50`` with 2 racers flags it, with a failing schedule;
    - that schedule, replayed for ``rounds`` rounds, fails in every round;
    - guarded: ``explore=50`` passes, having run more than one interleaving.
    """
    common: dict[str, Any] = {
        "processes": 2,
        "timeout": 120,
        "racer_setup": racer_setup,
        "reset": lambda: db.execute("DELETE FROM runs"),
        "check": lambda: db.scalar("SELECT count(*) FROM runs WHERE status = 'running'") == 1,
    }
    found = race(start, *args, False, explore=50, **common)
    with pytest.raises(AssertionError, match="replay this interleaving"):
        found.assert_exactly_one(CREATED)
    schedule = found.failing_schedule
    assert schedule is not None
    # every step is a statement named for the line of ``start`` that sent it, or a racer's
    # start where it acted outside the racer on its way to its first statement (a connect)
    parts = [part for step in schedule for part in step.split(" & ")]
    assert all(f" @ {FILE}:" in part or part[2:] == "start" for part in parts), schedule
    assert found.failing_round is not None and found.failing_round.count(CREATED) == 2
    replayed = race(start, *args, False, rounds=rounds, schedule=schedule, **common)
    assert replayed.counts(CREATED) == [2] * rounds, schedule
    passed = race(start, *args, True, explore=50, **common)
    passed.assert_exactly_one(CREATED)
    assert len(passed.rounds) > 1


def psycopg2_start(dsn: str, guarded: bool) -> str:
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            cur = conn.cursor()
            if guarded:
                cur.execute(GUARD)
            cur.execute(CHECK)
            if cur.fetchone()[0] > 0:
                return REFUSED
            cur.execute(ACT)
        return CREATED
    finally:
        conn.close()


def test_psycopg2(race, postgres_db) -> None:
    postgres_db.executescript(PG_SCHEMA)
    explore_replay_and_pass(race, psycopg2_start, postgres_db, postgres_db.dsn)


async def asyncpg_start(uri: str, guarded: bool) -> str:
    conn = await asyncpg.connect(uri)
    try:
        async with conn.transaction():
            if guarded:
                await conn.execute(GUARD)
            if await conn.fetchval(CHECK) > 0:
                return REFUSED
            await conn.execute(ACT)
        return CREATED
    finally:
        await conn.close()


def test_asyncpg(race, postgres_db) -> None:
    postgres_db.executescript(PG_SCHEMA)
    explore_replay_and_pass(race, asyncpg_start, postgres_db, postgres_db.uri)


async def aiosqlite_start(path: str, guarded: bool) -> str:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        if guarded:
            await db.execute("BEGIN IMMEDIATE")
        async with db.execute(CHECK) as cur:
            row = await cur.fetchone()
        if row is not None and row[0] > 0:
            if guarded:
                await db.execute("ROLLBACK")
            return REFUSED
        await db.execute(ACT)
        if guarded:
            await db.execute("COMMIT")
    return CREATED


def test_aiosqlite(race, sqlite_db) -> None:
    sqlite_db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
    explore_replay_and_pass(race, aiosqlite_start, sqlite_db, str(sqlite_db.path))


def django_on_psycopg2(params: dict[str, str]) -> None:
    """A racer set-up: Django on psycopg2, as where psycopg 3 is not installed."""
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # Django then takes psycopg2
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": params["dbname"],
                "HOST": params.get("host", ""),
                "PORT": params.get("port", ""),
                "USER": params.get("user", ""),
                "PASSWORD": params.get("password", ""),
            }
        },
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection

    connection.ensure_connection()
    assert connection.Database.__name__ == "psycopg2", connection.Database


def django_start(guarded: bool) -> str:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cur:
        if guarded:
            cur.execute(GUARD)
        cur.execute(CHECK)
        if cur.fetchone()[0] > 0:
            return REFUSED
        cur.execute(ACT)
    return CREATED


def test_django_on_psycopg2(race, postgres_db) -> None:
    postgres_db.executescript(PG_SCHEMA)
    setup = functools.partial(django_on_psycopg2, postgres_db.params)
    explore_replay_and_pass(race, django_start, postgres_db, racer_setup=setup)


_engine: Any = None


async def sqlalchemy_on_asyncpg(url: str) -> None:
    """A racer set-up: one engine for the racer's life, as a worker keeps one; its first
    connection (and the dialect's first queries) made here, before any round."""
    global _engine
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    _engine = create_async_engine(url)
    async with _engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def sqlalchemy_start(guarded: bool) -> str:
    from sqlalchemy import text

    async with _engine.begin() as conn:
        if guarded:
            await conn.execute(text(GUARD))
        if (await conn.execute(text(CHECK))).scalar_one() > 0:
            return REFUSED
        await conn.execute(text(ACT))
    return CREATED


def test_sqlalchemy_on_asyncpg(race, postgres_db) -> None:
    postgres_db.executescript(PG_SCHEMA)
    url = postgres_db.uri.replace("postgresql://", "postgresql+asyncpg://", 1)
    setup = functools.partial(sqlalchemy_on_asyncpg, url)
    explore_replay_and_pass(race, sqlalchemy_start, postgres_db, racer_setup=setup)


async def two_connections_at_once(path: str) -> int:
    async with aiosqlite.connect(path) as a, aiosqlite.connect(path) as b:
        counts = await asyncio.gather(a.execute_fetchall(CHECK), b.execute_fetchall(CHECK))
    return len(counts)


def test_two_aiosqlite_connections_at_once_reach_their_points_one_at_a_time(
    race, sqlite_db
) -> None:
    """Two aiosqlite threads in one racer send statements at the same time: their points are
    taken on the racer's event loop, one after the other, so explore schedules them like any
    racer's and never waits for a point that two threads reached at once."""
    sqlite_db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
    result = race(two_connections_at_once, str(sqlite_db.path), processes=2, explore=10, timeout=60)
    assert all(rnd.count(2) == 2 for rnd in result.rounds)
    for rnd in result.rounds:
        steps = [part for step in rnd.schedule for part in step.split(" & ")]
        assert sum(part.startswith("0:SELECT runs") for part in steps) == 2, rnd.schedule
        assert sum(part.startswith("1:SELECT runs") for part in steps) == 2, rnd.schedule
