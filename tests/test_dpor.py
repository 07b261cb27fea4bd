"""Explore's reduced search (DPOR) on a model of racers: it reaches every outcome that full
enumeration reaches, in fewer rounds.

No process runs here: the subject is the choice logic. A racer of the model is a list of SQL
statements; their footprints come from the real :mod:`pytest_racecheck.sql.footprint`, and the
model gives each statement a meaning on a tiny database of cells (table, key) -> value, so that
reordering two conflicting statements really can change what racers read and what is left.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from pytest_racecheck.explore.count import count_interleavings
from pytest_racecheck.explore.dpor import DPOR
from pytest_racecheck.wire.messages import Statement

Program = list[list[str]]
KEYS = (1, 2)


def read_sql(table: str, key: int | None) -> str:
    return f"SELECT v FROM {table}" + (f" WHERE k = {key}" if key is not None else "")


def write_sql(table: str, key: int | None) -> str:
    return f"UPDATE {table} SET v = 1" + (f" WHERE k = {key}" if key is not None else "")


def read_write_sql(table: str, key: int | None) -> str:
    """Reads through a query, then writes, in one statement: two at once can both read the old
    value (as two INSERT ... WHERE NOT EXISTS can)."""
    where = f" WHERE k = {key}" if key is not None else ""
    return f"UPDATE {table} SET v = (SELECT max(v) FROM {table}{where}){where}"


PARSE = {}


def meaning(sql: str) -> tuple[str, str | None, tuple[int, ...]]:
    """(kind, table, keys) of a model statement."""
    if sql in PARSE:
        return PARSE[sql]
    if sql == "COMMIT":
        result: tuple[str, str | None, tuple[int, ...]] = ("commit", None, ())
    else:
        kind = "read" if sql.startswith("SELECT") else "rw" if "max(v)" in sql else "write"
        table = sql.split()[3] if kind == "read" else sql.split()[1]
        keys = (int(sql.rsplit(" ", 1)[1]),) if sql.endswith(("1", "2")) else KEYS
        result = (kind, table, keys)
    PARSE[sql] = result
    return result


class Model:
    """The model database and racers' logs; a step runs one statement of each racer named."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.position = [0] * len(program)
        self.cells: dict[tuple[str, int], int] = {}
        self.logs: list[list[object]] = [[] for _ in program]
        self.starts: list[int] = []
        """Who took the shared file lock (a start that acts outside: ``START!``), in order."""

    def enabled(self) -> list[int]:
        return [r for r, ops in enumerate(self.program) if self.position[r] < len(ops)]

    def next_sql(self, racer: int) -> str:
        return self.program[racer][self.position[racer]]

    def step(self, racers: Sequence[int]) -> None:
        """Several racers at once: every read sees the state before, then the writes land."""
        before = dict(self.cells)
        writes = []
        for racer in racers:
            if self.next_sql(racer).startswith(START):
                if self.next_sql(racer) == START_OUTSIDE:
                    self.starts.append(racer)
                self.position[racer] += 1
                continue
            kind, table, keys = meaning(self.next_sql(racer))
            if kind == "commit" or table is None:
                self.logs[racer].append(tuple(sorted(before.items())))
            elif kind == "read":
                self.logs[racer].append(tuple(before.get((table, k)) for k in keys))
            else:
                seen = tuple(before.get((table, k)) for k in keys) if kind == "rw" else ()
                value = hash((racer, tuple(self.logs[racer]), seen)) % 1000
                writes += [((table, k), value) for k in keys]
            self.position[racer] += 1
        for cell, value in writes:
            self.cells[cell] = value

    def outcome(self) -> tuple[object, ...]:
        cells = tuple(sorted(self.cells.items()))
        return (cells, tuple(tuple(log) for log in self.logs), tuple(self.starts))


