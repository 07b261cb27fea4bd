"""The PostgreSQL backend: throwaway servers, their sharing and clean-up, external servers.

Everything here runs real servers and real processes; the checks read /proc, not the module's
own bookkeeping, so a bug in that bookkeeping cannot hide a leftover.
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck.backends import postgres as pg
from pytest_racecheck.backends.postgres import (
    PostgresDatabase,
    PostgresServer,
    PostgresSetupError,
    PostgresUnavailable,
)

REPO = Path(__file__).resolve().parents[1]
HAS_PROC = Path("/proc/self/stat").exists()
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="process checks read Linux's /proc")


@pytest.fixture(scope="module")
def bindir() -> Path:
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg 3) is not installed")
    found = pg.find_bindir(None)
    if found is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) found")
    return found


@pytest.fixture(scope="module")
def provider(bindir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One server for the tests that only need databases."""
    p = PostgresServer.throwaway(tmp_path_factory.mktemp("pg-shared"), bindir)
    yield p
    server = p.server
    p.close()
    assert server is not None
    assert_gone(server.root, server.pid, server.watchdog_pid)


# --- looking at processes without the module's help -------------------------------------------


def live(pid: int | None) -> bool:
    """Running, not a zombie waiting for its parent."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv and live(int(entry.name)):
            found.append(f"{entry.name}: {argv}")
    return found


def session_members(sid: int) -> list[int]:
    """A postmaster's backends share its session (pg_ctl starts it in a new one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[3] == str(sid) and fields[0] not in "ZX":
                found.append(int(entry.name))
    return found


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_gone(root: Path, pid: int, watchdog: int | None, timeout: float = 5.0) -> None:
    """No postmaster, backend, watchdog, initdb or directory is left of that server."""

    def clean() -> bool:
        return (
            not live(pid)
            and not live(watchdog)
            and not session_members(pid)
            and not processes_mentioning(str(root))
            and not root.exists()
        )

    if not wait_for(clean, timeout):
        pytest.fail(
            f"server {root} not cleaned up after {timeout}s: postmaster {pid} live={live(pid)}, "
            f"watchdog {watchdog} live={live(watchdog)}, backends {session_members(pid)}, "
            f"processes {processes_mentioning(str(root))}, directory exists={root.exists()}"
        )


def database_names(admin_dsn: str) -> set[str]:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


# --- owners in other processes, as xdist workers or killed runs are ---------------------------

OWNER = r"""
import json, sys
from pathlib import Path
from pytest_racecheck.backends.postgres import PostgresServer
shared, bindir, watchdog = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
provider = PostgresServer.throwaway(shared, bindir, watchdog=watchdog)
db = provider.create_database()
db.execute("CREATE TABLE t (id int)")
s = provider.server
print(json.dumps({"root": str(s.root), "pid": s.pid, "watchdog": s.watchdog_pid,
                  "db": db.name, "dsn": db.dsn, "admin": provider.admin_dsn}), flush=True)
if sys.stdin.readline().strip() == "close":
    provider.close()
    print("closed", flush=True)
"""


