"""A project's own database, not made by the plugin: ``pytest_racecheck.database(...)``.

Why the meeting verdicts cannot vary: ``B`` takes the write lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL a table lock) before its check, so while the first racer is held at ``checked`` the
others wait on that lock. The race is handed the handle, so it asks that database who waits;
the meeting opens and exactly one run is created in every round. Without the probe the
meeting could only wait for the timeout, which these races would reach.
"""

from __future__ import annotations

import sqlite3

import pytest

from pytest_racecheck import database, runs
from pytest_racecheck.backends.base import Database


def test_database_understands_paths_and_urls(tmp_path) -> None:
    path = tmp_path / "app.sqlite3"
    assert database(path).path == str(path)  # type: ignore[attr-defined]
    assert database(f"sqlite:///{path}").path == str(path)  # type: ignore[attr-defined]
    assert database(str(path)).backend == "sqlite"
    assert database(f"file:{path}?mode=rw").path == str(path)  # type: ignore[attr-defined]
    assert database(f"file://{path}").path == str(path)  # type: ignore[attr-defined]
    assert database(path).journal_mode == "unknown"  # type: ignore[attr-defined]
    assert not path.exists()  # a handle touches nothing
    pg = database("postgresql+psycopg://app:secret@db.example:5433/app")
    assert (pg.backend, pg.name) == ("postgres", "app")  # type: ignore[attr-defined]
    assert "secret" not in repr(pg)
    assert database("host=/run/postgresql dbname=jobs").name == "jobs"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "needs a SQLite path or a PostgreSQL URL"),
        ("sqlite:///:memory:", "in-memory SQLite database is private to one process"),
        ("file:memorydb_default?mode=memory&cache=shared", "in-memory SQLite database is private"),
        ("mysql://u@h/db", "'mysql' URLs are not supported"),
        ("/no/such/directory/app.db", "no directory"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        database(target)


def _meeting_opens_every_round(race, db: Database, fn, *args) -> None:
    """B, held at ``checked``: exactly one run per round, the others seen waiting on the lock
    (without that the meeting could only wait for the timeout)."""
    runs.create_schema(db)
    result = race(
        fn,
        *args,
        processes=3,
        rounds=3,
        meet_at="checked",
        timeout=60,
        reset=lambda: runs.reset(db),
        check=lambda: runs.active_count(db) == 1,
    )
    result.assert_exactly_one(runs.CREATED)
    assert all(r.waited_on_lock for r in result.rounds)
    db.close()


def test_own_sqlite_file_holds_a_meeting_with_correct_locking(race, tmp_path) -> None:
    path = tmp_path / "app.sqlite3"
    sqlite3.connect(path).close()  # the project made this file, not the plugin
    db = database(path)
    _meeting_opens_every_round(race, db, runs.B, db)


OWN_SERVER_TEST = """
import os

from pytest_racecheck import database, runs


def test_own_postgres(race):
    db = database(os.environ["OWN_DATABASE_URL"])
    runs.create_schema(db)
    result = race(
        runs.B,
        db,
        processes=3,
        rounds=3,
        meet_at="checked",
        timeout=60,
        reset=lambda: runs.reset(db),
        check=lambda: runs.active_count(db) == 1,
    )
    result.assert_exactly_one(runs.CREATED)
    assert all(r.waited_on_lock for r in result.rounds)
    db.close()
"""


def test_own_postgres_database_holds_a_meeting_with_correct_locking(
    pytester: pytest.Pytester, postgres_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inner run knows only a URL: no fixture of the plugin made its database."""
    own = "own_app_db"
    with postgres_db.connect() as conn:
        conn.execute(f"CREATE DATABASE {own}")
    try:
        url = postgres_db.with_params(dbname=own).dsn  # type: ignore[attr-defined]
        monkeypatch.setenv("OWN_DATABASE_URL", url)
        pytester.makepyfile(OWN_SERVER_TEST)
        pytester.runpytest_subprocess().assert_outcomes(passed=1)
    finally:
        with postgres_db.connect() as conn:
            conn.execute(f"DROP DATABASE {own} WITH (FORCE)")


def _start_from_settings() -> str:
    """Code that finds its database itself, as a service reads its settings."""
    import os

    return runs.B(database(os.environ["APP_DATABASE"]))


def test_a_handle_only_check_uses_is_enough(race, tmp_path, monkeypatch) -> None:
    """The raced function gets no handle; ``check`` and ``reset`` use one, and the race asks
    that database who waits: the meeting opens in every round, with no timeout."""
    path = tmp_path / "app.sqlite3"
    sqlite3.connect(path).close()
    monkeypatch.setenv("APP_DATABASE", str(path))  # racers inherit the environment
    _meeting_opens_every_round(race, database(path), _start_from_settings)
