"""The reference strategies of ``pytest_racecheck.runs``, called directly in one process.

No race harness here: every test is sequential, or uses threads of this process made to meet at
a sync point, so it is deterministic. The cross-process races come through the harness.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck import runs
from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase

# (name, call, needs the unique index) for every safe or broken strategy, every form.
SQLITE_CASES: list[tuple[str, Callable[[Database], str], bool]] = [
    ("naive", runs.naive, False),
    ("in_process_lock", runs.in_process_lock, False),
    ("A-catch", lambda db: runs.A(db, form="catch"), True),
    ("A-upsert", lambda db: runs.A(db, form="upsert"), True),
    ("B-immediate", lambda db: runs.B(db, form="immediate"), False),
    ("B-default", runs.B, False),
    ("C", runs.C, False),
    ("lease", runs.lease, False),
    ("lease_as_first_written", runs.lease_as_first_written, False),
]
POSTGRES_CASES: list[tuple[str, Callable[[Database], str], bool]] = [
    *(case for case in SQLITE_CASES if case[0] != "B-immediate"),
    ("B-lock_table", lambda db: runs.B(db, form="lock_table"), False),
    ("B-advisory", lambda db: runs.B(db, form="advisory"), False),
    ("B-serializable", lambda db: runs.B(db, form="serializable"), False),
]


@pytest.fixture
def sqlite_runs_db(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase.create(tmp_path / "runs.sqlite")


@pytest.fixture
def pg_db(request: pytest.FixtureRequest) -> Database:
    """A fresh PostgreSQL database from the plugin's ``postgres_db``, or a skip."""
    try:
        importlib.import_module("pytest_racecheck.backends.postgres")
    except ImportError as exc:
        pytest.skip(f"PostgreSQL backend not importable: {exc}")
    try:
        return request.getfixturevalue("postgres_db")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_db fixture: the pytest_racecheck plugin is not loaded")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> Database:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_runs_db")
    return request.getfixturevalue("pg_db")


def _cases(backend: str) -> list[Any]:
    cases = SQLITE_CASES if backend == "sqlite" else POSTGRES_CASES
    return [
        pytest.param(backend, call, unique, id=f"{backend}-{name}") for name, call, unique in cases
    ]


@pytest.mark.parametrize(("backend", "call", "unique"), _cases("sqlite") + _cases("postgres"))
def test_first_call_creates_second_refuses(
    request: pytest.FixtureRequest,
    backend: str,
    call: Callable[[Database], str],
    unique: bool,
) -> None:
    db = request.getfixturevalue("sqlite_runs_db" if backend == "sqlite" else "pg_db")
    runs.create_schema(db, unique_active=unique)
    assert call(db) == runs.CREATED
    assert call(db) == runs.REFUSED
    assert runs.active_count(db) == 1
    runs.reset(db)
    assert runs.active_count(db) == 0
    assert call(db) == runs.CREATED
    assert db.scalar("SELECT count(*) FROM leases") == 0  # the leases were released


def test_outcome_values() -> None:
    assert (runs.CREATED, runs.REFUSED) == ("created", "refused")


def test_create_schema_index_only_for_a(db: Database) -> None:
    runs.create_schema(db, unique_active=True)
    runs.create_schema(db)  # and again without: the index goes, naive may double-create
    db.execute("INSERT INTO runs (status) VALUES ('running')")
    db.execute("INSERT INTO runs (status) VALUES ('running')")
    assert runs.active_count(db) == 2
    runs.reset(db)
    runs.create_schema(db, unique_active=True)
    db.execute("INSERT INTO runs (status) VALUES ('running')")
    with pytest.raises(Exception, match=r"(?i)unique"):
        db.execute("INSERT INTO runs (status) VALUES ('running')")
    db.execute("INSERT INTO runs (status) VALUES ('finished')")
    db.execute("INSERT INTO runs (status) VALUES ('finished')")


