"""Explore runs one interleaving per Mazurkiewicz trace on families whose trace count is known.

Two interleavings are the same trace when they differ only in the order of statements that
commute; the reduced search should run each trace once and stop, exhausted. On these program
families (real racers, real PostgreSQL, autocommit updates by primary key) the number of traces
is known in closed form, so the count of rounds is an oracle that does not share the search's
assumptions: independent racers 1; two racers each updating the same N rows 2^N; two racers
updating one row N times C(2N, N); N racers with one update each of one row N!.

Why the counts cannot vary: the search is deterministic, and every statement here is an
UPDATE by primary key outside any transaction, which waits for no lock another racer holds
between steps (each commits at once), so no round depends on timing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pytest_racecheck.backends.base import Database

SCHEMA = """
CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE u (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
"""
RESET = (
    "DELETE FROM t; DELETE FROM u; INSERT INTO t SELECT g, 0 FROM generate_series(1, 4) g;"
    " INSERT INTO u SELECT g, 0 FROM generate_series(1, 4) g;"
)


def updates(db: Any, table: str, rows: list[int]) -> str:
    with db.connect() as conn:
        for row in rows:
            conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = {row}")
    return "done"


def own_table(db: Any) -> str:
    from pytest_racecheck import current_racer

    return updates(db, "t" if current_racer() == 0 else "u", [1, 2, 3])


FAMILIES = [
    pytest.param(2, own_table, (), 1, id="independent racers: 1"),
    pytest.param(2, updates, ("t", [1, 2, 3]), 2**3, id="2 racers, the same 3 rows: 2^3"),
    pytest.param(
        2, updates, ("t", [1, 1, 1]), math.comb(6, 3), id="2 racers, 1 row 3 times: C(6,3)"
    ),
    pytest.param(3, updates, ("t", [1]), math.factorial(3), id="3 racers, 1 update of 1 row: 3!"),
]


@pytest.mark.parametrize(("processes", "fn", "args", "traces"), FAMILIES)
def test_one_interleaving_per_trace(
    race: Any, postgres_db: Database, processes: int, fn: Any, args: tuple[Any, ...], traces: int
) -> None:
    postgres_db.executescript(SCHEMA)
    result = race(
        fn,
        postgres_db,
        *args,
        processes=processes,
        explore=200,
        seed=1,
        timeout=300,
        reset=lambda: postgres_db.executescript(RESET),
    )
    result.assert_outcomes(["done"])
    assert result.exhausted, result.explored()
    assert len(result.rounds) == traces, result.explored()