class Owner:
    """A process that owns (a share of) a throwaway server until told to close, or killed."""

    def __init__(self, shared: Path, bindir: Path, *, watchdog: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(shared), str(bindir), "1" if watchdog else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.info: dict[str, Any] = json.loads(self.readline())
        self.root = Path(self.info["root"])
        self.pid: int = self.info["pid"]
        self.watchdog: int | None = self.info["watchdog"]

    def readline(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            pytest.fail(f"owner process said nothing (exit status {self.proc.wait()})")
        return line

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        assert self.readline().strip() == "closed"
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def owners() -> Iterator[list[Owner]]:
    """Owner processes still running at the end of a failed test are killed; their watchdogs
    then clean up."""
    started: list[Owner] = []
    yield started
    for owner in started:
        if owner.proc.poll() is None:
            owner.kill()


# --- finding the binaries ---------------------------------------------------------------------


def test_find_bindir_takes_the_explicit_directory_or_refuses_it(
    bindir: Path, tmp_path: Path
) -> None:
    assert pg.find_bindir(str(bindir)) == bindir
    assert pg.find_bindir(bindir / "initdb") == bindir  # the program itself points at its dir
    with pytest.raises(PostgresSetupError, match="no initdb and pg_ctl there"):
        pg.find_bindir(str(tmp_path))


# --- the throwaway server's life --------------------------------------------------------------


@needs_proc
def test_start_create_drop_close_leaves_nothing(bindir: Path, tmp_path: Path) -> None:
    p = PostgresServer.throwaway(tmp_path, bindir)
    server = p.server
    assert server is not None
    assert live(server.pid) and live(server.watchdog_pid)
    assert f"-D {server.datadir}" in " ".join(processes_mentioning(str(server.datadir)))
    assert (tmp_path / pg.SHARED_STATE_NAME).exists()

    db = p.create_database()
    db.executescript(
        "CREATE TABLE runs (id serial PRIMARY KEY, status text NOT NULL);"
        "INSERT INTO runs (status) VALUES ('running'), ('done');"
    )
    assert db.scalar("SELECT count(*) FROM runs WHERE status LIKE 'run%'") == 1
    assert db.execute("SELECT status FROM runs WHERE id = %s", (2,)) == [("done",)]
    with db.connect() as conn:
        assert conn.autocommit
    assert db.name in database_names(p.admin_dsn)
    p.drop_database(db)
    assert db.name not in database_names(p.admin_dsn)

    p.close()
    assert_gone(server.root, server.pid, server.watchdog_pid)
    assert not (tmp_path / pg.SHARED_STATE_NAME).exists()
    p.close()  # twice is fine


@needs_proc
def test_a_server_that_fails_to_start_says_why_and_leaves_nothing(
    bindir: Path, tmp_path: Path
) -> None:
    before = set(Path(tempfile.gettempdir()).glob(pg.SERVER_DIR_PREFIX + "*"))
    with pytest.raises(PostgresSetupError, match="pg_ctl") as info:
        PostgresServer.throwaway(tmp_path, bindir, settings={"max_connections": "lots"})
    assert "max_connections" in str(info.value)  # the server log's complaint is in the message
    root = Path(str(info.value).split("-D ", 1)[1].split()[0]).parent
    assert root.name.startswith(pg.SERVER_DIR_PREFIX) and root not in before
    assert not root.exists()
    assert wait_for(lambda: not processes_mentioning(str(root)), 5), processes_mentioning(str(root))
    assert not (tmp_path / pg.SHARED_STATE_NAME).exists()


@needs_proc
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="runs as root only")
def test_as_root_the_server_runs_as_the_postgres_user(provider: PostgresServer) -> None:
    server = provider.server
    assert server is not None
    account = pwd.getpwnam(pg.SYSTEM_USER)
    status = Path(f"/proc/{server.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert {int(u) for u in uid_line.split()[1:]} == {account.pw_uid}
    st = server.root.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (account.pw_uid, 0o700)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="runs as root only")
def test_as_root_without_an_unprivileged_user_says_what_to_do(bindir: Path, tmp_path: Path) -> None:
    with pytest.raises(PostgresUnavailable) as info:
        PostgresServer.throwaway(tmp_path, bindir, system_user="racecheck-no-such-user")
    message = str(info.value)
    assert "useradd" in message and "RACECHECK_POSTGRES_URL" in message
    assert list(tmp_path.iterdir()) == []  # nothing was started


@needs_proc
def test_two_workers_share_one_server_and_the_last_close_stops_it(
    bindir: Path, tmp_path: Path, owners: list[Owner]
) -> None:
    a = Owner(tmp_path, bindir)
    owners.append(a)
    b = Owner(tmp_path, bindir)
    owners.append(b)
    assert (a.root, a.pid) == (b.root, b.pid)
    state = json.loads((a.root / "state.json").read_text())
    assert sorted(o["pid"] for o in state["owners"]) == sorted([a.proc.pid, b.proc.pid])

    a.close()
    assert live(a.pid), "the first close stopped a server another worker still uses"
    names = database_names(b.info["admin"])
    assert a.info["db"] not in names, "a provider drops its own databases when it closes"
    assert b.info["db"] in names
    import psycopg

    with psycopg.connect(b.info["dsn"]) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)

    b.close()
    assert_gone(b.root, b.pid, b.watchdog)


