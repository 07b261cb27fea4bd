"""``pause_after`` / ``pause_before`` targets are found as Python finds attributes.

A method a base class defines is found through the named class's MRO (issue 9:
``filelock:FileLock.acquire`` was refused), and the wrapper goes on the class the user named:
it and its subclasses pause, the base class and its other subclasses do not.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pytest_racecheck.instrument.points import install_pause, resolve_target

SHAPES = """
import functools

class Store:
    def __init__(self, name="s"):
        self.name = name

    def read(self):
        return "read " + self.name

    @classmethod
    def make(cls, name):
        return cls(name)

    @staticmethod
    def version():
        return 7

    @property
    def size(self):
        return 0

    @functools.cached_property
    def cached(self):
        return 0


class SubStore(Store):
    pass


class GrandStore(SubStore):
    pass


class OtherStore(Store):
    pass
"""


@pytest.fixture
def shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh module per test: install_pause changes classes for good."""
    name = f"shapes_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SHAPES)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


def test_an_inherited_method_is_found_on_the_named_class(shapes: ModuleType) -> None:
    owner, attr, fn = resolve_target(f"{shapes.__name__}:SubStore.read")
    assert (owner, attr, fn) == (shapes.SubStore, "read", shapes.Store.__dict__["read"])


def test_the_issue_example_filelock_acquire_resolves() -> None:
    import filelock

    owner, attr, fn = resolve_target("filelock:FileLock.acquire")
    assert owner is filelock.FileLock and attr == "acquire"
    assert "acquire" not in vars(filelock.FileLock)  # defined on a base class
    assert fn is filelock.FileLock.acquire


def test_inherited_classmethod_and_staticmethod_keep_their_wrappers(shapes: ModuleType) -> None:
    _, _, make = resolve_target(f"{shapes.__name__}:GrandStore.make")
    _, _, version = resolve_target(f"{shapes.__name__}:GrandStore.version")
    assert isinstance(make, classmethod) and isinstance(version, staticmethod)


@pytest.mark.parametrize("attr", ["size", "cached"])
def test_a_property_is_refused_with_a_clear_message(shapes: ModuleType, attr: str) -> None:
    with pytest.raises(ValueError, match=rf"SubStore\.{attr} is a property, not a function"):
        resolve_target(f"{shapes.__name__}:SubStore.{attr}")


def test_a_missing_method_is_still_refused(shapes: ModuleType) -> None:
    with pytest.raises(ValueError, match="no function 'write' there"):
        resolve_target(f"{shapes.__name__}:SubStore.write")


def test_the_wrapper_goes_on_the_named_class_only(shapes: ModuleType) -> None:
    base_read = shapes.Store.__dict__["read"]
    for attr in ("read", "make", "version"):
        install_pause(f"{shapes.__name__}:SubStore.{attr}", "after")
    # The named class and its subclasses see the wrapper; it still behaves as the method.
    assert shapes.SubStore.__dict__["read"] is not base_read
    assert shapes.GrandStore("g").read() == "read g"
    made = shapes.GrandStore.make("m")
    assert type(made) is shapes.GrandStore and made.name == "m"  # cls still bound per class
    assert isinstance(shapes.SubStore.__dict__["make"], classmethod)
    assert isinstance(shapes.SubStore.__dict__["version"], staticmethod)
    assert shapes.SubStore.version() == shapes.SubStore("x").version() == 7
    # The base and its other subclasses are untouched.
    assert shapes.Store.__dict__["read"] is base_read
    assert "read" not in vars(shapes.OtherStore) and shapes.OtherStore.read is base_read


MANAGER = """
import sqlite3


class BaseManager:
    def __init__(self, path):
        self.path = path

    def get_active(self, conn):
        return conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchone()

    @classmethod
    def find_active(cls, conn):
        return conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchone()

    @staticmethod
    def insert(conn):
        conn.execute("INSERT INTO runs(status) VALUES ('running')")

    def start(self, finder):
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        try:
            found = self.get_active(conn) if finder == "method" else self.find_active(conn)
            if found is not None:
                return "refused"
            self.insert(conn)
            return "created"
        finally:
            conn.close()


class RunManager(BaseManager):
    pass


def start_run(path, finder="method"):
    return RunManager(path).start(finder)


def start_on_base(path):
    return BaseManager(path).start("method")
"""

TESTS = """
import pytest
import manager
from pytest_racecheck import RaceError

SCHEMA = "CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)"


def race_runs(race, sqlite_db, fn=manager.start_run, **kwargs):
    sqlite_db.executescript(SCHEMA)
    return race(fn, sqlite_db.path, processes=3, rounds=3,
                reset=lambda: sqlite_db.execute("DELETE FROM runs"), **kwargs)


def test_inherited_method(race, sqlite_db):
    result = race_runs(race, sqlite_db, pause_after="manager:RunManager.get_active")
    assert result.counts("created") == [3, 3, 3]  # every racer checked before any wrote
    assert result.targets_reached == {"after manager:RunManager.get_active": 3}


def test_inherited_classmethod(race, sqlite_db):
    result = race_runs(race, sqlite_db, finder="classmethod",
                       pause_after="manager:RunManager.find_active")
    assert result.counts("created") == [3, 3, 3]


def test_inherited_staticmethod(race, sqlite_db):
    result = race_runs(race, sqlite_db, pause_before="manager:RunManager.insert")
    assert result.counts("created") == [3, 3, 3]


def test_the_base_class_is_not_paused(race, sqlite_db):
    with pytest.raises(RaceError, match="never reached"):
        race_runs(race, sqlite_db, fn=manager.start_on_base,
                  pause_after="manager:RunManager.get_active")


def test_property_refused(race):
    with pytest.raises(ValueError, match="is a property"):
        race(print, processes=2, pause_after="manager:RunManager.path_size")
"""


def test_real_racers_pause_at_inherited_targets(pytester: pytest.Pytester) -> None:
    manager = MANAGER + textwrap.dedent(
        """
        RunManager.path_size = property(lambda self: len(self.path))
        """
    )
    pytester.makepyfile(manager=manager, test_targets=TESTS)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=5)
