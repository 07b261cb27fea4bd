"""Races whose conflict the SQL text hides: the database does more than the statement says.

A view over the checked table, a counter kept by a trigger, a claim written as one statement
with a writable CTE, a check-then-insert inside a stored function, a marker file checked and
then created between two statements. Read from the text alone,
the racers' statements touch different tables (or nothing), commute, and explore called the
race exhausted after one interleaving while plain stress found the bug. Footprints widened by
the database's catalog (``sql/conflict.py``) make each racy shape fail and keep each safe
control passing.

Why these verdicts cannot vary: two racers, explored by the reduced search, which is
deterministic; the racy order is a reversal of the first round's serial order, reached within
the first rounds. Where the race lives inside one statement (the CTE, the function body), the
two statements are released together and held in the database after their snapshots (the
overlap hold: sequences and row locks), so the overlap is not left to timing. Each racy shape
must also never be called exhausted: ``pytest.raises`` checks the failure, and the result it
carries says how far the search got.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck.backends.base import Database


def _explore(race: Any, db: Database, attempt: Any, reset: str, check: Any) -> Any:
    return race(
        attempt,
        db,
        processes=2,
        explore=50,
        seed=1,
        timeout=180,
        reset=lambda: db.executescript(reset),
        check=check,
    )


def _flagged(race: Any, db: Database, attempt: Any, reset: str, check: Any, value: str) -> None:
    result = _explore(race, db, attempt, reset, check)
    with pytest.raises(AssertionError, match="replay this interleaving"):
        result.assert_exactly_one(value)
    # "exhausted" is said only where every order ran, the failing one among them


# -- a check through a view ------------------------------------------------------------------

VIEW_SCHEMA = """
CREATE TABLE runs (id {key}, status TEXT NOT NULL);
CREATE VIEW active_runs AS SELECT id FROM runs WHERE status = 'running';
"""


def start_through_view(db: Database) -> str:
    with db.connect() as conn:
        if conn.execute("SELECT count(*) FROM active_runs").fetchone()[0]:
            return "refused"
        try:
            conn.execute("INSERT INTO runs (status) VALUES ('running')")
        except Exception as exc:
            if "unique" in str(exc).lower():
                return "refused"
            raise
        return "created"


def _running(db: Database) -> bool:
    return db.scalar("SELECT count(*) FROM runs WHERE status = 'running'") == 1


def _key(db: Database) -> str:
    return "INTEGER PRIMARY KEY" if db.backend == "sqlite" else "SERIAL PRIMARY KEY"


def test_check_through_a_view_is_flagged(race: Any, race_db: Database) -> None:
    race_db.executescript(VIEW_SCHEMA.format(key=_key(race_db)))
    _flagged(
        race, race_db, start_through_view, "DELETE FROM runs", lambda: _running(race_db), "created"
    )


def test_check_through_a_view_with_a_partial_unique_index_passes(
    race: Any, race_db: Database
) -> None:
    race_db.executescript(
        VIEW_SCHEMA.format(key=_key(race_db))
        + "CREATE UNIQUE INDEX one_running ON runs (status) WHERE status = 'running';"
    )
    result = _explore(
        race, race_db, start_through_view, "DELETE FROM runs", lambda: _running(race_db)
    )
    result.assert_exactly_one("created")


# -- a capacity kept by a trigger ------------------------------------------------------------

SQLITE_COUNTER = """
CREATE TABLE bookings (id INTEGER PRIMARY KEY, room INTEGER NOT NULL);
CREATE TABLE room_counts (room INTEGER PRIMARY KEY, n INTEGER NOT NULL {check});
CREATE TRIGGER count_booking AFTER INSERT ON bookings
BEGIN UPDATE room_counts SET n = n + 1 WHERE room = NEW.room; END;
"""
POSTGRES_COUNTER = """
CREATE TABLE bookings (id SERIAL PRIMARY KEY, room INTEGER NOT NULL);
CREATE TABLE room_counts (room INTEGER PRIMARY KEY, n INTEGER NOT NULL {check});
CREATE FUNCTION count_booking() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE room_counts SET n = n + 1 WHERE room = NEW.room; RETURN NEW; END $$;
CREATE TRIGGER count_booking AFTER INSERT ON bookings
FOR EACH ROW EXECUTE FUNCTION count_booking();
"""
COUNTER_RESET = (
    "DELETE FROM bookings; DELETE FROM room_counts; INSERT INTO room_counts VALUES (1, 0);"
)


def book_room(db: Database) -> str:
    with db.connect() as conn:
        if conn.execute("SELECT n FROM room_counts WHERE room = 1").fetchone()[0] >= 1:
            return "full"
        try:
            conn.execute("INSERT INTO bookings (room) VALUES (1)")
        except Exception as exc:
            if "check" in str(exc).lower() or "constraint" in str(exc).lower():
                return "full"
            raise
        return "booked"


def _one_booking(db: Database) -> bool:
    return db.scalar("SELECT count(*) FROM bookings") == 1


def _counter(db: Database, check: str) -> None:
    schema = SQLITE_COUNTER if db.backend == "sqlite" else POSTGRES_COUNTER
    db.executescript(schema.format(check=check))


def test_capacity_counted_by_a_trigger_is_flagged(race: Any, race_db: Database) -> None:
    _counter(race_db, "")
    _flagged(race, race_db, book_room, COUNTER_RESET, lambda: _one_booking(race_db), "booked")


def test_capacity_counted_by_a_trigger_with_a_check_constraint_passes(
    race: Any, race_db: Database
) -> None:
    _counter(race_db, "CHECK (n <= 1)")
    result = _explore(race, race_db, book_room, COUNTER_RESET, lambda: _one_booking(race_db))
    result.assert_exactly_one("booked")


# -- a claim in one statement: a writable CTE (PostgreSQL) -----------------------------------

JOBS = "CREATE TABLE jobs (id SERIAL PRIMARY KEY, owner INTEGER);"
JOBS_RESET = "DELETE FROM jobs; INSERT INTO jobs (owner) VALUES (NULL);"
CLAIM = (
    "WITH c AS (UPDATE jobs SET owner = 1 WHERE id = (SELECT id FROM jobs WHERE owner IS NULL"
    " ORDER BY id LIMIT 1{lock}) RETURNING id) SELECT id FROM c"
)


def claim(db: Database, lock: str = "") -> str:
    with db.connect() as conn:
        row = conn.execute(CLAIM.format(lock=lock)).fetchone()
    return "claimed" if row is not None else "none left"


def test_claim_in_a_writable_cte_is_flagged(race: Any, postgres_db: Database) -> None:
    postgres_db.executescript(JOBS)
    _flagged(race, postgres_db, claim, JOBS_RESET, None, "claimed")


def test_claim_in_a_writable_cte_with_skip_locked_passes(race: Any, postgres_db: Database) -> None:
    postgres_db.executescript(JOBS)

    def skip_locked(db: Database) -> str:
        return claim(db, " FOR UPDATE SKIP LOCKED")

    _explore(race, postgres_db, skip_locked, JOBS_RESET, None).assert_exactly_one("claimed")


# -- check-then-insert inside a stored function, called through psycopg2's callproc ---------

FUNCTION = """
CREATE TABLE runs (id SERIAL PRIMARY KEY, status TEXT NOT NULL);
CREATE FUNCTION start_run() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  {lock}
  IF EXISTS (SELECT 1 FROM runs WHERE status = 'running') THEN RETURN false; END IF;
  INSERT INTO runs (status) VALUES ('running');
  RETURN true;
