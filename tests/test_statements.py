"""Statements as implicit sync points, on real SQLite files and a real PostgreSQL, never mocks.

Each test installs the hooks, makes this process look like a racer with a recorder that keeps
every point reached, and asserts the exact names in order. A name ends with the file:line of
the statement's caller; ``at()`` gives the line after its own, so each expected name sits next
to the code that must produce it.
"""

from __future__ import annotations

import json
import sqlite3
import sqlite3.dbapi2 as dbapi2
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import PointRecorder

from pytest_racecheck import statements
from pytest_racecheck.instrument import points
from pytest_racecheck.statements import (
    psycopg_hooks,
    short_sql,
    sqlite_trace,
    statement_point_name,
)

FILE = Path(__file__).name


def at(offset: int = 1) -> str:
    """``test_statements.py:N`` for the line ``offset`` lines below the caller's."""
    return f"{FILE}:{sys._getframe(1).f_lineno + offset}"


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "short"),
    [
        ("SELECT count(*) FROM runs WHERE status = 'running'", "SELECT runs"),
        ('SELECT "r"."id", "r"."status" FROM "app_run" "r" WHERE "r"."id" = 1', "SELECT app_run"),
        ("select * from public.runs for update", "SELECT public.runs"),
        ("SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'running')", "SELECT runs"),
        ("SELECT pg_advisory_xact_lock(hashtext('runs'))", "SELECT pg_advisory_xact_lock"),
        ("SELECT extract(year FROM now())", "SELECT extract"),
        ("SELECT 1", "SELECT"),
        ("INSERT INTO runs (status) VALUES ('running')", "INSERT runs"),
        ("insert or ignore into runs values (1)", "INSERT runs"),
        ("REPLACE INTO runs VALUES (1)", "REPLACE runs"),
        ("UPDATE sync_lock SET holder = 1", "UPDATE sync_lock"),
        ("DELETE FROM runs", "DELETE runs"),
        ("  -- why\n /* how */ DELETE FROM ONLY runs", "DELETE runs"),
        ("WITH x AS (SELECT 1 FROM a) INSERT INTO runs SELECT * FROM x", "INSERT runs"),
        ("BEGIN ", "BEGIN"),
        ("BEGIN IMMEDIATE", "BEGIN IMMEDIATE"),
        ("begin isolation level serializable", "BEGIN SERIALIZABLE"),
        ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ", "BEGIN REPEATABLE READ"),
        ("COMMIT", "COMMIT"),
        ("END TRANSACTION", "COMMIT"),
        ("ROLLBACK", "ROLLBACK"),
        ('ROLLBACK TO SAVEPOINT "_pg3_1"', "ROLLBACK TO"),
        ("SAVEPOINT s1", "SAVEPOINT"),
        ("RELEASE SAVEPOINT s1", "RELEASE"),
        ("LOCK TABLE runs IN EXCLUSIVE MODE", "LOCK runs"),
        ("COPY runs (status) FROM STDIN", "COPY runs"),
        (
            "CREATE UNIQUE INDEX IF NOT EXISTS one_active ON runs (status)",
            "CREATE INDEX one_active",
        ),
        ("CREATE TABLE runs (id integer)", "CREATE TABLE runs"),
        ("PRAGMA journal_mode=wal", "PRAGMA journal_mode"),
        ("-- TRIGGER one_audit", ""),
        ("   ", ""),
    ],
)
def test_short_sql(sql: str, short: str) -> None:
    assert short_sql(sql) == short


def test_statement_point_name_is_the_callers_line() -> None:
    where = at()
    assert statement_point_name("UPDATE runs SET status = 'done'") == f"UPDATE runs @ {where}"
    frame = sys._getframe()
    assert statement_point_name("COMMIT", frame) == f"COMMIT @ {FILE}:{frame.f_lineno}"


# -- sqlite3 --------------------------------------------------------------------------------

SCHEMA = "CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)"