def all_outcomes(program: Program) -> set[tuple[object, ...]]:
    """Every outcome of every interleaving (single steps and pairs), by brute force over the
    model's states (a state reached twice is walked once)."""
    seen: set[tuple[object, ...]] = set()
    visited: set[tuple[object, ...]] = set()

    def walk(model: Model) -> None:
        key = (tuple(model.position), model.outcome())
        if key in visited:
            return
        visited.add(key)
        enabled = model.enabled()
        if not enabled:
            seen.add(model.outcome())
            return
        choices = [(a,) for a in enabled] + [(a, b) for a in enabled for b in enabled if b > a]
        for choice in choices:
            child = Model(program)
            child.position = list(model.position)
            child.cells = dict(model.cells)
            child.logs = [list(log) for log in model.logs]
            child.starts = list(model.starts)
            child.step(choice)
            walk(child)

    walk(Model(program))
    return seen


def search_outcomes(search: DPOR, program: Program, limit: int = 100_000) -> list[object]:
    """Drive ``search`` over the model, one round per interleaving, until it is done."""
    outcomes = []
    for _ in range(limit):
        search.begin()
        model = Model(program)
        previous: int | None = None
        let_go: set[int] = set()
        while enabled := model.enabled():
            for racer in enabled:
                op = model.next_sql(racer)
                if op.startswith(START):  # the round's start: what it did is told after it
                    search.arrived(racer, None, start=True)
                    continue
                if racer in let_go:
                    let_go.discard(racer)
                    search.started(racer, model.program[racer][0] == START_OUTSIDE)
                search.arrived(racer, Statement(op))
            choice = search.choose(enabled, previous)
            let_go |= {r for r in choice if model.next_sql(r).startswith(START)}
            assert choice and set(choice) <= set(enabled)
            model.step(choice)
            previous = choice[0] if len(choice) == 1 else None
        search.end()
        outcomes.append(model.outcome())
        if search.done():
            return outcomes
    raise AssertionError("the search did not finish")


START = "START"
"""A model racer's start that does nothing outside it; ``START!`` takes a shared file lock."""
START_OUTSIDE = "START!"


def random_program(rng: random.Random, racers: int, starts: bool = False) -> Program:
    program = []
    for _ in range(racers):
        ops = [rng.choice([START, START_OUTSIDE])] if starts else []
        for _ in range(rng.randint(2, 4)):
            roll = rng.random()
            table = rng.choice(["a", "b", "c"])
            key = rng.choice([1, 2, None])
            if roll < 0.1:
                ops.append("COMMIT")
            elif roll < 0.5:
                ops.append(read_sql(table, key))
            elif roll < 0.75:
                ops.append(read_write_sql(table, key))
            else:
                ops.append(write_sql(table, key))
        program.append(ops)
    return program


