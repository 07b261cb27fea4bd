"""The database fixtures: SQLite files and PostgreSQL databases made for one test and removed
after it, on the server of the overridable ``postgres_server`` fixture."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.controller.blocking import BackendProbe, ServerProbe, SqliteLockProbe
from pytest_racecheck.plugin.options import POSTGRES_ENV, probes_key, servers_key, setting

if TYPE_CHECKING:
    from pytest_racecheck.backends.postgres import PostgresDatabase, PostgresServer


@pytest.fixture
def make_sqlite_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SqliteDatabase]]:
    """Make fresh SQLite databases; each is deleted after the test.

    Each database gets a directory of its own, removed whole afterwards: code under test may
    leave lock files, backups or journals beside the database, and nothing outside that
    directory is ever touched."""
    made: list[SqliteDatabase] = []
    lock_probes: list[SqliteLockProbe] = []

    def make(journal_mode: str = "wal", busy_timeout: float = 5.0) -> SqliteDatabase:
        directory = tmp_path_factory.mktemp("racecheck-sqlite")
        db = SqliteDatabase.create(
            directory / "race.sqlite3", journal_mode=journal_mode, busy_timeout=busy_timeout
        )
        made.append(db)
        lock_probes.append(SqliteLockProbe(db.path))
        request.node.stash.setdefault(probes_key, []).append(lock_probes[-1])
        return db

    yield make
    for probe in lock_probes:
        probe.close()
    for db in made:
        db.close()
        shutil.rmtree(Path(db.path).parent, ignore_errors=True)


@pytest.fixture
def sqlite_db(
    request: pytest.FixtureRequest, make_sqlite_db: Callable[..., SqliteDatabase]
) -> SqliteDatabase:
    """A fresh SQLite database file for this test, removed with its directory afterwards.

    WAL mode and a 5 s busy timeout by default; @pytest.mark.sqlite_db(journal_mode=...,
    busy_timeout=...) changes them. ``.path``, ``.url``, ``.connect()``, ``.execute()``,
    ``.executescript()``, ``.scalar()``; picklable, so racers can use it.
    """
    marker = request.node.get_closest_marker("sqlite_db")
    options = dict(marker.kwargs) if marker is not None else {}
    unknown = set(options) - {"journal_mode", "busy_timeout"}
    if unknown:
        pytest.fail(
            f"@pytest.mark.sqlite_db got unknown argument(s) {sorted(unknown)}; "
            "it takes journal_mode and busy_timeout",
            pytrace=False,
        )
    return make_sqlite_db(**options)


# PostgreSQL: one server per run (shared by the pytest-xdist workers), a database per test.


def _postgres_setting(
    config: pytest.Config, name: str, env: str | None = None
) -> tuple[str, str] | None:
    """The setting's value and where it was set: command line, ini, then ``env``."""
    found = setting(config, name)
    if found is not None and str(found[0]).strip():
        return str(found[0]), found[1]
    value = os.environ.get(env) if env is not None else None
    return (value, f"env {env}") if value and env is not None else None


def _unavailable(config: pytest.Config, reason: str) -> NoReturn:
    if config.getoption("racecheck_require_postgres"):
        pytest.fail(f"--racecheck-require-postgres: {reason}", pytrace=False)
    pytest.skip(reason)


