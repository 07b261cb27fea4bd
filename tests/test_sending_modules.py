"""A module the racers can import by name is sent by name, wherever it lives (issue 28).

A newcomer's service module sits in the test's own directory, not under site-packages, and
holds what cannot be pickled: a lock, a ``struct.Struct``, a SQLAlchemy engine. A closure
that calls it as ``myservice.start()`` was refused ("cannot pickle '_struct.Struct'"), while
``from myservice import start`` worked; ``import pytest_racecheck`` (an editable install)
with ``pytest_racecheck.point()`` in a closure was refused the same way.
"""

from __future__ import annotations

import sys
import types

import pytest

from pytest_racecheck.wire import pickling

SERVICE = """
import sqlite3
import struct
import threading

import sqlalchemy

LOCK = threading.Lock()               # in-process only: the bug of ORIGIN.md
HEADER = struct.Struct("<II")          # a C object dill cannot pickle
ENGINE = sqlalchemy.create_engine("sqlite://")  # an engine: a pool, locks, a dialect


def start(path):
    with LOCK:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
                conn.execute("ROLLBACK")
                return "refused"
            conn.execute("INSERT INTO runs (v) VALUES (?)", (HEADER.size,))
            conn.execute("COMMIT")
            return "created"
        finally:
            conn.close()
"""

TESTS = """
import myservice
import pytest_racecheck
from myservice import start


def _race(race, sqlite_db, fn, **kwargs):
    sqlite_db.execute("CREATE TABLE IF NOT EXISTS runs (v INTEGER)")
    result = race(fn, processes=2, rounds=3, timeout=60,
                  reset=lambda: sqlite_db.execute("DELETE FROM runs"), **kwargs)
    result.assert_exactly_one("created")
    assert sqlite_db.scalar("SELECT v FROM runs") == 8


def test_module_by_attribute(race, sqlite_db):
    def attempt():
        return myservice.start(sqlite_db.path)

    _race(race, sqlite_db, attempt)


def test_function_from_module(race, sqlite_db):
    def attempt():
        return start(sqlite_db.path)

    _race(race, sqlite_db, attempt)


def test_the_module_itself_as_an_argument(race, sqlite_db):
    def attempt(service):
        return service.start(sqlite_db.path)

    sqlite_db.execute("CREATE TABLE IF NOT EXISTS runs (v INTEGER)")
    race(attempt, myservice, processes=2, rounds=3, timeout=60,
         reset=lambda: sqlite_db.execute("DELETE FROM runs")).assert_exactly_one("created")


def test_plugin_module_by_attribute(race, sqlite_db):
    def attempt():
        pytest_racecheck.point("x")
        return start(sqlite_db.path)

    _race(race, sqlite_db, attempt, meet_at="x")
"""


def test_a_users_module_in_the_test_directory_goes_by_name(
    pytester: pytest.Pytester, run_tag: str
) -> None:
    pytester.makepyfile(myservice=SERVICE, test_service=TESTS)
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=4)


def test_modules_that_cannot_be_imported_by_name_go_by_value() -> None:
    """``__main__`` and a module made at run time: the racer could not import them."""
    made = types.ModuleType("made_at_run_time")
    assert not pickling.importable_by_name(made)
    sys.modules["made_at_run_time"] = made
    try:
        assert not pickling.importable_by_name(made)  # in sys.modules, but no file behind it
    finally:
        del sys.modules["made_at_run_time"]
    assert not pickling.importable_by_name(sys.modules["__main__"])
    assert pickling.importable_by_name(pickling)
    assert pickling.importable_by_name(sys.modules["os.path"])
    assert pickling.importable_by_name(sys)
