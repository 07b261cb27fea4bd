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


def test_a_bad_level_on_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--racecheck-isolation=snapshot,serializable")
    result.stderr.fnmatch_lines(
        [
            "*--racecheck-isolation=snapshot,serializable: 'snapshot': unknown isolation "
            "level 'snapshot': use one of 'read committed', 'repeatable read', "
            "'serializable'*"
        ]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_bad_level_in_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.race(isolation="snapshot")
        def test_x(race):
            race(lambda: 1, processes=2, rounds=1).assert_outcomes([1])
        """
    )
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*unknown isolation level 'snapshot': use one of*"])
    result.assert_outcomes(failed=1)


def test_one_level_on_the_command_line(pytester: pytest.Pytester, postgres_server) -> None:
    """One level is a run-wide setting, no matrix: ids unchanged, the level applied."""
    pytester.makepyfile(
        """
        def test_x(race, postgres_db):
            query = "SELECT current_setting('transaction_isolation')"
            result = race(lambda: postgres_db.scalar(query), processes=2, rounds=1)
            result.assert_outcomes(["repeatable read"])
        """
    )
    result = pytester.runpytest_subprocess(
        "-v",
        "--racecheck-isolation=Repeatable_Read",
        f"--racecheck-postgres-url={postgres_server.admin_dsn}",
    )
    result.stdout.fnmatch_lines(["*::test_x PASSED*"])
    result.stdout.no_fnmatch_line("*racecheck isolation levels*")
