"""The PostgreSQL fixtures as users meet them: skip or error without a server, any server by URL.

A machine without PostgreSQL is stood in for by a conftest that makes ``find_bindir`` find
nothing: the subject here is what the user is told, not the search for binaries (which
tests/test_postgres_backend.py covers).
"""

from __future__ import annotations

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