def test_reset_keeps_the_guard_row(db: Database) -> None:
    runs.create_schema(db)
    assert runs.C(db) == runs.CREATED
    assert runs.lease_acquire(db, "other", ttl_seconds=60) is not None
    runs.reset(db)
    assert runs.active_count(db) == 0
    assert db.scalar("SELECT count(*) FROM leases") == 0
    assert db.scalar("SELECT count(*) FROM run_guard") == 1
    assert runs.C(db) == runs.CREATED


def test_c_without_guard_row_is_an_error(db: Database) -> None:
    runs.create_schema(db)
    db.execute("DELETE FROM run_guard")
    with pytest.raises(RuntimeError, match="guard row"):
        runs.C(db)
    assert runs.active_count(db) == 0


def test_finished_runs_do_not_count(db: Database) -> None:
    runs.create_schema(db, unique_active=True)
    assert runs.A(db) == runs.CREATED
    db.execute("UPDATE runs SET status = 'finished'")
    assert runs.A(db, form="upsert") == runs.CREATED
    assert runs.active_count(db) == 1


def test_wrong_forms_are_rejected(db: Database) -> None:
    runs.create_schema(db)
    with pytest.raises(ValueError, match="forms"):
        runs.A(db, form="merge")  # type: ignore[arg-type]
    wrong = "advisory" if db.backend == "sqlite" else "immediate"
    with pytest.raises(ValueError, match="forms"):
        runs.B(db, form=wrong)  # type: ignore[arg-type]


def test_strategies_registry() -> None:
    assert set(runs.STRATEGIES) == {
        "naive",
        "in_process_lock",
        "A",
        "B",
        "C",
        "lease",
        "lease_as_first_written",
    }


# --- points ---------------------------------------------------------------------------------


def patch_point(monkeypatch: pytest.MonkeyPatch, fn: Callable[[str], object]) -> None:
    """The strategies' points: the correct ones in runs, the broken ones in runs.broken."""
    monkeypatch.setattr(runs, "point", fn)
    monkeypatch.setattr(runs.broken, "point", fn)


@pytest.fixture
def points_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    patch_point(monkeypatch, seen.append)
    return seen


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("naive", ["checked"]),
        ("in_process_lock", ["checked"]),
        ("A", ["checked"]),
        ("B", ["checked"]),
        ("C", ["checked"]),
        ("lease", ["checked"]),
        ("lease_as_first_written", ["lease_checked", "checked"]),
    ],
)
def test_points_are_passed_on_the_way_to_create(
    db: Database, points_seen: list[str], name: str, expected: list[str]
) -> None:
    runs.create_schema(db, unique_active=name == "A")
    assert runs.STRATEGIES[name](db) == runs.CREATED
    assert points_seen == expected
    points_seen.clear()
    runs.STRATEGIES[name](db)  # refused at the check: it never reaches "checked"
    assert "checked" not in points_seen


def _meet_at_checked(
    monkeypatch: pytest.MonkeyPatch, strategy: Callable[[], str], callers: int = 2
) -> list[str]:
    """Run ``strategy`` in ``callers`` threads that all pass the check before any writes."""
    barrier = threading.Barrier(callers, timeout=10)

    def meet(name: str) -> None:
        if name == "checked":
            barrier.wait()

    patch_point(monkeypatch, meet)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def racer() -> None:
        try:
            outcomes.append(strategy())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    return sorted(outcomes)


