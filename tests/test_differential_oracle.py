"""The differential oracle: explore's reduced search reaches every outcome the full enumeration
reaches, on real SQLite and PostgreSQL (issue 24, item 7).

Each test races the first programs of one family (``tests/oracle/programs.py``, seeded: the
same programs on every machine) twice on its database: under the reduced search and under the
full enumeration of every one-racer-at-a-time interleaving (``tests/oracle/runner.py``). It
fails when the full enumeration reached an outcome set (every racer's return value, the tables
and marker files the round left) that the reduced search did not, or when a search was not
exhausted (such a program proves nothing: the programs here are small enough to be exhausted).

Why the verdict is deterministic, also on a loaded machine: racers run one at a time, each
held before every statement until the search lets it go, so a round's outcomes are a function
of the order the search chose; a racer that waits on a lock is told apart from a slow one by
asking the database (``pg_blocking_pids``) or by its sleeping in the kernel with no CPU time
spent, never by a timeout, so a loaded machine makes a round slower, not different. The
programs leave out every shape whose outcome depends on timing inside the database (two
statements released together, deadlocks: see the module docstring of ``oracle.programs``);
the benchmark ``benchmarks/differential_oracle.py --repeat-full`` runs each full enumeration
twice and counts programs whose two runs differ. Both searches walk a finite tree of choices
to its end, so what each reaches is the same set however long it takes.

Families whose statements do more than their text says (views, triggers, cascading foreign
keys, unique constraints across rows, writable CTEs, marker files between statements) are
marked ``xfail(strict=True, raises=AssertionError)`` where today's text-only footprints miss
an interleaving among their programs here: they turn into a failing XPASS once explore reads
the database's catalog, and the mark should then go.
"""

from __future__ import annotations

from typing import Any

import pytest
from oracle.programs import Program, RacerProgram, Step, create_schema, families, programs
from oracle.runner import Verdict, compare

PROGRAMS_PER_FAMILY = 5
"""Programs a family races in the suite, per database: 70 programs, 93 s for both databases
on this project's 2-core machine at a load average of 11 to 14 (other suites running; measured
2026-12-05: 3 a family took 23 s at a load of 5 and 118 s at 22). The benchmark
``benchmarks/differential_oracle.py`` runs hundreds."""
MAX_ORDERS = 20
"""The suite's programs have at most this many interleavings (the benchmark's, 90)."""

BLIND_TODAY: dict[tuple[str, str], str] = {
    ("sqlite", "trigger"): "a write of bookings writes booked through its trigger",
    ("postgres", "trigger"): "a write of bookings writes booked through its trigger",
    ("sqlite", "view"): "a read of items_v or items_vv reads items",
    ("postgres", "view"): "a read of items_v or items_vv reads items",
    ("sqlite", "fk"): "deleting a parent deletes its children (ON DELETE CASCADE)",
    ("postgres", "fk"): "deleting a parent deletes its children (ON DELETE CASCADE)",
    ("postgres", "unique"): "two updates of different rows collide on the unique email",
    ("postgres", "cte"): "a writable CTE's UPDATE or DELETE is a write",
    ("sqlite", "file"): "a marker file touched between two statements is no step",
    ("postgres", "file"): "a marker file touched between two statements is no step",
}
"""Where the text-only footprints miss an interleaving among the suite's programs today. Not
here, and passing today: ``unique`` on SQLite (every write there conflicts with every other,
one write lock) and ``function`` on PostgreSQL (a call of a function the parser does not know
conflicts with everything)."""


def _cases() -> list[Any]:
    cases = []
    for backend in ("sqlite", "postgres"):
        for family in families(backend):
            why = BLIND_TODAY.get((backend, family))
            marks = (
                [
                    pytest.mark.xfail(
                        strict=True,
                        raises=AssertionError,
                        reason=f"footprints from the SQL text alone: {why} (issue 24, item 1, 5)",
                    )
                ]
                if why
                else []
            )
            cases.append(pytest.param(backend, family, marks=marks, id=f"{backend}-{family}"))
    return cases


def _database(request: pytest.FixtureRequest, backend: str) -> Any:
    db = request.getfixturevalue(f"{backend}_db")
    create_schema(db)
    return db


def _judge(verdicts: list[Verdict]) -> None:
    skipped = [v for v in verdicts if v.skipped]
    missed = [v for v in verdicts if v.mismatch]
    problems = [
        *(f"not exhausted (proves nothing):\n{v.explain()}" for v in skipped),
        *(f"MISMATCH:\n{v.explain()}" for v in missed),
    ]
    assert not problems, (
        f"{len(missed)} of {len(verdicts)} programs reached outcomes under the full "
        f"enumeration that the reduced search never reached, {len(skipped)} not exhausted:\n"
        + "\n".join(problems)
    )


@pytest.mark.parametrize(("backend", "family"), _cases())
def test_reduced_search_reaches_every_outcome(
    request: pytest.FixtureRequest, tmp_path: Any, backend: str, family: str
) -> None:
    """Per family and database: no outcome set of the full enumeration is missed."""
    db = _database(request, backend)
    workdir = tmp_path / "files"
    workdir.mkdir()
    sample = programs(family, backend, PROGRAMS_PER_FAMILY, max_orders=MAX_ORDERS)
    _judge([compare(p, db, str(workdir)) for p in sample])


def _check_then_insert(backend: str) -> Program:
    racer = [
        RacerProgram(
            (
                Step("sql", "SELECT count(*) FROM items WHERE name = 'c'"),
                Step("sql", f"INSERT INTO items (id, name) VALUES ({10 + i}, 'c')"),
            )
        )
        for i in range(2)
    ]
    return Program("plain", backend, -1, tuple(racer))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_oracle_can_fail(request: pytest.FixtureRequest, tmp_path: Any, backend: str) -> None:
    """A reduction told that no two statements conflict runs one interleaving of a
    check-then-insert: the oracle must call that a mismatch (both racers seeing no row and
    both inserting is reached by the full enumeration only), while the real reduced search
    reaches everything the full enumeration does."""
    db = _database(request, backend)
    workdir = tmp_path / "files"
    workdir.mkdir()
    program = _check_then_insert(backend)
    blind = compare(program, db, str(workdir), ("blind", "full"))
    assert not blind.skipped, blind.explain()
    assert blind.mismatch, blind.explain()
    both_inserted = (("[(0,)]", "1 row(s)"), ("[(0,)]", "1 row(s)"))
    assert both_inserted in {outcomes for outcomes, _ in blind.missed()}, blind.explain()
    _judge([compare(program, db, str(workdir))])