@pytest.mark.parametrize("starts", [False, True], ids=["statements", "with-starts"])
@pytest.mark.parametrize("racers", [2, 3])
def test_reduction_reaches_every_outcome_of_full_enumeration(racers: int, starts: bool) -> None:
    """With ``starts``, each racer begins at its round's start, which either does nothing or
    takes a shared file lock (the order of those is part of the outcome)."""
    rng = random.Random(racers)
    saved = 0
    for _ in range((60 if racers == 2 else 25) // (1 + 2 * starts)):
        program = random_program(rng, racers, starts)
        full = all_outcomes(program)
        reduced = search_outcomes(DPOR(), program)
        assert set(reduced) == full, program
        steps = tuple(len(ops) for ops in program)
        if count_interleavings(steps) <= 2000:  # the full enumeration by the search itself
            unreduced = search_outcomes(DPOR(reduce=False), program)
            assert set(unreduced) == full, program
            assert len(unreduced) == count_interleavings(steps)
        saved += count_interleavings(steps) - len(reduced)
    assert saved > 0  # the mixes have independent statements: the reduction does save rounds


def test_unreduced_search_runs_every_interleaving_once() -> None:
    program = [[write_sql("a", 1)] * 3, [write_sql("a", 1)] * 2]
    search = DPOR(reduce=False)
    outcomes = search_outcomes(search, program)
    assert len(outcomes) == count_interleavings((3, 2)) == 25  # Delannoy(3, 2)
    assert search.exhausted()
    assert search.without_reduction() == 25


def test_independent_racers_run_once() -> None:
    program = [[read_sql("a", None), write_sql("a", 1)], [read_sql("b", None), write_sql("b", 2)]]
    search = DPOR()
    assert len(search_outcomes(search, program)) == 1
    assert search.exhausted()
    assert search.without_reduction() == count_interleavings((2, 2)) == 13


def test_rows_named_by_equality_commute() -> None:
    program = [[write_sql("a", 1), read_sql("a", 1)], [write_sql("a", 2), read_sql("a", 2)]]
    assert len(search_outcomes(DPOR(), program)) == 1


def test_check_then_act_behind_harmless_reads_fails_early() -> None:
    """25 reads of a table nobody writes, then a check-then-act: they add no interleaving."""
    harmless = [read_sql("settings", None)] * 25
    act = [read_sql("runs", None), write_sql("runs", None)]
    program = [harmless + act, harmless + act]
    outcomes = search_outcomes(DPOR(), program)
    both_saw_nothing = [
        o
        for o in outcomes
        if all(log[25] == (None, None) for log in o[1])  # type: ignore[index]
    ]
    assert both_saw_nothing
    assert outcomes.index(both_saw_nothing[0]) < 10
    assert len(outcomes) < 20


def test_starts_that_act_outside_are_tried_in_every_order() -> None:
    """Who takes a file lock first is decided before any statement: every order of the starts
    that act outside is run, and starts that do nothing add no round."""
    program = [[START_OUTSIDE, write_sql("a", 1)], [START_OUTSIDE, write_sql("b", 2)]]
    outcomes = search_outcomes(DPOR(), program)
    assert {o[2] for o in outcomes} == {(0, 1), (1, 0)}  # type: ignore[index]
    inert = [[START, write_sql("a", 1)], [START, write_sql("b", 2)]]
    assert len(search_outcomes(DPOR(), inert)) == 1


def test_counting_the_unreduced_interleavings_stays_cheap() -> None:
    """The count is exact for small rounds; for long ones (3 racers of 27 statements, 4 of
    50) it is the one-at-a-time orders alone, a lower bound, so a race never waits on it."""
    assert count_interleavings((3, 2)) == 25
    assert count_interleavings((27, 27, 27)) == math.factorial(81) // math.factorial(27) ** 3
    assert count_interleavings((50, 50, 50, 50)) > 10**100


def test_a_racer_at_another_statement_than_the_tree_says_has_strayed() -> None:
    """Round 1 runs set-up statements that later rounds do not (a connection opened by the first
    call): replaying round 1's way, the search finds a racer at another statement, drops its
    tree and starts again; on the program as it runs from then on it reaches every outcome.
    Without the check it would replay choices meant for other statements."""
    setup = [read_sql("b", 1), read_sql("b", 2)]
    steady = [[read_sql("a", 1), write_sql("a", 1)], [read_sql("a", 1), write_sql("a", 1)]]
    search = DPOR()
    first = [setup + steady[0], setup + steady[1]]
    search_outcomes_once(search, first)
    outcomes = search_outcomes(search, steady)
    assert search.restarts == 1
    assert search.exhausted()
    assert set(outcomes) == all_outcomes(steady)


def test_a_program_that_keeps_changing_is_never_exhausted() -> None:
    """Past the restarts it allows, a search whose racers keep changing statements counts
    the rounds that strayed and does not call the race exhausted when it is done."""
    search = DPOR()
    for i in range(200):
        table = ("b", "c", "a")[i % 3]
        search_outcomes_once(
            search, [[read_sql(table, 1), write_sql("a", 1)], [read_sql("a", 1), write_sql("a", 1)]]
        )
        if search.done():
            break
    assert search.done()
    assert search.restarts == 2
    assert search.diverged > 0
    assert not search.exhausted()


def search_outcomes_once(search: DPOR, program: Program) -> object:
    """One round of ``search`` over ``program``."""
    search.begin()
    model = Model(program)
    previous: int | None = None
    while enabled := model.enabled():
        for racer in enabled:
            search.arrived(racer, Statement(model.next_sql(racer)))
        choice = search.choose(enabled, previous)
        model.step(choice)
        previous = choice[0] if len(choice) == 1 else None
    search.end()
    return model.outcome()
