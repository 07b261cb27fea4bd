"""No password given to the plugin ever reaches its output (CI logs are often public).

Each case runs pytest in a subprocess with the server URL set by option, ini or environment,
with ``-l`` (local values in tracebacks) and ``--tb=long`` (function arguments), and looks for
the password in everything that run printed.

A refused login: the throwaway server trusts its unix socket (``local all all trust`` in
pg_hba.conf), so a wrong password for a real role would be accepted; a role that does not exist
is refused whatever the password, and that is what these tests use.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

import pytest

from pytest_racecheck.backends.postgres import (
    PostgresDatabase,
    PostgresServer,
    PostgresSetupError,
    mask,
    scrub,
    secrets_in,
)

PASSWORD = "Pw-s3cret-7d41f"
ENCODED = "Pw%40s3cret%3A9b"  # '@' and ':' in a password are percent-encoded in a URL
DECODED = "Pw@s3cret:9b"

NO_BINARIES = """
import pytest_racecheck.backends.postgres as postgres
postgres.find_bindir = lambda explicit=None: None
"""

USES_POSTGRES = """
def test_one(postgres_db):
    assert postgres_db.scalar("SELECT 1") == 1

def test_two(race_db):
    assert race_db.scalar("SELECT 1") == 1
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refusing_url(postgres_server) -> str:
    """A URL for a real server that refuses the login: no such role."""
    pytest.importorskip("psycopg")
    provider = postgres_server
    params = PostgresDatabase(dsn=provider.admin_dsn, name="postgres").params
    host, port = params.get("host", ""), params.get("port", "5432")
    if host.startswith("/"):
        return f"postgresql://racecheck_no_such_role:{PASSWORD}@/postgres?host={host}&port={port}"
    return f"postgresql://racecheck_no_such_role:{PASSWORD}@{host}:{port}/postgres"


def run_with_url(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, url: str
) -> str:
    """Run two tests that need PostgreSQL with ``url`` set ``how``; all they printed."""
    monkeypatch.delenv("RACECHECK_POSTGRES_URL", raising=False)
    pytester.makeconftest(NO_BINARIES)  # the URL alone decides
    pytester.makepyfile(USES_POSTGRES)
    args = ["-l", "--tb=long", "-rA", "-v", "-p", "no:cacheprovider"]
    if how == "option":
        args.append(f"--racecheck-postgres-url={url}")
    elif how == "ini":
        pytester.makeini(f"[pytest]\nracecheck_postgres_url = {url}\n")
    else:
        monkeypatch.setenv("RACECHECK_POSTGRES_URL", url)
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(errors=2, passed=1)  # race_db's sqlite half needs no server
    return "\n".join(result.outlines + result.errlines)


SOURCES = {"option": "--racecheck-postgres-url", "ini": "ini racecheck_postgres_url"}
SOURCES["env"] = "env RACECHECK_POSTGRES_URL"


@pytest.mark.parametrize("how", ["option", "ini", "env"])
def test_a_refused_login_shows_no_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, refusing_url: str, how: str
) -> None:
    output = run_with_url(pytester, monkeypatch, how, refusing_url)
    assert PASSWORD not in output
    assert "user racecheck_no_such_role, database postgres, password ***" in output
    assert 'role "racecheck_no_such_role" does not exist' in output
    assert f"set by {SOURCES[how]}" in output


@pytest.mark.parametrize("how", ["option", "ini", "env"])
def test_an_unreachable_server_shows_no_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pytest.importorskip("psycopg")
    port = closed_port()
    url = f"postgresql://alice:{ENCODED}@127.0.0.1:{port}/app?connect_timeout=5"
    output = run_with_url(pytester, monkeypatch, how, url)
    assert ENCODED not in output and DECODED not in output
    assert f"host 127.0.0.1, port {port}, user alice, database app, password ***" in output
    assert "Connection refused" in output
    assert f"set by {SOURCES[how]}" in output


@pytest.mark.parametrize("how", ["option", "ini", "env"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        # The parser's own message quotes the whole URL.
        (f"postgresql://alice:{PASSWORD}@[::1/app", "invalid PostgreSQL URL"),
        (f"mysql://alice:{PASSWORD}@db.example/app", "is not a PostgreSQL URL"),
        (f"host=db.example password={PASSWORD} port=notaport", "port notaport"),
    ],
    ids=["unbalanced-bracket", "other-scheme", "conninfo-bad-port"],
)
def test_a_bad_url_shows_no_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, url: str, says: str
) -> None:
    pytest.importorskip("psycopg")
    output = run_with_url(pytester, monkeypatch, how, url)
    assert PASSWORD not in output
    assert says in output
    assert "***" in output


# --- the pieces, without a subprocess ---------------------------------------------------------


def test_reprs_hide_the_password() -> None:
    db = PostgresDatabase(dsn=f"host=h port=5 user=u password={PASSWORD} dbname=d", name="d")
    assert PASSWORD not in repr(db) and "password=***" in repr(db)
    assert PASSWORD not in repr([db]) and PASSWORD not in str(db)


def test_an_external_providers_repr_hides_the_password(refusing_url: str) -> None:
    real = PostgresDatabase(dsn=refusing_url, name="x").params
    url = refusing_url.replace("racecheck_no_such_role", "postgres")
    try:
        provider = PostgresServer.external(url)
    except PostgresSetupError as exc:
        pytest.skip(f"the session's server refuses the superuser by URL: {exc}")
    try:
        assert real["password"] == PASSWORD
        assert PASSWORD in provider.admin_dsn  # it is used, only not shown
        assert PASSWORD not in repr(provider) and "***" in repr(provider)
        db = provider.create_database()
        assert PASSWORD not in repr(db)
        provider.drop_database(db)
    finally:
        provider.close()


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://u:{PASSWORD}@h:5/d",
        f"postgresql+psycopg://u:{PASSWORD}@/d?host=/tmp/x",
        f"host=h password={PASSWORD} user=u",
        f"host=h password = '{PASSWORD}' user=u",
        f'could not parse "postgresql://u:{PASSWORD}@[::1/d"',
    ],
)
def test_mask_and_scrub(text: str) -> None:
    assert PASSWORD not in mask(text)
    assert PASSWORD in secrets_in(text)
    assert PASSWORD not in scrub(f"{text} and again {PASSWORD}", secrets_in(text))


def test_scrub_removes_a_decoded_password() -> None:
    url = f"postgresql://u:{quote(DECODED, safe='')}@h/d"
    assert DECODED in secrets_in(url)
    assert DECODED not in scrub(f"libpq said {DECODED}", secrets_in(url))