END $$;
"""


def call_start_run(db: Any) -> str:
    import psycopg2

    conn = psycopg2.connect(db.dsn)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.callproc("start_run")
        return "created" if cur.fetchone()[0] else "refused"
    finally:
        conn.close()


def test_check_then_insert_in_a_function_is_flagged(race: Any, postgres_db: Database) -> None:
    postgres_db.executescript(FUNCTION.format(lock=""))
    _flagged(
        race,
        postgres_db,
        call_start_run,
        "DELETE FROM runs",
        lambda: _running(postgres_db),
        "created",
    )


def test_check_then_insert_in_a_function_under_an_advisory_lock_passes(
    race: Any, postgres_db: Database
) -> None:
    postgres_db.executescript(FUNCTION.format(lock="PERFORM pg_advisory_xact_lock(42);"))
    result = _explore(
        race, postgres_db, call_start_run, "DELETE FROM runs", lambda: _running(postgres_db)
    )
    result.assert_exactly_one("created")


# -- a marker file checked and then created, between two statements --------------------------


def claim_with_a_marker(db: Database, marker: str, exclusive: bool = False) -> str:
    with db.connect() as conn:
        conn.execute("SELECT count(*) FROM runs")
        if exclusive:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return "refused"
        else:
            if os.path.exists(marker):  # a check no audit event shows
                return "refused"
            with open(marker, "w") as f:  # the act: a step of its own
                f.write("mine")
        conn.execute("INSERT INTO runs (status) VALUES ('running')")
        return "created"


def _marker_race(race: Any, db: Database, marker: Path, exclusive: bool) -> Any:
    db.executescript(VIEW_SCHEMA.format(key=_key(db)))

    def reset() -> None:
        marker.unlink(missing_ok=True)
        db.execute("DELETE FROM runs")

    return race(
        claim_with_a_marker,
        db,
        str(marker),
        exclusive,
        processes=2,
        explore=50,
        seed=1,
        timeout=180,
        reset=reset,
        check=lambda: _running(db),
    )


def test_marker_file_checked_then_created_is_flagged(
    race: Any, race_db: Database, tmp_path: Path
) -> None:
    result = _marker_race(race, race_db, tmp_path / "claimed", exclusive=False)
    with pytest.raises(AssertionError, match="replay this interleaving"):
        result.assert_exactly_one("created")


def test_marker_file_created_with_o_excl_passes(
    race: Any, race_db: Database, tmp_path: Path
) -> None:
    _marker_race(race, race_db, tmp_path / "claimed", exclusive=True).assert_exactly_one("created")


# -- a database whose catalog could not be read ----------------------------------------------


def test_a_catalog_that_cannot_be_read_is_reported_not_guessed(tmp_path: Path) -> None:
    """What explore's controller reads before each round: a database whose catalog cannot be
    read (here a file that is not a database) is named in ``unread``, which keeps the race
    from being called exhausted; a readable one is read."""
    from pytest_racecheck import database
    from pytest_racecheck.controller.catalogs import RaceCatalogs

    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database, " * 64)
    catalogs = RaceCatalogs([database(str(broken))])
    assert catalogs() == {}
    assert catalogs.unread and "sqlite" in catalogs.unread[0]

    good = tmp_path / "good.sqlite3"
    database(str(good)).executescript("CREATE TABLE t (x INTEGER);")
    readable = RaceCatalogs([database(str(good))])
    assert "t" in readable()["sqlite"].tables
    assert readable.unread == []