def test_sqlite_statements_implicit_begin_and_commit(rec: PointRecorder, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite")  # legacy transaction mode, as by default
    create = at()
    conn.execute(SCHEMA)
    insert = at()
    conn.execute("INSERT INTO runs (status) VALUES (?)", ("running",))
    select = at()
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    commit = at()
    conn.commit()
    conn.commit()  # nothing to commit: no statement, no point
    assert rec.names == [
        f"CREATE TABLE runs @ {create}",
        f"BEGIN @ {insert}",
        f"INSERT runs @ {insert}",
        f"SELECT runs @ {select}",
        f"COMMIT @ {commit}",
    ]
    assert rec.pids == []


def test_sqlite_context_manager_and_rollback(rec: PointRecorder, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute(SCHEMA)
    del rec.names[:]
    with_ok = at()
    with conn:
        conn.execute("INSERT INTO runs (status) VALUES ('running')")
    with_error = at()
    with pytest.raises(ValueError), conn:
        conn.execute("UPDATE runs SET status = 'done'")
        raise ValueError
    delete = at()
    conn.execute("DELETE FROM runs")
    rollback = at()
    conn.rollback()
    assert rec.names == [
        f"BEGIN @ {FILE}:{int(with_ok.split(':')[1]) + 1}",
        f"INSERT runs @ {FILE}:{int(with_ok.split(':')[1]) + 1}",
        f"COMMIT @ {with_ok}",
        f"BEGIN @ {FILE}:{int(with_error.split(':')[1]) + 1}",
        f"UPDATE runs @ {FILE}:{int(with_error.split(':')[1]) + 1}",
        f"ROLLBACK @ {with_error}",
        f"BEGIN @ {delete}",
        f"DELETE runs @ {delete}",
        f"ROLLBACK @ {rollback}",
    ]
    assert conn.execute("SELECT status FROM runs").fetchall() == [("running",)]


def test_sqlite_explicit_transactions_executescript_executemany(
    rec: PointRecorder, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    script = at()
    conn.executescript(
        SCHEMA + "; BEGIN IMMEDIATE; INSERT INTO runs (status) VALUES ('a');"
        "UPDATE runs SET status = 'b'; COMMIT;"
    )
    cur = conn.cursor()
    begin = at()
    cur.execute("BEGIN IMMEDIATE")
    many = at()
    cur.executemany("INSERT INTO runs (status) VALUES (?)", [("c",), ("d",), ("e",)])
    commit = at()
    cur.execute("COMMIT")
    assert rec.names == [
        f"CREATE TABLE runs @ {script}",
        f"BEGIN IMMEDIATE @ {script}",
        f"INSERT runs @ {script}",
        f"UPDATE runs @ {script}",
        f"COMMIT @ {script}",
        f"BEGIN IMMEDIATE @ {begin}",
        f"INSERT runs @ {many}",
        f"INSERT runs @ {many}",
        f"INSERT runs @ {many}",
        f"COMMIT @ {commit}",
    ]


def test_sqlite_trigger_bodies_make_no_point(rec: PointRecorder, tmp_path: Path) -> None:
    """SQLite reports each trigger program and statement; the hooks must not take them as points,
    yet the same statement executed again must be a point again."""
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    conn.executescript(
        SCHEMA + "; CREATE TABLE audit (run INTEGER);"
        "CREATE TRIGGER one_audit AFTER INSERT ON runs BEGIN"
        " INSERT INTO audit VALUES (new.id); INSERT INTO audit VALUES (-new.id); END;"
    )
    del rec.names[:]
    one = at()
    conn.execute("INSERT INTO runs (status) VALUES ('a')")
    two_rows = at()
    conn.execute("INSERT INTO runs (status) SELECT 'b' UNION ALL SELECT 'c'")
    cur = conn.cursor()
    again = at(2)
    for _ in range(2):
        cur.execute("INSERT INTO audit VALUES (0)")
    assert rec.names == [
        f"INSERT runs @ {one}",
        f"INSERT runs @ {two_rows}",
        f"INSERT audit @ {again}",
        f"INSERT audit @ {again}",
    ]
    assert conn.execute("SELECT count(*) FROM audit").fetchone() == (8,)  # the triggers ran


def test_sqlite_factory_and_user_trace_callback_are_kept(
    rec: PointRecorder, tmp_path: Path
) -> None:
    class Mine(sqlite3.Connection):
        flavour = "mine"

    traced: list[str] = []
    conn = sqlite3.connect(tmp_path / "db.sqlite", 5.0, 0, None, True, Mine)  # positional
    assert isinstance(conn, Mine) and conn.flavour == "mine"
    conn.set_trace_callback(traced.append)
    create = at()
    conn.execute(SCHEMA)
    conn.set_trace_callback(None)
    insert = at()
    conn.execute("INSERT INTO runs (status) VALUES ('a')")
    by_keyword = dbapi2.connect(str(tmp_path / "db.sqlite"), factory=Mine)
    assert isinstance(by_keyword, Mine)
    select = at()
    by_keyword.execute("SELECT * FROM runs")
    assert traced == [SCHEMA]
    assert rec.names == [
        f"CREATE TABLE runs @ {create}",
        f"INSERT runs @ {insert}",
        f"SELECT runs @ {select}",
    ]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
@pytest.mark.parametrize("statement", ["BEGIN IMMEDIATE", "INSERT INTO runs (status) VALUES (2)"])
def test_trace_callback_runs_before_the_statement_takes_its_lock(
    rec: PointRecorder, tmp_path: Path, journal_mode: str, statement: str
) -> None:
    """A racer held at a statement's point must not hold that statement's lock.

    Connection A holds the write lock. B's statement reaches its point at once (it is not
    waiting in the busy handler for A), and while B sits at the point a third connection can
    take the write lock: B has not asked for it yet.
    """
    path = tmp_path / "db.sqlite"
    a = sqlite3.connect(path, isolation_level=None, timeout=10)
    a.execute(f"PRAGMA journal_mode={journal_mode}")
    a.execute(SCHEMA)
    a.execute("BEGIN IMMEDIATE")
    a.execute("INSERT INTO runs (status) VALUES (1)")
    at_point, go_on, b_done = threading.Event(), threading.Event(), threading.Event()
    b_thread: list[int] = []
    wanted = short_sql(statement)

    def hold_b(name: str) -> None:
        if threading.get_ident() in b_thread and name.startswith(wanted + " @"):
            at_point.set()
            go_on.wait(10)

    recorder_reach = rec.reach
    rec.reach = lambda name, statement=False, sql=None, conn=0, info=None: (  # type: ignore[method-assign]
        recorder_reach(name),
        hold_b(name),
    )

    def b() -> None:
        b_thread.append(threading.get_ident())
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        conn.execute(statement)
        conn.close()
        b_done.set()

    thread = threading.Thread(target=b, daemon=True)
    thread.start()
    try:
        assert at_point.wait(5), "B never reached its point while A held the write lock"
        a.execute("COMMIT")
        c = sqlite3.connect(path, isolation_level=None, timeout=0)  # no waiting: fails if locked
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO runs (status) VALUES (3)")
        c.execute("COMMIT")
        c.close()
        assert not b_done.is_set()
    finally:
        go_on.set()
        thread.join(10)
    assert b_done.is_set()


# -- install / uninstall ---------------------------------------------------------------------

PSYCOPG_PATCHED = [
    ("Cursor", "execute"),
    ("Cursor", "executemany"),
    ("Cursor", "copy"),
    ("Cursor", "stream"),
    ("ServerCursor", "execute"),
    ("Connection", "commit"),
    ("Connection", "rollback"),
    ("Transaction", "__enter__"),
    ("Transaction", "__exit__"),
]


def test_uninstall_restores_the_originals(tmp_path: Path) -> None:
    import psycopg

    connect, dbapi2_connect = sqlite3.connect, dbapi2.connect
    before = {(c, a): getattr(psycopg, c).__dict__.get(a) for c, a in PSYCOPG_PATCHED}
    statements.install()
    statements.install()  # again: replaces the callback, wraps nothing twice
    try:
        assert statements.installed()
        assert sqlite3.connect is not connect and dbapi2.connect is not dbapi2_connect
        assert all(getattr(psycopg, c).__dict__.get(a) is not before[c, a] for c, a in before)
    finally:
        statements.uninstall()
    assert not statements.installed()
    assert sqlite3.connect is connect and dbapi2.connect is dbapi2_connect
    assert all(getattr(psycopg, c).__dict__.get(a) is before[c, a] for c, a in before)
    recorder = PointRecorder()
    points.activate(recorder)  # type: ignore[arg-type]
    try:
        conn = sqlite3.connect(tmp_path / "db.sqlite")
        assert type(conn) is sqlite3.Connection
        conn.execute(SCHEMA)
    finally:
        points.activate(None)
    assert recorder.names == []


NO_PSYCOPG_SCRIPT = """
import json, sqlite3, sys
sys.modules["psycopg"] = None  # as if the postgres extra were not installed
from pytest_racecheck.instrument import points
from pytest_racecheck import statements


class Recorder:
    last = None

    def __init__(self):
        self.names = []

    def reach(self, name, statement=False, sql=None, conn=0, info=None):
        self.names.append(name)


statements.install()
recorder = Recorder()
points.activate(recorder)
sqlite3.connect(sys.argv[1]).execute("CREATE TABLE runs (id INTEGER)")
points.activate(None)
print(json.dumps([statements.installed(), recorder.names]))
"""


def test_without_psycopg_install_covers_sqlite(tmp_path: Path) -> None:
    script = tmp_path / "no_psycopg.py"
    script.write_text(NO_PSYCOPG_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "db.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    line = NO_PSYCOPG_SCRIPT.splitlines().index(
        'sqlite3.connect(sys.argv[1]).execute("CREATE TABLE runs (id INTEGER)")'
    )
    assert json.loads(done.stdout) == [True, [f"CREATE TABLE runs @ no_psycopg.py:{line + 1}"]]


def test_no_racer_computes_no_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a race the hooks must not even name the statement: that is the fast path."""
    named: list[str] = []
    real = statements.short_sql

    def counting(sql: str) -> str:
        named.append(sql)
        return real(sql)

    monkeypatch.setattr(sqlite_trace, "short_sql", counting)  # where the sqlite3 hook finds it
    statements.install()
    try:
        conn = sqlite3.connect(tmp_path / "db.sqlite")
        conn.execute(SCHEMA)
        with conn:
            conn.execute("INSERT INTO runs (status) VALUES ('a')")
        assert named == []
        recorder = PointRecorder()
        points.activate(recorder)  # type: ignore[arg-type]
        try:
            conn.execute("DELETE FROM runs")
        finally:
            points.activate(None)
        assert named == ["BEGIN ", "DELETE FROM runs"]
        assert len(recorder.names) == 2
    finally:
        statements.uninstall()


# -- psycopg 3 ------------------------------------------------------------------------------

PG_SCHEMA = "CREATE TABLE runs (id serial PRIMARY KEY, status text)"


def test_psycopg_cursor_and_connection_paths(postgres_db: Any, rec: PointRecorder) -> None:
    import psycopg

    conn = psycopg.connect(postgres_db.dsn)
    cur = conn.cursor()
    create = at()
    cur.execute(PG_SCHEMA)
    many = at()
    cur.executemany("INSERT INTO runs (status) VALUES (%s)", [("a",), ("b",)])
    stream = at()
    assert len(list(cur.stream("SELECT id FROM runs"))) == 2
    copy = at()
    with cur.copy("COPY runs (status) FROM STDIN") as copier:
        copier.write_row(("c",))
    update = at()
    conn.execute("UPDATE runs SET status = 'x'")  # goes through Cursor.execute: one point
    commit = at()
    conn.commit()
    conn.commit()  # idle: nothing is sent, no point
    delete = at()
    conn.execute("DELETE FROM runs")
    rollback = at()
    conn.rollback()
    with conn.cursor(name="named") as server_cursor:
        server = at()
        server_cursor.execute("SELECT status FROM runs")
        assert server_cursor.fetchall() == [("x",)] * 3
    conn.rollback()
    assert rec.names == [
        f"CREATE TABLE runs @ {create}",
        f"INSERT runs @ {many}",
        f"SELECT runs @ {stream}",
        f"COPY runs @ {copy}",
        f"UPDATE runs @ {update}",
        f"COMMIT @ {commit}",
        f"DELETE runs @ {delete}",
        f"ROLLBACK @ {rollback}",
        f"SELECT runs @ {server}",
        f"ROLLBACK @ {FILE}:{int(server.split(':')[1]) + 2}",
    ]
    assert rec.pids == [conn.info.backend_pid]
    conn.close()


def test_psycopg_transactions_and_connection_context(postgres_db: Any, rec: PointRecorder) -> None:
    import psycopg

    with psycopg.connect(postgres_db.dsn, autocommit=True) as setup:
        setup.execute(PG_SCHEMA)
    del rec.names[:]
    conn = psycopg.connect(postgres_db.dsn, autocommit=True)
    outer = at()
    with conn.transaction():
        insert = at()
        conn.execute("INSERT INTO runs (status) VALUES ('a')")
        inner = at()
        with conn.transaction():
            conn.execute("UPDATE runs SET status = 'b'")
        undone = at()
        with conn.transaction() as tx:
            conn.execute("DELETE FROM runs")
            raise psycopg.Rollback(tx)
    failed = at()
    with pytest.raises(ValueError), conn.transaction():
        raise ValueError
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    serializable = at()
    with conn.transaction():
        pass
    conn.close()
    ctx = at()
    with psycopg.connect(postgres_db.dsn) as managed:
        managed.execute("UPDATE runs SET status = 'c'")
    assert rec.names == [
        f"BEGIN @ {outer}",
        f"INSERT runs @ {insert}",
        f"SAVEPOINT @ {inner}",
        f"UPDATE runs @ {FILE}:{int(inner.split(':')[1]) + 1}",
        f"RELEASE @ {inner}",
        f"SAVEPOINT @ {undone}",
        f"DELETE runs @ {FILE}:{int(undone.split(':')[1]) + 1}",
        f"ROLLBACK TO @ {undone}",
        f"COMMIT @ {outer}",
        f"BEGIN @ {failed}",
        f"ROLLBACK @ {failed}",
        f"BEGIN SERIALIZABLE @ {serializable}",
        f"COMMIT @ {serializable}",
        f"UPDATE runs @ {FILE}:{int(ctx.split(':')[1]) + 1}",
        f"COMMIT @ {ctx}",
    ]
    with psycopg.connect(postgres_db.dsn) as check:
        assert check.execute("SELECT status FROM runs").fetchall() == [("c",)]


def test_psycopg_composed_sql_is_named(postgres_db: Any, rec: PointRecorder) -> None:
    import psycopg
    from psycopg import sql

    conn = psycopg.connect(postgres_db.dsn, autocommit=True)
    conn.execute(PG_SCHEMA)
    del rec.names[:]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier("runs"), sql.Identifier("status"), sql.Literal("a")
    )
    insert = at()
    conn.execute(query)
    select = at()
    conn.execute(sql.SQL("SELECT {} FROM {}").format(sql.Identifier("id"), sql.Identifier("runs")))
    assert rec.names == [f"INSERT runs @ {insert}", f"SELECT runs @ {select}"]
    # Without a usable connection the name is rebuilt from the parts.
    assert psycopg_hooks._composable_text(query) == 'INSERT INTO "runs" ("status") VALUES (?)'
    conn.close()


def test_psycopg_backend_pid_once_per_connection_before_its_point(
    postgres_db: Any, rec: PointRecorder
) -> None:
    import psycopg

    first = psycopg.connect(postgres_db.dsn, autocommit=True)
    second = psycopg.connect(postgres_db.dsn, autocommit=True)
    first.execute("SELECT 1")
    first.execute("SELECT 2")
    second.execute("SELECT 3")
    first.execute("SELECT 4")
    assert rec.pids == [first.info.backend_pid, second.info.backend_pid]
    # Each pid was reported as its connection was made, before any point.
    assert rec.pids_seen_at == [2, 2, 2, 2]
    first.close()
    second.close()


def test_no_racer_reports_no_backend_pid(postgres_db: Any) -> None:
    import psycopg

    pids: list[int] = []
    statements.install(pids.append)
    try:
        with psycopg.connect(postgres_db.dsn) as conn:
            conn.execute("SELECT 1")
    finally:
        statements.uninstall()
    assert pids == []


# -- real ORMs --------------------------------------------------------------------------------


def _orm_declarative() -> tuple[Any, Any]:
    from sqlalchemy import Integer, String
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    class Base(DeclarativeBase):
        pass

    class Run(Base):
        __tablename__ = "runs"
        id = mapped_column(Integer, primary_key=True)
        status = mapped_column(String(20))

    return Base, Run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sqlalchemy_session_for_update_and_commit(
    rec: PointRecorder, request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_db").url
    Base, Run = _orm_declarative()
    engine = create_engine(url)
    Base.metadata.create_all(engine)  # connects and initializes the dialect before recording
    del rec.names[:]
    with Session(engine) as session:
        select_line = at()
        found = session.scalars(select(Run).where(Run.status == "running").with_for_update())
        assert found.first() is None
        session.add(Run(status="running"))
        commit = at()
        session.commit()
    engine.dispose()
    expected = [f"SELECT runs @ {select_line}"]
    expected += [f"BEGIN @ {commit}"] if backend == "sqlite" else []  # psycopg's BEGIN: no point
    expected += [f"INSERT runs @ {commit}", f"COMMIT @ {commit}"]
    assert rec.names == expected


DJANGO_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pytest_racecheck.instrument import points
from pytest_racecheck import statements

statements.install()  # before Django opens its connection: it connects through the driver
import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["raceapp"], DATABASES={"default": json.loads(sys.argv[2])})
django.setup()
from django.db import connection
from raceapp.models import Run

with connection.schema_editor() as editor:
    editor.create_model(Run)


class Recorder:
    last = None

    def __init__(self):
        self.names = []

    def reach(self, name, statement=False, sql=None, conn=0, info=None):
        self.names.append(name)


recorder = Recorder()
points.activate(recorder)
lines = [sys._getframe().f_lineno + 1]
run, created = Run.objects.get_or_create(status="running")
lines.append(sys._getframe().f_lineno + 1)
again, created_again = Run.objects.get_or_create(status="running")
points.activate(None)
assert created and not created_again and again.pk == run.pk
print(json.dumps({"names": recorder.names, "lines": lines}))
"""

DJANGO_MODELS = """
from django.db import models


class Run(models.Model):
    status = models.CharField(max_length=20)

    class Meta:
        app_label = "raceapp"
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_django_get_or_create(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    """Django can be configured once per process: this runs in a fresh interpreter."""
    app = tmp_path / "raceapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text(textwrap.dedent(DJANGO_MODELS))
    script = tmp_path / "django_race.py"
    script.write_text(DJANGO_SCRIPT)
    if backend == "sqlite":
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite")}
    else:
        params = request.getfixturevalue("postgres_db").params
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params["dbname"],
            "USER": params.get("user", ""),
            "PASSWORD": params.get("password", ""),
            "HOST": params.get("host", ""),
            "PORT": params.get("port", ""),
        }
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), json.dumps(database)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    created, got = (f"django_race.py:{n}" for n in out["lines"])
    expected = [f"SELECT raceapp_run @ {created}"]
    expected += [f"BEGIN @ {created}"] if backend == "sqlite" else []
    expected += [
        f"INSERT raceapp_run @ {created}",
        f"COMMIT @ {created}",
        f"SELECT raceapp_run @ {got}",
    ]
    assert out["names"] == expected