def _external(url: str, source: str) -> PostgresServer:
    """An existing server, or a one-paragraph failure: no frames, whose values hold the URL
    (it may hold a password, and CI logs are often public)."""
    from pytest_racecheck.backends import postgres

    problem = ""
    try:
        return postgres.PostgresServer.external(url, source=source)
    except Exception as exc:
        problem = postgres.scrub(str(exc), postgres.secrets_in(url))
    pytest.fail(f"PostgreSQL set-up failed: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServer | str]:
    """The PostgreSQL server on which postgres_db and make_postgres_db make their databases.

    By default the server of --racecheck-postgres-url (ini racecheck_postgres_url, env
    RACECHECK_POSTGRES_URL), else a throwaway server started once per run (initdb/pg_ctl from
    --racecheck-postgres-bin, PATH or /usr/lib/postgresql/*/bin) and removed at its end.
    Skips the tests that need it, with the reason, when neither is available;
    --racecheck-require-postgres makes that an error.

    Override it in a conftest.py to use a server of your own (a CI service, pytest-postgresql's
    ``postgresql_proc``): a session-scoped fixture of this name that returns a URL
    ``postgresql://user:password@host:port/dbname`` (the role needs CREATEDB; only the
    databases made there are dropped) or a ``pytest_racecheck.PostgresServer``.
    """
    # psycopg is imported lazily: without it, throwaway() says how to install it, and an
    # explicit URL without it is an error rather than a skip.
    from pytest_racecheck.backends import postgres

    config = request.config
    url = _postgres_setting(config, "postgres_url", POSTGRES_ENV)
    if url is not None:
        server = _external(url[0], source=f"set by {url[1]}")
    else:
        bin_setting = _postgres_setting(config, "postgres_bin")
        bindir = postgres.find_bindir(bin_setting[0] if bin_setting else None)
        if bindir is None:
            _unavailable(config, f"no PostgreSQL available: {postgres.ENABLE_HINT}")
        base = tmp_path_factory.getbasetemp()
        shared = base.parent if hasattr(config, "workerinput") else base
        try:
            server = postgres.PostgresServer.throwaway(shared, bindir)
        except postgres.PostgresUnavailable as exc:
            _unavailable(config, f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def _racecheck_server(
    postgres_server: Any,
) -> Iterator[tuple[PostgresServer, ServerProbe]]:
    """The ``postgres_server`` fixture's value as a server, whatever its override returned."""
    from pytest_racecheck.backends import postgres

    if isinstance(postgres_server, postgres.PostgresServer):
        yield postgres_server, ServerProbe(postgres_server.blocked_application_names)
        return
    if not isinstance(postgres_server, str) or not postgres_server.strip():
        pytest.fail(
            f"the postgres_server fixture returned {type(postgres_server).__name__}: return a "
            "URL postgresql://user:password@host:port/dbname or a "
            "pytest_racecheck.PostgresServer",
            pytrace=False,
        )
    server = _external(postgres_server, source="returned by the postgres_server fixture")
    try:
        yield server, ServerProbe(server.blocked_application_names)
    finally:
        server.close()


@pytest.fixture
def make_postgres_db(
    request: pytest.FixtureRequest, _racecheck_server: tuple[PostgresServer, ServerProbe]
) -> Iterator[Callable[[], PostgresDatabase]]:
    """Make fresh PostgreSQL databases on the postgres_server; each is dropped after the test.

    ``make_postgres_db()`` returns a new empty database (``.dsn``, ``.url``, ``.connect()``,
    ``.execute()``, ``.scalar()``; picklable, so racers can use it). Races in the test know
    which racers wait on its locks. Skips like postgres_server when no PostgreSQL is available.
    """
    from pytest_racecheck.backends import postgres

    server, server_probe = _racecheck_server
    # Errors go out without the frames, whose values hold the password.
    hidden = postgres.secrets_in(server.admin_dsn)
    made: list[tuple[PostgresDatabase, BackendProbe]] = []
    probes = request.node.stash.setdefault(probes_key, [])
    deaths = request.node.stash.setdefault(servers_key, [])
    if server.server_died not in deaths:
        deaths.append(server.server_died)  # a race in this test says when the server died

    def make() -> PostgresDatabase:
        db, problem = None, ""
        try:
            db = server.create_database()
        except Exception as exc:
            problem = postgres.scrub(f"{type(exc).__name__}: {exc}", hidden)
        if db is None:
            pytest.fail(f"could not create a PostgreSQL database: {problem}", pytrace=False)
        backend_probe = BackendProbe(db.connect)
        if server_probe not in probes:
            probes.append(server_probe)
        probes.append(backend_probe)
        made.append((db, backend_probe))
        return db

    yield make
    problems = []
    for db, backend_probe in made:
        backend_probe.close()
        try:
            server.drop_database(db)
        except Exception as exc:
            problems.append(postgres.scrub(f"{type(exc).__name__}: {exc}", hidden))
    if problems:
        pytest.fail(f"could not drop PostgreSQL database(s): {'; '.join(problems)}", pytrace=False)


@pytest.fixture
def postgres_db(make_postgres_db: Callable[[], PostgresDatabase]) -> PostgresDatabase:
    """A fresh PostgreSQL database for this test, dropped afterwards.

    Made by make_postgres_db on the postgres_server fixture's server (a throwaway one, or
    --racecheck-postgres-url's; override postgres_server to use your own). Skips with the
    reason when no PostgreSQL is available; --racecheck-require-postgres makes that an error.
    ``.dsn``, ``.url``, and the same conveniences as sqlite_db.
    """
    return make_postgres_db()


@pytest.fixture(params=["sqlite", "postgres"])
def race_db(request: pytest.FixtureRequest) -> Database:
    """The test runs twice: on a SQLite file and on a PostgreSQL database (ids sqlite, postgres).

    The postgres half skips like postgres_db when no PostgreSQL is available.
    """
    return request.getfixturevalue(f"{request.param}_db")