def test_naive_double_creates_when_callers_meet_after_the_check(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs.create_schema(db)
    outcomes = _meet_at_checked(monkeypatch, lambda: runs.naive(db))
    assert outcomes == ["created", "created"]
    assert runs.active_count(db) == 2


@pytest.mark.parametrize("form", ["catch", "upsert"])
def test_a_refuses_the_loser_when_callers_meet_after_the_check(
    db: Database, monkeypatch: pytest.MonkeyPatch, form: runs.AForm
) -> None:
    runs.create_schema(db, unique_active=True)
    outcomes = _meet_at_checked(monkeypatch, lambda: runs.A(db, form=form), callers=4)
    assert outcomes == ["created", "refused", "refused", "refused"]
    assert runs.active_count(db) == 1


def test_in_process_lock_does_protect_threads(sqlite_runs_db: SqliteDatabase) -> None:
    db = sqlite_runs_db
    runs.create_schema(db)
    barrier = threading.Barrier(8, timeout=10)
    outcomes: list[str] = []

    def racer() -> None:
        barrier.wait()
        outcomes.append(runs.in_process_lock(db))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(outcomes) == ["created"] + ["refused"] * 7
    assert runs.active_count(db) == 1


def test_serializable_retries_after_a_serialization_failure(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two SERIALIZABLE callers meet after the check: one commits, the other gets 40001 and
    runs its whole transaction again, which now sees the run and refuses."""
    runs.create_schema(pg_db)
    calls: list[str] = []
    barrier = threading.Barrier(2, timeout=10)

    def meet(name: str) -> None:
        calls.append(name)
        if len(calls) <= 2:
            barrier.wait()

    patch_point(monkeypatch, meet)
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(runs.B(pg_db, form="serializable")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(outcomes) == ["created", "refused"]
    assert runs.active_count(pg_db) == 1


# --- the lease -------------------------------------------------------------------------------


def _lease_row(db: Database, name: str = "job") -> tuple[Any, ...] | None:
    ph = "?" if db.backend == "sqlite" else "%s"
    rows = db.execute(f"SELECT token, holder FROM leases WHERE name = {ph}", (name,))
    return rows[0] if rows else None


def _age_lease(db: Database, name: str, seconds: float) -> None:
    """Pretend the lease was taken ``seconds`` ago, by the database's clock."""
    if db.backend == "sqlite":
        db.execute(
            "UPDATE leases SET acquired_at = acquired_at - ? WHERE name = ?", (seconds, name)
        )
    else:
        db.execute(
            "UPDATE leases SET acquired_at = acquired_at - %s * interval '1 second' "
            "WHERE name = %s",
            (float(seconds), name),
        )


@pytest.fixture
def lease_db(db: Database) -> Iterator[Database]:
    runs.create_schema(db)
    yield db


def test_lease_first_writer_wins(lease_db: Database) -> None:
    db = lease_db
    token = runs.lease_acquire(db, "job", ttl_seconds=60, holder="first")
    assert token is not None
    assert runs.lease_acquire(db, "job", ttl_seconds=60, holder="second") is None
    assert _lease_row(db) == (token, "first")
    assert runs.lease_acquire(db, "other job", ttl_seconds=60) is not None


def test_lease_release_needs_the_token(lease_db: Database) -> None:
    db = lease_db
    token = runs.lease_acquire(db, "job", ttl_seconds=60)
    assert token is not None
    assert runs.lease_release(db, "job", "not-the-token") is False
    assert _lease_row(db) is not None
    assert runs.lease_release(db, "job", token) is True
    assert _lease_row(db) is None
    assert runs.lease_release(db, "job", token) is False
    assert runs.lease_acquire(db, "job", ttl_seconds=60) is not None


def test_stale_lease_is_reclaimed_and_old_holder_cannot_release(lease_db: Database) -> None:
    db = lease_db
    old = runs.lease_acquire(db, "job", ttl_seconds=60, holder="old")
    assert old is not None
    _age_lease(db, "job", 30)
    assert runs.lease_acquire(db, "job", ttl_seconds=60, holder="new") is None  # not stale yet
    _age_lease(db, "job", 31)
    new = runs.lease_acquire(db, "job", ttl_seconds=60, holder="new")
    assert new is not None and new != old
    assert _lease_row(db) == (new, "new")
    assert runs.lease_release(db, "job", old) is False  # the old holder no longer holds it
    assert _lease_row(db) == (new, "new")
    assert runs.lease_release(db, "job", new) is True


def test_ttl_zero_is_always_stale(lease_db: Database) -> None:
    db = lease_db
    first = runs.lease_acquire(db, "job", ttl_seconds=0)
    second = runs.lease_acquire(db, "job", ttl_seconds=0)
    assert first is not None and second is not None and first != second
    with pytest.raises(ValueError, match="ttl_seconds"):
        runs.lease_acquire(db, "job", ttl_seconds=-1)


def test_lease_refuses_quietly_when_held(lease_db: Database) -> None:
    db = lease_db
    token = runs.lease_acquire(db, runs.DEFAULT_LEASE, ttl_seconds=60, holder="someone")
    assert runs.lease(db) == runs.REFUSED
    assert runs.active_count(db) == 0
    assert _lease_row(db, runs.DEFAULT_LEASE) == (token, "someone")  # untouched


def test_lease_fences_the_write_when_the_lease_was_reclaimed(
    lease_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder that outlives its lease (here: reclaimed while it stands at "checked") must not
    create, and must not release the new holder's lease."""
    db = lease_db
    stolen: list[str | None] = []

    def reclaim_meanwhile(name: str) -> None:
        if name == "checked":
            stolen.append(runs.lease_acquire(db, runs.DEFAULT_LEASE, ttl_seconds=0, holder="thief"))

    patch_point(monkeypatch, reclaim_meanwhile)
    assert runs.lease(db, ttl_seconds=0) == runs.REFUSED
    assert runs.active_count(db) == 0
    assert stolen[0] is not None
    assert _lease_row(db, runs.DEFAULT_LEASE) == (stolen[0], "thief")


def test_lease_as_first_written_creates_after_losing_its_lease_and_frees_the_thief(
    lease_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broken lease: same story, but it creates anyway and its release deletes the lock
    that the thief holds now."""
    db = lease_db

    def reclaim_meanwhile(name: str) -> None:
        if name == "checked":
            runs.lease_acquire(db, runs.DEFAULT_LEASE, ttl_seconds=0, holder="thief")

    patch_point(monkeypatch, reclaim_meanwhile)
    assert runs.lease_as_first_written(db, ttl_seconds=0) == runs.CREATED
    assert _lease_row(db, runs.DEFAULT_LEASE) is None  # the thief's lock is gone


def test_broken_release_deletes_a_lock_it_no_longer_holds(lease_db: Database) -> None:
    db = lease_db
    old = runs.lease_acquire_as_first_written(db, "job", ttl_seconds=60, holder="old")
    assert old is not None
    _age_lease(db, "job", 120)
    new = runs.lease_acquire(db, "job", ttl_seconds=60, holder="new")
    assert new is not None
    assert runs.lease_release(db, "job", old) is False  # done right: refused
    assert _lease_row(db) == (new, "new")
    assert runs.lease_release_as_first_written(db, "job", old) is True  # broken: deletes it
    assert _lease_row(db) is None


def test_broken_acquire_judges_staleness_itself(lease_db: Database) -> None:
    db = lease_db
    assert runs.lease_acquire_as_first_written(db, "job", ttl_seconds=60) is not None
    assert runs.lease_acquire_as_first_written(db, "job", ttl_seconds=60) is None
    _age_lease(db, "job", 120)
    assert runs.lease_acquire_as_first_written(db, "job", ttl_seconds=60) is not None


def test_broken_acquire_loser_crashes_instead_of_bailing(
    lease_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers both read "no lock row": the second INSERT raises a unique violation."""
    db = lease_db
    barrier = threading.Barrier(2, timeout=10)

    def meet(name: str) -> None:
        if name == "lease_checked":
            barrier.wait()

    patch_point(monkeypatch, meet)
    results: list[object] = []

    def racer() -> None:
        try:
            results.append(runs.lease_acquire_as_first_written(db, "job", ttl_seconds=60))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(results) == 2 and len(errors) == 1
    assert "unique" in str(errors[0]).lower() or "duplicate" in str(errors[0]).lower()
