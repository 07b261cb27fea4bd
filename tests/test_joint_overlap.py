"""A race inside one statement, on PostgreSQL: two overlapping ``INSERT ... SELECT ... WHERE
NOT EXISTS`` (or ``MERGE ... WHEN NOT MATCHED THEN INSERT``) in autocommit.

Each racer sends one statement, so there are three interleavings: the two serial orders and
the joint step. Released together, whether both statements read before either writes was up to
timing: explore called the race exhausted after 3 rounds and passed the bug in most runs. Now
the joint step's inserts are held in the database after their snapshot (the explorer locks the
table's sequence, which ``nextval()`` needs just before the write) and let go together: the
overlap is deterministic, the bug is flagged at the joint step in every run, and the correct
form is called exhausted because nothing was left to timing. What cannot be held is counted
as timing-dependent and never called exhausted.
"""

from __future__ import annotations

import pytest

from pytest_racecheck.backends.base import Database

SCHEMA = "CREATE TABLE runs (id serial PRIMARY KEY, status text NOT NULL, owner int)"
UNIQUE = "CREATE UNIQUE INDEX one_running ON runs (status) WHERE status = 'running'"
NOT_EXISTS = (
    "INSERT INTO runs (status, owner) SELECT 'running', 1"
    " WHERE NOT EXISTS (SELECT 1 FROM runs WHERE status = 'running')"
)
MERGE = (
    "MERGE INTO runs r USING (SELECT 'running' AS status) s ON r.status = s.status"
    " WHEN NOT MATCHED THEN INSERT (status, owner) VALUES (s.status, 1)"
)
FORMS = {
    "not_exists": NOT_EXISTS,
    "merge": MERGE,
    "on_conflict": NOT_EXISTS + " ON CONFLICT (status) WHERE status = 'running' DO NOTHING",
}


def start(db: Database, form: str) -> str:
    with db.connect() as conn:  # autocommit: one statement, one point
        inserted = conn.execute(FORMS[form]).rowcount
    return "created" if inserted == 1 else "refused"


def _explore(race, db: Database, form: str, unique: bool = False, **kwargs):
    db.executescript(SCHEMA + (";" + UNIQUE if unique else ""))
    return race(
        start,
        db,
        form,
        processes=2,
        explore=50,
        timeout=120,
        reset=lambda: db.execute("DELETE FROM runs"),
        check=lambda: db.scalar("SELECT count(*) FROM runs WHERE status = 'running'") == 1,
        **kwargs,
    )


@pytest.mark.parametrize("form", ["not_exists", "merge"])
def test_a_race_inside_one_statement_is_flagged_at_its_held_joint_step(race, postgres_db, form):
    result = _explore(race, postgres_db, form)
    with pytest.raises(AssertionError, match="2 racers returned 'created'"):
        result.assert_exactly_one("created")
    assert result.failing_schedule is not None and len(result.failing_schedule) == 1
    assert " & " in result.failing_schedule[0]  # the joint step
    assert result.overlaps_held >= 1
    failing = result.failing_round
    assert failing is not None
    assert any("held after their snapshot" in line for line in failing.trace), failing.trace


def test_the_correct_form_is_exhausted_with_nothing_left_to_timing(race, postgres_db):
    result = _explore(race, postgres_db, "on_conflict", unique=True)
    result.assert_exactly_one("created")
    assert (result.exhausted, result.every_order) == (True, True)
    assert result.timing_dependent == 0 and result.overlaps_held == 1
    assert len(result.rounds) == 3  # 0 then 1, 1 then 0, both at once (held)


def test_without_a_sequence_the_joint_step_is_timing_dependent(race, postgres_db):
    """No sequence to hold: the joint step is retried with the budget and never exhausted."""
    postgres_db.executescript(
        "CREATE TABLE runs (status text NOT NULL, owner int);"
        "CREATE UNIQUE INDEX one_running ON runs (status) WHERE status = 'running'"
    )
    result = race(
        start,
        postgres_db,
        "on_conflict",
        processes=2,
        explore=8,
        timeout=120,
        reset=lambda: postgres_db.execute("DELETE FROM runs"),
    )
    result.assert_exactly_one("created")
    assert result.every_order and not result.exhausted
    assert result.overlaps_held == 0
    assert result.timing_dependent == 6  # every round after the two serial ones: the joint step
    assert len(result.rounds) == 8
    cell = _cell(result)
    assert cell.startswith("8/8 interleavings") and "every order, 6 timing-dependent" in cell


def _cell(result) -> str:
    from pytest_racecheck.results import report

    return report.rounds_cell(result.summary())
