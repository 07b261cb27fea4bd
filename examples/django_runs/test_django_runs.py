"""Race Django's ``get_or_create`` and a ``select_for_update()`` guard, on SQLite and PostgreSQL.

Three ways to start one run (``runs_app/runs.py``), each raced three ways on both databases
(``race_db``); the broken ones are expected failures that must fail (``strict=True``):

========== ============================================== ========== ==========
case       what it does                                   SQLite     PostgreSQL
========== ============================================== ========== ==========
plain      ``Run.objects.get_or_create``, no constraint   xfail      xfail
unique     the same, partial ``UniqueConstraint``         passes     passes
guarded    ``select_for_update()`` guard row, check, add  xfail      passes
========== ============================================== ========== ==========

``plain`` fails because ``get_or_create`` is a SELECT, then an INSERT: every racer that
selected before the first insert creates a run. ``unique`` passes: the constraint refuses the
second INSERT and ``get_or_create`` catches the ``IntegrityError`` and returns the winner's row
(``created=False``), so every other racer returns "found". ``guarded`` passes on PostgreSQL,
where the others wait for the guard row's lock. On SQLite Django drops ``FOR UPDATE``, and
``transaction.atomic()`` begins a *deferred* transaction: racers read side by side, the first
to write commits its run, and every other one then fails to write with ``OperationalError:
database is locked`` (SQLite will not let a transaction that read an older snapshot write).
The database still holds exactly one run (``check()`` holds in every round), but the losers
crash instead of being refused: the guard serializes nothing there.

Why each verdict cannot vary:

- ``stress``: 8 racers, 50 rounds. A broken case fails the race if *one* round of 50 breaks
  the rule. Measured in 6 runs of these stress cases on a loaded 2-core machine, ``plain``
  broke the rule in 49 to 50 of 50 rounds on SQLite and 44 to 49 on PostgreSQL, ``guarded`` on
  SQLite in 49 to 50: with a failure rate near 0.9 per round, 50 clean rounds in a row
  (about 0.1 ** 50) are out of reach. The correct cases cannot fail by timing: the constraint
  and the lock decide, not the order.
- ``paused``: ``pause_after`` on an ORM method, no change to the code: each racer is held right
  after its check until every racer has checked (or waits on a lock, or has returned). For
  ``plain`` the check is ``get_or_create``'s own ``QuerySet.get``: every racer has found
  nothing before any inserts, so all 4 create a run, in every round. For ``guarded`` it is
  ``QuerySet.exists`` (the check after the guard): on SQLite every racer has read before any
  writes, so 3 of 4 fail with "database is locked" in every round; on PostgreSQL the racers
  behind the guard wait on its lock, are counted as arrived, and the holder goes on alone.
  3 rounds give a verdict that cannot vary.
- ``explored``: 2 racers, no point and no pause: ``explore=50`` makes every SQL statement
  Django sends a sync point and tries the interleavings, fewest switches first. The broken
  cases fail at the first interleaving with one switch between check and insert (within the
  first few rounds); the correct ones have no failing interleaving. The search is
  deterministic.

Django in the racers: ``setup_racer`` (the ``racer_setup``) configures Django for the test's
database, imports the code under test and opens the connection, once per racer, before the
first round. The connection then stays open for every round (``CONN_MAX_AGE`` only acts at
the end of a request, and there is no request here); that is what a worker does, and nothing
needs closing between rounds: no transaction stays open after a call. Two things a Django
user must know (see docs/orms.md):

- the function raced is loaded *before* ``racer_setup`` runs, so neither this module nor
  anything it imports at the top may import models: ``runs_app.runs`` is imported inside the
  raced functions;
- ``racer_setup`` is a ``functools.partial`` of a module-level function, not a closure: a
  closure that refers to a module of your own (``djproject``) carries a copy of that module's
  globals, Django's configured ``settings`` among them, into every racer.
"""

from __future__ import annotations

import functools

import djproject
import pytest

HOW = {
    "stress": {"processes": 8, "rounds": 50},
    "paused": {"processes": 4, "rounds": 3},
    "explored": {"processes": 2, "explore": 50, "seed": 1},
}

# Where ``paused`` holds the racers: right after each case's check.
PAUSE_AFTER = {
    "plain": "django.db.models.query:QuerySet.get",
    "unique": "django.db.models.query:QuerySet.get",
    "guarded": "django.db.models.query:QuerySet.exists",
}

BROKEN = {
    ("plain", "sqlite"): "get_or_create without a constraint is a check-then-act",
    ("plain", "postgres"): "get_or_create without a constraint is a check-then-act",
    ("guarded", "sqlite"): (
        "Django ignores select_for_update on SQLite: the losers' deferred transactions fail "
        "with 'database is locked' instead of being refused"
    ),
}

TABLES = {"plain": "runs", "unique": "unique_runs", "guarded": "runs"}


def setup_racer(url: str) -> None:
    """Each racer, once: configure Django, import the code, connect."""
    djproject.configure(url)
    import runs_app.runs  # noqa: F401 (imported here, after django.setup())
    from django.db import connection

    connection.ensure_connection()


def get_or_create(model: str) -> str:
    from runs_app.runs import get_or_create_run

    return get_or_create_run(model)


def guarded() -> str:
    from runs_app.runs import start_run_guarded

    return start_run_guarded()


def _race_case(race, race_db, request, case, setup, **how):
    reason = BROKEN.get((case, race_db.backend))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
    djproject.create_tables(race_db.url)
    race_db.execute("INSERT INTO guard (id) VALUES (1)")
    table = TABLES[case]
    fn, args = (guarded, ()) if case == "guarded" else (get_or_create, (case,))
    result = race(
        fn,
        *args,
        reset=lambda: race_db.execute(f"DELETE FROM {table}"),
        check=lambda: race_db.scalar(f"SELECT count(*) FROM {table} WHERE status = 'running'") == 1,
        racer_setup=functools.partial(setup, race_db.url),
        timeout=60,
        **how,
    )
    result.assert_exactly_one("created")


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("case", ["plain", "unique", "guarded"])
def test_one_running_run(race, race_db, request, case, how):
    pause = {"pause_after": PAUSE_AFTER[case]} if how == "paused" else {}
    _race_case(race, race_db, request, case, setup_racer, **HOW[how], **pause)


def configure_only(url: str) -> None:
    """Each racer, once: configure Django and import the code; the connection is opened by
    the first query, inside round 1."""
    djproject.configure(url)
    import runs_app.runs  # noqa: F401 (imported here, after django.setup())


@pytest.mark.parametrize("case", ["plain", "unique"])
def test_explored_with_the_connection_opened_in_the_first_round(race, race_db, request, case):
    """``explored`` with Django's connection opened lazily: round 1 runs the connection's
    set-up statements (``PRAGMA``s, ``sqlite_compileoption_used``) that later rounds do not.
    The search sees a racer at another statement than the one its tree was built from, starts
    its tree again, and still finds the broken order (deterministic, as ``explored`` above)."""
    _race_case(race, race_db, request, case, configure_only, **HOW["explored"])