@needs_proc
def test_providers_in_one_process_share_too(bindir: Path, tmp_path: Path) -> None:
    first = PostgresServer.throwaway(tmp_path, bindir)
    second = PostgresServer.throwaway(tmp_path, bindir)
    server = first.server
    assert server is not None and second.server is not None
    assert second.server.pid == server.pid
    first.close()
    assert live(server.pid)
    db = second.create_database()
    assert db.scalar("SELECT 1") == 1
    second.close()
    assert_gone(server.root, server.pid, server.watchdog_pid)


# --- runs that die without closing ------------------------------------------------------------


@needs_proc
def test_a_sigkilled_owners_server_is_stopped_by_its_watchdog(
    bindir: Path, tmp_path: Path, owners: list[Owner]
) -> None:
    owner = Owner(tmp_path, bindir)
    owners.append(owner)
    assert live(owner.watchdog)
    owner.kill()
    started = time.monotonic()
    # The watchdog looks every 0.5 s and an immediate shutdown takes milliseconds.
    assert_gone(owner.root, owner.pid, owner.watchdog, timeout=15)
    print(f"orphaned server gone {time.monotonic() - started:.2f}s after SIGKILL")


@needs_proc
@pytest.mark.parametrize("where", ["same-run", "another-run"])
def test_a_sigkilled_owners_server_is_swept_by_the_next_acquire(
    bindir: Path, tmp_path: Path, owners: list[Owner], where: str
) -> None:
    owner = Owner(tmp_path / "killed", bindir, watchdog=False)
    owners.append(owner)
    assert owner.watchdog is None
    owner.kill()
    shared = tmp_path / "killed" if where == "same-run" else tmp_path / "next"
    p = PostgresServer.throwaway(shared, bindir)
    try:
        assert p.server is not None and p.server.root != owner.root
        assert_gone(owner.root, owner.pid, None, timeout=1)
        assert p.create_database().scalar("SELECT 1") == 1
    finally:
        p.close()


@needs_proc
def test_the_sweep_takes_only_dead_runs_of_this_machine(provider: PostgresServer) -> None:
    gone_pid = subprocess.Popen(["true"])
    gone_pid.wait()  # its pid now names nobody

    def fake_server(**state: Any) -> Path:
        root = Path(tempfile.mkdtemp(prefix=pg.SERVER_DIR_PREFIX))
        (root / ".racecheck-pg.lock").touch()
        owners = [{"id": "x", "pid": gone_pid.pid, "start": None}]
        record = {"kind": "pytest-racecheck-postgres", "owners": owners, **state}
        (root / "state.json").write_text(json.dumps(record))
        return root

    here = Path(f"/proc/{os.getpid()}/ns/pid").readlink()
    dead_run = fake_server(pid_namespace=str(here))
    other_container = fake_server(pid_namespace="pid:[1]")
    not_ours = Path(tempfile.mkdtemp(prefix=pg.SERVER_DIR_PREFIX))
    try:
        pg.sweep_stale_servers()  # (under xdist another worker's sweep may get there first)
        assert not dead_run.exists()
        assert other_container.exists() and not_ours.exists()
        assert provider.server is not None and provider.server.root.exists()
        assert provider.create_database().scalar("SELECT 1") == 1
    finally:
        for root in (dead_run, other_container, not_ours):
            if root.exists():
                for child in root.iterdir():
                    child.unlink()
                root.rmdir()


# --- the watchdog as a module ------------------------------------------------------------------


