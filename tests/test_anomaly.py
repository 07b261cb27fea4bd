"""Naming the anomaly of a failing round, from real racers on both databases.

Each test races a small function that has one standard shape of bug, in explore mode with two
racers. Why the verdicts cannot vary: with two racers the search is exhaustive and
deterministic, serial orders first, then orders with one switch, so the first failing
interleaving is always the same one and comes within a few rounds (see test_explore.py). Every
function here is correct when run alone (the serial orders pass), so the failure is the
interleaving's; the test then checks that the failing round is named for its shape, in the
result's summary (the JSON report's data) and in the assertion's message. Statements are sent
with literal values (ints the test chose), so one text serves both databases.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_racecheck.backends.base import Database
from pytest_racecheck.processes.racer import current_racer
from pytest_racecheck.results import anomaly


def _sqlite(db: Database) -> bool:
    return db.url.startswith("sqlite")


def _runs(db: Database) -> None:
    key = "INTEGER PRIMARY KEY" if _sqlite(db) else "SERIAL PRIMARY KEY"
    db.executescript(f"CREATE TABLE runs (id {key}, status TEXT)")


def _explore(race: Any, db: Database, fn: Any, *args: Any, check: Any, reset: Any) -> Any:
    result = race(
        fn, db, *args, processes=2, explore=40, seed=1, timeout=120, reset=reset, check=check
    )
    with pytest.raises(AssertionError, match="expected every racer to return one of") as failure:
        result.assert_outcomes(["done", "busy", "skipped"])
    return result.summary()["first_failure"], str(failure.value)


def _one(db: Database, sql: str) -> Any:
    return db.shared_connection().execute(sql).fetchone()[0]


# phantom: check, then insert -------------------------------------------------------------


def check_then_insert(db: Database) -> str:
    if _one(db, "SELECT count(*) FROM runs WHERE status = 'running'") == 0:
        db.shared_connection().execute("INSERT INTO runs (status) VALUES ('running')")
        return "done"
    return "skipped"


def test_phantom_is_named(race: Any, race_db: Database) -> None:
    _runs(race_db)
    data, message = _explore(
        race,
        race_db,
        check_then_insert,
        reset=lambda: race_db.execute("DELETE FROM runs"),
        check=lambda: race_db.scalar("SELECT count(*) FROM runs") == 1,
    )
    assert data["anomaly"]["name"] == anomaly.PHANTOM
    assert "anomaly: phantom (Adya G2" in message
    assert data["anomaly"]["marked"] is not None


# lost update: read a row, write it back --------------------------------------------------


def read_modify_write(db: Database) -> str:
    balance = _one(db, "SELECT balance FROM accounts WHERE id = 1")
    db.shared_connection().execute(f"UPDATE accounts SET balance = {balance + 10} WHERE id = 1")
    return "done"


def test_lost_update_is_named(race: Any, race_db: Database) -> None:
    race_db.executescript("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
    data, message = _explore(
        race,
        race_db,
        read_modify_write,
        reset=lambda: race_db.executescript(
            "DELETE FROM accounts; INSERT INTO accounts VALUES (1, 0)"
        ),
        check=lambda: race_db.scalar("SELECT balance FROM accounts WHERE id = 1") == 20,
    )
    assert data["anomaly"]["name"] == anomaly.LOST_UPDATE, data["anomaly"]
    assert "anomaly: lost update" in message


# write skew: both read the rota, each takes itself off ------------------------------------


def go_off_call(db: Database) -> str:
    me = ("alice", "bob")[current_racer() or 0]
    if _one(db, "SELECT count(*) FROM rota WHERE on_call = 1") >= 2:
        db.shared_connection().execute(f"UPDATE rota SET on_call = 0 WHERE name = '{me}'")
        return "done"
    return "skipped"


def test_write_skew_is_named(race: Any, race_db: Database) -> None:
    race_db.executescript("CREATE TABLE rota (name TEXT PRIMARY KEY, on_call INTEGER)")
    data, message = _explore(
        race,
        race_db,
        go_off_call,
        reset=lambda: race_db.executescript(
            "DELETE FROM rota; INSERT INTO rota VALUES ('alice', 1), ('bob', 1)"
        ),
        check=lambda: race_db.scalar("SELECT count(*) FROM rota WHERE on_call = 1") >= 1,
    )
    assert data["anomaly"]["name"] == anomaly.WRITE_SKEW, data["anomaly"]
    assert "anomaly: write skew" in message


# stale read: an order placed on a shop that had closed -----------------------------------


def close_or_order(db: Database) -> str:
    conn = db.shared_connection()
    if current_racer() == 1:
        conn.execute("UPDATE shop SET open = 0 WHERE id = 1")
        conn.execute("INSERT INTO events (kind) VALUES ('closed')")
        return "done"
    if _one(db, "SELECT open FROM shop WHERE id = 1") == 1:
        conn.execute("INSERT INTO events (kind) VALUES ('order')")
        return "done"
    return "skipped"


def _ordered_after_closing(db: Database) -> bool:
    return not db.scalar(
        "SELECT count(*) FROM events o, events c "
        "WHERE o.kind = 'order' AND c.kind = 'closed' AND o.id > c.id"
    )


def test_stale_read_is_named(race: Any, race_db: Database) -> None:
    key = "INTEGER PRIMARY KEY" if _sqlite(race_db) else "SERIAL PRIMARY KEY"
    race_db.executescript(
        "CREATE TABLE shop (id INTEGER PRIMARY KEY, open INTEGER);"
        f"CREATE TABLE events (id {key}, kind TEXT)"
    )
    data, message = _explore(
        race,
        race_db,
        close_or_order,
        reset=lambda: race_db.executescript(
            "DELETE FROM shop; DELETE FROM events; INSERT INTO shop VALUES (1, 1)"
        ),
        check=lambda: _ordered_after_closing(race_db),
    )
    assert data["anomaly"]["name"] == anomaly.STALE_READ, data["anomaly"]
    assert "anomaly: stale read" in message


# lock released before commit --------------------------------------------------------------


def locked_check_then_insert(db: Database, locks: Database | None) -> str:
    """Check and insert under a lock, but release the lock before the commit. On PostgreSQL
    the lock is a session advisory lock (a racer waits for it); on SQLite a row in a lock
    table of another database file (a racer that finds it taken bails out)."""
    conn = db.shared_connection()
    if locks is None:
        conn.execute("SELECT pg_advisory_lock(42)")
    else:
        taken = locks.shared_connection().execute(
            "INSERT INTO locks (name) VALUES ('runs') ON CONFLICT DO NOTHING"
        )
        if taken.rowcount == 0:
            return "busy"
    found = _one(db, "SELECT count(*) FROM runs WHERE status = 'running'")
    conn.execute("BEGIN")
    if not found:
        conn.execute("INSERT INTO runs (status) VALUES ('running')")
    if locks is None:
        conn.execute("SELECT pg_advisory_unlock(42)")
    else:
        locks.shared_connection().execute("DELETE FROM locks WHERE name = 'runs'")
    conn.execute("COMMIT")
    return "skipped" if found else "done"


def test_lock_released_before_commit_is_named(
    race: Any, race_db: Database, make_sqlite_db: Any
) -> None:
    _runs(race_db)
    locks = None
    if _sqlite(race_db):
        locks = make_sqlite_db()
        locks.executescript("CREATE TABLE locks (name TEXT PRIMARY KEY)")
    data, message = _explore(
        race,
        race_db,
        locked_check_then_insert,
        locks,
        reset=lambda: race_db.execute("DELETE FROM runs"),
        check=lambda: race_db.scalar("SELECT count(*) FROM runs") <= 1,
    )
    assert data["anomaly"]["name"] == anomaly.LOCK_RELEASED_EARLY, data["anomaly"]
    assert "anomaly: lock released before commit" in message


# none of them ------------------------------------------------------------------------------


def blind_insert(db: Database) -> str:
    db.shared_connection().execute("INSERT INTO runs (status) VALUES ('running')")
    return "done"


def test_a_failure_of_no_standard_shape_is_unclassified(race: Any, race_db: Database) -> None:
    _runs(race_db)
    data, message = _explore(
        race,
        race_db,
        blind_insert,
        reset=lambda: race_db.execute("DELETE FROM runs"),
        check=lambda: race_db.scalar("SELECT count(*) FROM runs") == 1,
    )
    assert data["anomaly"]["name"] == anomaly.UNCLASSIFIED
    assert data["anomaly"]["marked"] is None
    assert "anomaly: unclassified" in message


# From plain data: the same statements in a serial order name nothing --------------------


def _racer(number: int, statements: list[tuple[str, float]], error: str | None = None) -> Any:
    steps = [
        {"name": sql, "sql": sql, "conn": 0, "at_ms": at, "held_ms": 0.0, "ran_ms": 0.5}
        for sql, at in statements
    ]
    end = statements[-1][1] + 1.0
    return {"racer": number, "released_ms": 0.0, "took_ms": end, "error": error, "steps": steps}


READ = "SELECT count(*) FROM runs WHERE status = 'running'"
INSERT = "INSERT INTO runs (status) VALUES ('running')"


def test_the_interleaved_check_then_insert_is_a_phantom() -> None:
    rnd = {"racers": [_racer(0, [(READ, 0), (INSERT, 2)]), _racer(1, [(READ, 1), (INSERT, 3)])]}
    named = anomaly.classify(rnd)
    assert named["name"] == anomaly.PHANTOM
    assert named["marked"] == [1, 1]  # the second insert, which made the two rows


def test_the_same_statements_run_serially_name_nothing() -> None:
    rnd = {"racers": [_racer(0, [(READ, 0), (INSERT, 1)]), _racer(1, [(READ, 3), (INSERT, 4)])]}
    assert anomaly.classify(rnd)["name"] == anomaly.UNCLASSIFIED


def test_an_insert_that_raised_wrote_nothing() -> None:
    rnd = {
        "racers": [
            _racer(0, [(READ, 0), (INSERT, 2)]),
            _racer(1, [(READ, 1), (INSERT, 3)], error="IntegrityError: duplicate key"),
        ]
    }
    assert anomaly.classify(rnd)["name"] == anomaly.UNCLASSIFIED


def test_an_uncommitted_transaction_wrote_nothing() -> None:
    rnd = {
        "racers": [
            _racer(0, [(READ, 0), (INSERT, 2)]),
            _racer(1, [("BEGIN", 0.5), (READ, 1), (INSERT, 3), ("ROLLBACK", 4)]),
        ]
    }
    assert anomaly.classify(rnd)["name"] == anomaly.UNCLASSIFIED


def test_statement_effects() -> None:
    from pytest_racecheck.sql.effects import effect, same_rows
    from pytest_racecheck.statements.psycopg_hooks import bound_text

    update = effect("UPDATE accounts SET balance = 5 WHERE id = 1")
    assert (update.kind, update.table, update.rows) == ("update", "accounts", (("id", "1"),))
    assert effect("SELECT pg_advisory_unlock(42)").kind == "unlock"
    assert effect("INSERT INTO runs SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM runs)").reads
    assert same_rows((("id", "1"),), (("id", "2"),)) is False
    assert same_rows((("id", "1"),), (("name", "'a'"),)) is None
    assert bound_text("WHERE id = %s AND name = %s", (1, "o'k")) == "WHERE id = 1 AND name = 'o''k'"
