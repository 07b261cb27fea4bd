"""The PostgreSQL fixtures as users meet them: skip or error without a server, any server by URL.

A machine without PostgreSQL is stood in for by a conftest that makes ``find_bindir`` find
nothing: the subject here is what the user is told, not the search for binaries (which
tests/test_postgres_backend.py covers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

NO_BINARIES = """
import pytest_racecheck.backends.postgres as postgres
postgres.find_bindir = lambda explicit=None: None
"""

USES_POSTGRES = """
def test_uses_postgres(postgres_db):
    assert postgres_db.scalar("SELECT 1") == 1
"""


@pytest.mark.parametrize(
    ("args", "outcome", "message"),
    [
        (
            (),
            {"skipped": 1},
            "*no PostgreSQL available: install PostgreSQL*server binaries*RACECHECK_POSTGRES_URL*",
        ),
        (
            ("--racecheck-require-postgres",),
            {"errors": 1},
            "*--racecheck-require-postgres: no PostgreSQL available*",
        ),
    ],
    ids=["skips-saying-how-to-enable", "require-turns-it-into-an-error"],
)
def test_without_postgres(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    outcome: dict[str, int],
    message: str,
) -> None:
    monkeypatch.delenv("RACECHECK_POSTGRES_URL", raising=False)
    pytester.makeconftest(NO_BINARIES)
    pytester.makepyfile(USES_POSTGRES)
    result = pytester.runpytest_subprocess("-rs", *args)
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([message])


@pytest.mark.parametrize("how", ["option", "env"])
def test_an_external_server_by_url(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, postgres_server, how: str
) -> None:
    """Only the run's own databases are made there, and they are dropped afterwards."""
    import psycopg

    provider = postgres_server
    pytester.makeconftest(NO_BINARIES)  # the URL must be enough on its own
    names = pytester.path / "names.txt"
    pytester.makepyfile(
        f"""
        def test_external(postgres_db, race_db):
            name = postgres_db.scalar("SELECT current_database()")
            assert name == postgres_db.name
            with open({str(names)!r}, "a") as f:
                f.write(name + "\\n")
        """
    )
    args = []
    if how == "option":
        args = [f"--racecheck-postgres-url={provider.admin_dsn}"]
    else:
        monkeypatch.setenv("RACECHECK_POSTGRES_URL", provider.admin_dsn)
    result = pytester.runpytest_subprocess("-v", *args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_external?sqlite? PASSED*", "*test_external?postgres? PASSED*"]
    )
    made = names.read_text().split()
    assert len(made) == 2
    with psycopg.connect(provider.admin_dsn) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (made,)
        ).fetchall()
    assert left == []


SERVER_DIES = """
import os, signal
from pytest_racecheck import current_racer

def attempt(db, postmaster):
    if current_racer() == 0:
        os.kill(postmaster, signal.SIGKILL)
    with db.connect() as conn:
        conn.execute("SELECT 1")
    return "ok"

def test_a_server_dies(race, postgres_db, postgres_server):
    server = postgres_server.server
    shm = (server.datadir / "postmaster.pid").read_text().splitlines()[6].split()[1]
    with open({shm_file!r}, "w") as f:
        f.write(f"{{shm}} {{server.pid}}")
    race(attempt, postgres_db, server.pid, processes=2, rounds=3, timeout=60)

def test_b_gets_a_new_server(postgres_db):
    # the database made ahead for this test was on the dead server
    assert postgres_db.scalar("SELECT 1") == 1

def test_c_races_on_it(race, postgres_db, postgres_server):
    def visit(db):
        return db.scalar("SELECT 1")

    race(visit, postgres_db, processes=2, rounds=2).assert_outcomes([1])
"""


def test_throwaway_server_killed_mid_race(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, run_tag: str, tmp_path
) -> None:
    """SIGKILL of the postmaster in round 1: that race fails saying the server died, its
    shared memory segment is removed, later tests get a new server (also the test whose
    database had been made ahead on the dead one), and no teardown errs. The run_tag fixture
    checks that no server process of the run is left."""
    monkeypatch.delenv("RACECHECK_POSTGRES_URL", raising=False)
    shm_file = tmp_path / "shm"
    pytester.makepyfile(SERVER_DIES.format(shm_file=str(shm_file)))
    result = pytester.runpytest_subprocess("--racecheck-require-postgres")
    result.assert_outcomes(failed=1, passed=2, errors=0)
    result.stdout.fnmatch_lines(
        [
            "E   *ServerDied: race of attempt, after * complete round(s): the throwaway "
            "PostgreSQL server died: its postmaster (pid *) is gone*",
        ]
    )
    assert "teardown" not in result.stdout.str().lower()
    shmid, postmaster = shm_file.read_text().split()
    segments = Path("/proc/sysvipc/shm").read_text().splitlines()
    header = segments[0].split()
    left = [
        line
        for line in segments[1:]
        if line.split()[header.index("shmid")] == shmid
        and line.split()[header.index("cpid")] == postmaster
    ]
    assert left == [], "the dead server's shared memory segment was left"