def test_the_watchdog_loads_neither_the_driver_nor_the_harness(tmp_path: Path) -> None:
    """It runs as ``python -I -m``, which imports the packages around it: they must stay light."""
    from pytest_racecheck.backends.postgres import state

    gone = tmp_path / "no-such-server"  # the watchdog returns at once: nothing to watch
    done = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-m", state.WATCHDOG_MODULE, str(gone), "0.01"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0  # the detached child's pid
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "pytest_racecheck.backends.postgres.state" in loaded  # (itself: __main__)
    heavy = {"psycopg", "filelock", "dill", "multiprocess", "pytest"}
    heavy.add("pytest_racecheck.controller.loop")
    assert not {name for name in loaded if name.split(".")[0] in heavy or name in heavy}


@needs_proc
@pytest.mark.parametrize("isolated", [True, False], ids=["python-I-m", "pythonpath-fallback"])
def test_the_watchdog_records_itself_and_leaves_with_its_directory(
    tmp_path: Path, isolated: bool
) -> None:
    from pytest_racecheck.backends.postgres import state, watchdog_launch

    root = tmp_path / "server"
    root.mkdir()
    pid = watchdog_launch.watchdog_pid(watchdog_launch.launch_watchdog(root, isolated=isolated))
    assert wait_for(lambda: (root / state.WATCHDOG_NAME).exists(), 10)
    record = json.loads((root / state.WATCHDOG_NAME).read_text())
    assert record["pid"] == pid and live(pid)
    assert state.watchdogs(root, None) == [pid]
    for child in root.iterdir():
        child.unlink()
    root.rmdir()
    assert wait_for(lambda: not live(pid), 5)


def test_without_proc_the_sweep_says_what_it_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_racecheck.linux import procfs

    monkeypatch.setattr(procfs, "available", lambda: False)
    monkeypatch.setattr(procfs, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"needs Linux's /proc.*judged by their owners' pids"):
        assert pg.sweep_stale_servers(tmp_path) == []


# --- external servers -------------------------------------------------------------------------


def test_an_external_server_gets_only_its_own_databases_created_and_dropped(
    bindir: Path, tmp_path: Path
) -> None:
    # A server of its own: another provider's spare made in the background would blur the
    # before/after comparison.
    with PostgresServer.throwaway(tmp_path, bindir) as provider:
        provider.spares = 0
        server = provider.server
        assert server is not None
        url = f"postgresql://postgres@/postgres?host={server.socket_dir}&port={server.port}"
        neighbour = provider.create_database()
        before = database_names(provider.admin_dsn)

        ext = PostgresServer.external(url)
        assert ext.server is None and ext.template == "template0"
        kept = ext.create_database()
        dropped = ext.create_database()
        dropped.execute("CREATE TABLE t (id int)")
        assert {kept.name, dropped.name} <= database_names(provider.admin_dsn)
        with pytest.raises(ValueError, match="not created by this provider"):
            ext.drop_database(neighbour)
        ext.drop_database(dropped)
        ext.close()  # drops `kept` and the spare it made ahead

        assert database_names(provider.admin_dsn) == before
        assert neighbour.scalar("SELECT 1") == 1
        assert live(server.pid)


