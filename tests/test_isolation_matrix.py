"""``--racecheck-isolation=all``: every race test once per level, and the matrix at the end.

The inner suite races the lost update and the write skew of test_isolation.py in explore mode
with two racers (deterministic: see that module's docstring), so each cell of the matrix is
PostgreSQL's documented verdict: the counter holds from repeatable read (with its
serialization failures allowed), the doctors only at serializable. A SQLite test skips at the
levels SQLite does not have, and a test whose marker names its level runs once.
"""

from __future__ import annotations

import pytest

SUITE = """
import pytest
import psycopg
from pytest_racecheck import SerializationFailure, current_racer

EXPLORE = dict(processes=2, explore=50, seed=3, timeout=120)


def increment(db):
    with psycopg.connect(db.dsn) as conn:
        n = conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]
        conn.execute("UPDATE counter SET n = %s, commits = commits + 1 WHERE id = 1", (n + 1,))
    return "incremented"


def test_counter(race, postgres_db):
    postgres_db.executescript(
        "CREATE TABLE counter (id int PRIMARY KEY, n int, commits int);"
        "INSERT INTO counter VALUES (1, 0, 0)"
    )
    result = race(
        increment, postgres_db, **EXPLORE,
        reset=lambda: postgres_db.execute("UPDATE counter SET n = 0, commits = 0"),
        check=lambda: postgres_db.scalar("SELECT n = commits FROM counter"),
    )
    result.assert_outcomes(["incremented"], errors=[SerializationFailure])


def go_off_call(db):
    me = ("alice", "bob")[current_racer() % 2]
    with psycopg.connect(db.dsn) as conn:
        if conn.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone()[0] < 2:
            return "stayed"
        conn.execute("UPDATE doctors SET on_call = false WHERE name = %s", (me,))
    return "went off"


def test_doctors(race, postgres_db):
    postgres_db.executescript(
        "CREATE TABLE doctors (name text PRIMARY KEY, on_call boolean);"
        "INSERT INTO doctors VALUES ('alice', true), ('bob', true)"
    )
    result = race(
        go_off_call, postgres_db, **EXPLORE,
        reset=lambda: postgres_db.execute("UPDATE doctors SET on_call = true"),
        check=lambda: postgres_db.scalar("SELECT count(*) FROM doctors WHERE on_call") >= 1,
    )
    result.assert_outcomes(["went off", "stayed"], errors=[SerializationFailure])


def test_on_sqlite(race, sqlite_db):
    result = race(lambda: "ok", processes=2, rounds=2, check=lambda: sqlite_db.scalar("SELECT 1"))
    result.assert_outcomes(["ok"])


@pytest.mark.race(isolation="serializable")
def test_pinned(race, postgres_db):
    result = race(
        lambda: postgres_db.scalar("SELECT current_setting('transaction_isolation')"),
        processes=2, rounds=2,
    )
    result.assert_outcomes(["serializable"])


def test_no_race():
    pass
"""


def test_the_matrix(pytester: pytest.Pytester, postgres_server) -> None:
    pytester.makepyfile(test_matrix=SUITE)
    result = pytester.runpytest_subprocess(
        "-v",
        "-rs",
        "--racecheck-isolation=all",
        f"--racecheck-postgres-url={postgres_server.admin_dsn}",
        "--racecheck-require-postgres",
        "-p",
        "no:cacheprovider",
    )
    result.stdout.fnmatch_lines(
        [
            "*test_counter?isolation=read committed? FAILED*",
            "*test_counter?isolation=repeatable read? PASSED*",
            "*test_counter?isolation=serializable? PASSED*",
            "*test_doctors?isolation=read committed? FAILED*",
            "*test_doctors?isolation=repeatable read? FAILED*",
            "*test_doctors?isolation=serializable? PASSED*",
            "*test_on_sqlite?isolation=read committed? SKIPPED*",
            "*test_on_sqlite?isolation=repeatable read? SKIPPED*",
            "*test_on_sqlite?isolation=serializable? PASSED*",
            "*test_pinned PASSED*",
            "*test_no_race PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= racecheck isolation levels =*",
            "test * read committed * repeatable read * serializable * weakest level that held",
            "test_matrix.py::test_counter * failed * passed * passed * repeatable read",
            "test_matrix.py::test_doctors * failed * failed * passed * serializable",
            "test_matrix.py::test_on_sqlite * skipped * skipped * passed * serializable",
            "*SQLite runs every transaction serializable*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "anomaly in test_matrix.py::test_counter?isolation=read committed?: lost update "
            "*; Hermitage P4, prevented by repeatable read",
        ]
    )
    result.assert_outcomes(passed=6, failed=3, skipped=2)


def test_refusals_under_the_summary(pytester: pytest.Pytester, postgres_server) -> None:
    """A failing race whose racers the database refused gets a line under the summary; a
    passing one (refusals allowed) does not."""
    suite = (
        SUITE.replace(
            "def test_doctors(",
            "def test_counter_no_retry(race, postgres_db):\n"
            "    test_counter(race, postgres_db, errors=[])\n\n\n"
            "def test_doctors(",
        )
        .replace(
            "def test_counter(race, postgres_db):",
            "def test_counter(race, postgres_db, errors=None):",
        )
        .replace(
            'result.assert_outcomes(["incremented"], errors=[SerializationFailure])',
            'result.assert_outcomes(["incremented"], '
            "errors=[SerializationFailure] if errors is None else errors)",
        )
    )
    pytester.makepyfile(test_matrix=suite)
    result = pytester.runpytest_subprocess(
        "-k",
        "test_counter",
        "--racecheck-isolation=serializable",
        f"--racecheck-postgres-url={postgres_server.admin_dsn}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "refused by the database in test_matrix.py::test_counter_no_retry: "
            "* serialization failure: the code needs a retry loop"
        ]
    )
    result.stdout.no_fnmatch_line("refused by the database in test_matrix.py::test_counter:*")
