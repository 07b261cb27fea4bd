"""Statement footprints: what explore's reduced search believes a statement reads and writes."""

from __future__ import annotations

from pytest_racecheck.sql.conflict import may_overlap, step_footprint
from pytest_racecheck.sql.footprint import dependent
from pytest_racecheck.sql.statement import footprint

MERGE = (
    "MERGE INTO runs r USING (SELECT 'running' AS status) s ON r.status = s.status"
    " WHEN NOT MATCHED THEN INSERT (status, owner) VALUES (s.status, 1)"
)
NOT_EXISTS = (
    "INSERT INTO runs (status) SELECT 'running'"
    " WHERE NOT EXISTS (SELECT 1 FROM runs WHERE status = 'running')"
)


def test_reads_of_a_table_nobody_writes_commute_with_writes_elsewhere() -> None:
    settings = footprint("SELECT value FROM settings WHERE key = 'mode'")
    insert = footprint("INSERT INTO runs (status) VALUES ('running')")
    assert not dependent(settings, insert)
    assert dependent(footprint("SELECT count(*) FROM runs"), insert)


def test_a_merge_acts_on_what_it_read_and_may_race_inside_itself() -> None:
    merge = footprint(MERGE)
    assert not merge.everything and merge.reads_then_writes
    assert dependent(merge, footprint("SELECT * FROM runs"))
    assert not dependent(merge, footprint("SELECT * FROM settings"))
    held = step_footprint(MERGE, "postgresql")
    assert may_overlap(held, held)
    assert may_overlap(held, step_footprint(NOT_EXISTS, "postgresql"))
    # SQLite runs one writer at a time, and inside a transaction writes show at COMMIT
    assert not may_overlap(*(2 * [step_footprint(MERGE, "sqlite")]))
    assert not may_overlap(*(2 * [step_footprint(MERGE, "postgresql", in_transaction=True)]))


def test_what_the_parser_does_not_know_conflicts_with_everything() -> None:
    assert footprint("VACUUM").everything
    assert footprint("SELECT * FROM runs FOR UPDATE").everything
    assert footprint("").everything  # a user's point()