def test_an_external_server_takes_sqlalchemy_urls_and_conninfo_strings(
    provider: PostgresServer,
) -> None:
    db = provider.create_database()
    for address in (db.url, db.uri, provider.admin_dsn):
        with PostgresServer.external(address) as ext:
            assert (
                ext.create_database().scalar("SELECT current_database()").startswith("racecheck_")
            )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("mysql://user@host/db", "not a PostgreSQL URL"),
        ("just-a-name", "neither a PostgreSQL URL nor a libpq connection string"),
        ("postgresql://user@/db?no_such_option=1", "invalid PostgreSQL URL"),
    ],
)
def test_a_bad_url_is_refused_up_front(url: str, message: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(PostgresSetupError, match=message) as info:
        PostgresServer.external(url)
    assert "postgresql://user:password@host:5432/dbname" in str(info.value)


def test_an_unreachable_server_is_an_error_that_hides_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://someone:s3cret@/db?host={tmp_path}/nowhere"
    with pytest.raises(PostgresSetupError, match="cannot connect") as info:
        PostgresServer.external(url)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


# --- databases and the lock probe -------------------------------------------------------------


def test_blocked_application_names_reports_a_session_waiting_on_a_row_lock(
    provider: PostgresServer,
) -> None:
    import psycopg

    db = provider.create_database()
    db.executescript("CREATE TABLE guard (id int PRIMARY KEY); INSERT INTO guard VALUES (1);")
    prefix = f"rc{os.getpid()}t{threading.get_ident() % 1000}"
    holder = db.with_params(application_name=f"{prefix}-holder").connect()
    waiter = db.with_params(application_name=f"{prefix}-waiter").connect()
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT id FROM guard WHERE id = 1 FOR UPDATE")
        assert provider.blocked_application_names(prefix) == set()

        done = threading.Event()

        def wait_for_the_row() -> None:
            waiter.execute("UPDATE guard SET id = 1 WHERE id = 1")
            done.set()

        thread = threading.Thread(target=wait_for_the_row, daemon=True)
        thread.start()
        assert wait_for(
            lambda: provider.blocked_application_names(prefix) == {f"{prefix}-waiter"}, 10
        )
        assert provider.blocked_application_names(f"{prefix}-h") == set()
        assert provider.blocked_application_names("somebody-else") == set()
        assert not done.is_set()

        holder.execute("COMMIT")
        thread.join(10)
        assert done.is_set()
        assert provider.blocked_application_names(prefix) == set()
    finally:
        for conn in (holder, waiter):
            conn.close()
        provider.drop_database(db)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(db.dsn)


def test_drop_database_ends_the_sessions_still_connected(provider: PostgresServer) -> None:
    import psycopg

    db = provider.create_database()
    conn = db.connect()
    assert db.scalar("SELECT 1") == 1  # the handle's own shared connection
    provider.drop_database(db)
    assert db.name not in database_names(provider.admin_dsn)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with pytest.raises(ValueError, match="not created by this provider"):
        provider.drop_database(db)


def test_the_handle_is_a_picklable_address(provider: PostgresServer) -> None:
    import psycopg

    db = provider.create_database()
    copy = pickle.loads(pickle.dumps(db))
    assert copy == db and isinstance(copy, PostgresDatabase) and copy.backend == "postgres"
    assert copy.scalar("SELECT current_database()") == db.name
    assert db.execute("SELECT 'a%'") == [("a%",)]  # no placeholders, no %% needed
    assert db.scalar("SELECT %s::int + 1", (1,)) == 2
    server = provider.server
    assert server is not None
    assert db.url == (
        f"postgresql+psycopg://postgres@/{db.name}?host={server.socket_dir}&port={server.port}"
    )
    assert db.uri.startswith("postgresql://postgres@/")
    with psycopg.connect(db.uri) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (db.name,)
    assert db.with_params(application_name="x").params["application_name"] == "x"


# --- speed --------------------------------------------------------------------------------------


@needs_proc
def test_speed(bindir: Path, tmp_path: Path) -> None:
    """Figures for the docs (run with -s to see them); the bounds only catch gross regressions."""
    started = time.perf_counter()
    p = PostgresServer.throwaway(tmp_path, bindir)
    start = time.perf_counter() - started
    try:
        creates: dict[int, list[float]] = {0: [], 1: []}
        for spares in (0, 1):
            p.spares = spares
            for _ in range(6):
                t = time.perf_counter()
                db = p.create_database()
                creates[spares].append(time.perf_counter() - t)
                db.executescript("CREATE TABLE runs (id serial PRIMARY KEY, status text)")
                time.sleep(0.2)  # a test's body: the spare is made meanwhile
                p.drop_database(db)
        t = time.perf_counter()
        for _ in range(100):
            p.blocked_application_names("nobody-")
        probe = (time.perf_counter() - t) / 100
    finally:
        t = time.perf_counter()
        p.close()
        close = time.perf_counter() - t

    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"

    print(
        f"\nserver start {start:.2f} s; create_database on demand {ms(creates[0])}, "
        f"with a spare {ms(creates[1])}; blocked_application_names {probe * 1000:.2f} ms; "
        f"close {close:.2f} s"
    )
    assert start < 30
    assert statistics.median(creates[1]) < 1
