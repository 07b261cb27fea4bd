"""pytest-postgresql beside pytest-racecheck: its server and its databases, raced by ours.

The inner runs know the PostgreSQL server only through pytest-postgresql's ``postgresql_noproc``
(pointed at this run's server by environment variables, as a project points it at its CI
service). ``postgresql_proc`` would start a server of its own, which PostgreSQL refuses to do
as root, the user CI runs as; ``noproc`` is the same recipe for everything after the start.

Why the verdicts cannot vary: every race holds its racers at ``meet_at="checked"``. Under
``B`` the first racer holds the write lock there and the others wait on it in the database;
the race must see that (``waited_on_lock``) to open the meeting, or it could only time out.
Under ``naive`` all racers have checked before any inserts, so every round creates one run
per racer: the negative control fails in every round, not by chance.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_postgresql")

CONFTEST = """
import os

import pytest
from pytest_postgresql import factories

postgresql_noproc = factories.postgresql_noproc(
    host=os.environ["APP_PG_HOST"],
    port=int(os.environ["APP_PG_PORT"]),
    user=os.environ["APP_PG_USER"],
    dbname="interop",
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture(scope="session")
def postgres_server(postgresql_noproc):
    # pytest-racecheck's postgres_db and make_postgres_db now make their databases here.
    p = postgresql_noproc
    return f"postgresql://{p.user}@/postgres?host={p.host}&port={p.port}"
"""

TESTS = """
import os

import pytest
from pytest_racecheck import database, runs


def meeting(race, db, strategy):
    runs.create_schema(db)
    return race(
        strategy,
        db,
        processes=3,
        rounds=3,
        meet_at="checked",
        timeout=30,
        reset=lambda: runs.reset(db),
        check=lambda: runs.active_count(db) == 1,
    )


@pytest.fixture
def their_db(postgresql):
    # pytest-postgresql's fresh database, as a handle racers can use and the race can ask
    # who waits on its locks.
    info = postgresql.info
    db = database(f"host={info.host} port={info.port} user={info.user} dbname={info.dbname}")
    yield db
    db.close()


def test_their_database_correct_locking_meets(race, their_db):
    result = meeting(race, their_db, runs.B)
    result.assert_exactly_one(runs.CREATED)
    assert all(r.waited_on_lock for r in result.rounds)


def test_their_database_naive_is_caught(race, their_db):
    result = meeting(race, their_db, runs.naive)
    with pytest.raises(AssertionError, match="3 racers returned"):
        result.assert_exactly_one(runs.CREATED)
    assert result.failing_rounds_so_far() == len(result.rounds) == 3


def test_postgres_db_is_made_on_their_server(race, postgres_db, postgresql_noproc):
    assert postgres_db.params["port"] == str(postgresql_noproc.port)
    assert postgres_db.params["host"] == postgresql_noproc.host
    with open(os.environ["APP_NAMES"], "a") as out:
        out.write(postgres_db.name + "\\n")
    result = meeting(race, postgres_db, runs.B)
    result.assert_exactly_one(runs.CREATED)
    assert all(r.waited_on_lock for r in result.rounds)
"""


def _databases(server) -> set[str]:
    with server._connect_admin() as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_pytest_postgresql_server_and_databases(
    pytester: pytest.Pytester, postgres_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_racecheck.backends.postgres import PostgresDatabase

    params = PostgresDatabase(dsn=postgres_server.admin_dsn, name="postgres").params
    monkeypatch.setenv("APP_PG_HOST", params["host"])
    monkeypatch.setenv("APP_PG_PORT", params["port"])
    monkeypatch.setenv("APP_PG_USER", params["user"])
    names = pytester.path / "names.txt"
    monkeypatch.setenv("APP_NAMES", str(names))
    before = _databases(postgres_server)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=3)
    made = names.read_text().split()
    assert len(made) == 1 and made[0] not in before
    # Nothing is left on their server: neither our database nor pytest-postgresql's. The
    # server is shared with the other xdist worker, whose tests make and drop databases of
    # their own meanwhile, so only the names this run made are looked for.
    left = _databases(postgres_server)
    assert made[0] not in left
    assert not {name for name in left - before if name.startswith("interop")}


def test_a_postgres_server_override_of_the_wrong_type_is_named(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def postgres_server():
            return 5432
        """
    )
    pytester.makepyfile("def test_it(postgres_db):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the postgres_server fixture returned int: return a URL postgresql://*"]
    )
