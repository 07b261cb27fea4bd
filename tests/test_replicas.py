"""Host-local locks against replicas: right on one host, wrong across two simulated hosts.

A file lock in ``/tmp``, an ``O_EXCL`` marker file in ``/dev/shm`` and a PID file in ``/run``
each serialise the processes of one machine. With ``replicas=2`` each host has its own of
those paths, so each host's lock is taken at once and two claims are made; a database lock
(PostgreSQL's advisory lock, SQLite's write lock) holds across hosts.

Why the verdicts cannot vary:

- One host: the lock admits one holder at a time, and a later holder sees the claim. No
  timing can make two claims.
- Two hosts, stress (8 racers x 30 rounds): each host's first holder checks right after the
  gate opens, then works for 20 ms before it inserts. Both check before either inserts unless
  a whole host's racers start 20 ms later than the other's, in every one of 30 rounds.
- Two hosts, explore: two racers, one per host; the reduced search is deterministic and the
  interleaving where both check first is among its first few.
- The database lock is taken in the database both hosts reach: one holder across hosts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from host_leftovers import host_identity, left_in, namespace_of

from pytest_racecheck.backends.base import Database

SCHEMA = "CREATE TABLE claims (who TEXT NOT NULL)"
WORK_S = 0.02


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[bool]:
    with FileLock(f"/tmp/{name}.lock"):
        yield True


@contextlib.contextmanager
def marker_file(name: str) -> Iterator[bool]:
    path = f"/dev/shm/{name}.marker"
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        yield False  # another process of this host holds it
        return
    try:
        yield True
    finally:
        os.unlink(path)


@contextlib.contextmanager
def pid_file(name: str) -> Iterator[bool]:
    path = f"/run/{name}.pid"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        yield False
        return
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield True
    finally:
        os.unlink(path)


@contextlib.contextmanager
def database_lock(db: Database) -> Iterator[Any]:
    conn = db.connect()
    try:
        if db.backend == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(42)")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


HOST_LOCKS = {"file_lock": file_lock, "marker_file": marker_file, "pid_file": pid_file}


def claim(db: Database, lock: str, name: str) -> str:
    """Claim the one job unless it is claimed, under ``lock``."""
    if lock == "database_lock":
        with database_lock(db) as conn:
            return _claim_on(conn)
    with HOST_LOCKS[lock](name) as held:
        if not held:
            return "busy"
        conn = db.shared_connection()
        return _claim_on(conn)


def _claim_on(conn: Any) -> str:
    if conn.execute("SELECT count(*) FROM claims").fetchone()[0]:
        return "skipped"
    time.sleep(WORK_S)
    conn.execute(f"INSERT INTO claims (who) VALUES ('{socket.gethostname()}')")
    return "claimed"


def _reset(db: Database) -> None:
    db.execute("DELETE FROM claims")


def _claims(db: Database) -> int:
    return db.execute("SELECT count(*) FROM claims")[0][0]


@pytest.fixture
def lock_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A name no other test uses; on one host the lock files are the machine's, so remove
    whatever a killed racer left."""
    name = f"racecheck-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RACECHECK_TEST_TMP", str(tmp_path))
    yield name
    for path in (f"/tmp/{name}.lock", f"/dev/shm/{name}.marker", f"/run/{name}.pid"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


HOW = {
    "stress": {"processes": 8, "rounds": 30},
    "explore": {"processes": 2, "explore": 50, "seed": 1},
}
LOCKS = ["file_lock", "marker_file", "pid_file", "database_lock"]


def record_namespace(path: str) -> None:
    """In each racer: note its PID namespace, to look for processes of it afterwards."""
    with open(path, "a") as out:
        out.write(host_identity() + "\n")


def _race(race: Any, db: Database, lock: str, name: str, replicas: int, how: str) -> Any:
    db.executescript(SCHEMA)
    return race(
        claim,
        db,
        lock,
        name,
        replicas=replicas,
        racer_setup=functools.partial(record_namespace, _namespaces_file(name)),
        reset=lambda: _reset(db),
        check=lambda: _claims(db) == 1,
        timeout=120,
        **HOW[how],
    )


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("lock", LOCKS)
def test_every_lock_holds_on_one_host(race, race_db: Database, lock_name, lock, how) -> None:
    result = _race(race, race_db, lock, lock_name, 1, how)
    result.assert_exactly_one("claimed")
    assert {namespace_of(h) for h in _namespaces(lock_name)} == {os.readlink("/proc/self/ns/pid")}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("lock", list(HOST_LOCKS))
def test_host_locks_fail_across_replicas(race, race_db: Database, lock_name, lock, how) -> None:
    before = _mounts()
    result = _race(race, race_db, lock, lock_name, 2, how)
    with pytest.raises(AssertionError, match=r"(?s)claimed.*\d on replica-\d"):
        result.assert_exactly_one("claimed")
    assert result.failing_rounds(), "two hosts, each with its own lock, make two claims"
    # The claims name both hosts: each took its own lock.
    assert {row[0] for row in race_db.execute("SELECT who FROM claims")} <= {
        "replica-0",
        "replica-1",
    }
    _nothing_left(lock_name, before)


@pytest.mark.parametrize("how", HOW)
def test_database_lock_holds_across_replicas(race, race_db: Database, lock_name, how) -> None:
    before = _mounts()
    result = _race(race, race_db, "database_lock", lock_name, 2, how)
    result.assert_exactly_one("claimed")
    _nothing_left(lock_name, before)


def _lock_paths(name: str) -> list[str]:
    return [f"/tmp/{name}.lock", f"/dev/shm/{name}.marker", f"/run/{name}.pid"]


def _mounts() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def _namespaces_file(name: str) -> str:
    return str(Path(os.environ["RACECHECK_TEST_TMP"]) / f"{name}.ns")


def _namespaces(name: str) -> set[str]:
    return set(Path(_namespaces_file(name)).read_text().split())


def _nothing_left(name: str, mounts_before: list[str]) -> None:
    """No lock file on this machine, no mount of a host here, no process of a host; and
    the racers did run in two PID namespaces of their own."""
    assert not any(os.path.exists(p) for p in _lock_paths(name))
    assert _mounts() == mounts_before
    hosts = _namespaces(name)
    assert len(hosts) == 2 and os.readlink("/proc/self/ns/pid") not in map(namespace_of, hosts)
    assert not left_in(hosts)
