"""PostgreSQL for races: a throwaway server per test run, a fresh database per test.

Racers need a real server (SQLite's locking is not PostgreSQL's), and tests must not depend on a
developer's database, so by default a server is made for the run: ``initdb`` and ``pg_ctl`` into
a new directory under ``/tmp``, reachable through a unix socket only, with durability off. That
takes about a second; each test's database is then cloned from a template in milliseconds.

Who stops the server. Every process using it (pytest, or each pytest-xdist worker) registers as
an owner in the server directory's ``state.json``. The last owner's :meth:`PostgresProvider.close`
stops it and removes the directory. For runs that cannot close (SIGKILL, a crash) a watchdog
process polls the owners and does the same once none is alive, and every later run sweeps
servers whose owners are all dead. One lock per server directory orders all of them.

This module knows the database and the processes, never pytest: the plugin maps
:class:`PostgresUnavailable` to a skip and :class:`PostgresSetupError` to an error.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from pytest_racecheck.backends.base import Database

if TYPE_CHECKING:
    import pwd

    import psycopg

SUPERUSER = "postgres"
"""The throwaway server's database superuser (``initdb -U``)."""
SYSTEM_USER = "postgres"
"""The operating-system user that runs the throwaway server when the tests run as root."""
TEMPLATE = "racecheck_template"
"""Every per-test database on a throwaway server is a copy of this one."""
SERVER_DIR_PREFIX = "racecheck-pg-"
SHARED_LOCK_NAME = "racecheck-pg.lock"
SHARED_STATE_NAME = "racecheck-pg.json"
WATCHDOG_INTERVAL = 0.5
"""Seconds between the watchdog's looks at the owners: the bound on an orphan's lifetime."""

SERVER_SETTINGS: Mapping[str, str] = {
    # Durability buys nothing for a server that is deleted at the end of the run.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Racers times tests under xdist; each racer opens its own connections.
    "max_connections": "200",
    # An autovacuum worker connected to the template makes CREATE DATABASE fail at random.
    "autovacuum": "off",
    "jit": "off",
}

_PORT = 5432
_STATE_NAME = "state.json"
_LOCK_NAME = ".racecheck-pg.lock"
_LOG_NAME = "server.log"
_KIND = "pytest-racecheck-postgres"
_SHARED_LOCK_TIMEOUT = 300.0
_ORPHAN_DIR_AGE = 60.0
_SERVER_PROGRAMS = frozenset({"postgres", "postmaster", "initdb", "pg_ctl"})
_ENABLE_HINT = (
    "install PostgreSQL's server binaries (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql) and pass --racecheck-postgres-bin DIR if initdb is not on "
    "PATH, or point the tests at an existing server with --racecheck-postgres-url / ini "
    "racecheck_postgres_url / RACECHECK_POSTGRES_URL=postgresql://user:password@host:5432/dbname"
)


class PostgresUnavailable(Exception):
    """There is no PostgreSQL to test against; the message says how to get one (a skip)."""


class PostgresSetupError(RuntimeError):
    """PostgreSQL was configured or found but could not be used (an error: a skip would hide it)."""


# --- the handle -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresDatabase(Database):
    """One database on a PostgreSQL server, addressed by a libpq connection string.

    Only the string travels: the handle pickles into racers and each opens its own connections.
    psycopg takes ``%s`` placeholders.
    """

    dsn: str
    name: str

    backend: ClassVar[str] = "postgres"

    @property
    def params(self) -> dict[str, str]:
        """The connection parameters of ``dsn`` (host, port, user, dbname, ...)."""
        return _parse_conninfo(self.dsn)

    @property
    def url(self) -> str:
        """SQLAlchemy URL for psycopg 3: ``postgresql+psycopg://user@/name?host=/socket/dir``."""
        return _url(self.params, "postgresql+psycopg")

    @property
    def uri(self) -> str:
        """Plain libpq URI, ``postgresql://...``, for psql, Prisma, node-postgres and friends."""
        return _url(self.params, "postgresql")

    def with_params(self, **params: str | int) -> PostgresDatabase:
        """The same database with more connection parameters (``application_name``, say)."""
        return PostgresDatabase(dsn=_make_conninfo(self.dsn, **params), name=self.name)

    def connect(self, **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """A new autocommit connection; ``params`` are added to the connection string."""
        _require_psycopg()
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, **params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """As the base class; without parameters the SQL goes as is, so ``'a%'`` needs no ``%%``."""
        cur = self.shared_connection().execute(sql, params or None)
        rows = cur.fetchall() if cur.description is not None else []
        return [tuple(row) for row in rows]

    def executescript(self, sql: str) -> None:
        """Several statements in one string (psycopg sends a query without parameters as is)."""
        self.shared_connection().execute(sql)


# --- finding the binaries ---------------------------------------------------------------------


def find_bindir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when there is none.

    Looks at ``explicit`` (a directory, or one of the programs in it), then ``pg_config
    --bindir``, then ``initdb`` on PATH, then the newest of the usual install places. An
    ``explicit`` place without the programs raises :class:`PostgresSetupError`: somebody asked
    for it, so quietly using another PostgreSQL would be wrong.
    """
    if explicit is not None and str(explicit).strip():
        path = Path(explicit).expanduser()
        if path.is_file():
            path = path.parent
        if _has_server_tools(path):
            return path
        raise PostgresSetupError(
            f"--racecheck-postgres-bin {str(explicit)!r}: no initdb and pg_ctl there; "
            "give the directory that holds them (e.g. /usr/lib/postgresql/16/bin)"
        )
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_server_tools(Path(out)):
            return Path(out)
    initdb = shutil.which("initdb")
    if initdb is not None:
        path = Path(initdb).resolve().parent
        if _has_server_tools(path):
            return path
    patterns = (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
        "/usr/local/pgsql/bin",
    )
    found = [p for pattern in patterns for p in Path("/").glob(pattern.lstrip("/"))]
    for path in sorted(found, key=_version_key, reverse=True):
        if _has_server_tools(path):
            return path
    return None


def _has_server_tools(path: Path) -> bool:
    return all(os.access(path / tool, os.X_OK) and (path / tool).is_file() for tool in _TOOLS)


_TOOLS = ("initdb", "pg_ctl")


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/16/bin`` sorts after ``.../9.6/bin``."""
    return tuple(int(n) for n in re.findall(r"\d+", str(path)))


# --- the provider -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrowawayServer:
    """Where a throwaway server lives: enough to reach it, watch it and clean up after it."""

    root: Path
    datadir: Path
    socket_dir: Path
    port: int
    pid: int
    """The postmaster: ``postgres -D <datadir>``; its backends are in its session."""
    watchdog_pid: int | None
    log_file: Path


_counter = itertools.count(1)
_open_providers: weakref.WeakSet[PostgresProvider] = weakref.WeakSet()


class PostgresProvider:
    """Databases for one pytest process: a throwaway server's, or an existing server's.

    Make one per process (pytest, or each xdist worker) with :meth:`throwaway` or
    :meth:`external`, call :meth:`create_database` / :meth:`drop_database` per test and
    :meth:`close` at the end. It keeps one admin connection, for quick polling, and
    :attr:`spares` databases made ahead (set it to 0 to make each one on demand).
    """

    admin_dsn: str
    template: str
    server: ThrowawayServer | None
    server_version: int

    def __init__(
        self,
        admin_params: Mapping[str, str],
        *,
        template: str,
        file_copy: bool,
        server: ThrowawayServer | None = None,
        owner_token: str | None = None,
        spares: int = 1,
    ) -> None:
        """Use :meth:`throwaway` or :meth:`external`; this connects the admin connection."""
        self._base = {k: v for k, v in admin_params.items() if k != "dbname"}
        self.admin_dsn = _make_conninfo("", **admin_params)
        self.template = template
        self.server = server
        self._file_copy = file_copy
        self._owner_token = owner_token
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._created: set[str] = set()
        self._closed = False
        self.spares = spares
        self._spare_names: list[str] = []
        self._spare_lock = threading.Lock()
        self._spare_thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._conn = self._connect_admin()
        self.server_version = self._conn.info.server_version
        _open_providers.add(self)

    # construction

    @classmethod
    def throwaway(
        cls,
        shared_dir: Path,
        bindir: Path,
        *,
        system_user: str = SYSTEM_USER,
        watchdog: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> PostgresProvider:
        """Join this run's throwaway server, starting it if this process is the first.

        ``shared_dir`` is the same for every xdist worker of one run; a lock there makes sure
        only one of them starts the server. ``system_user`` runs it when the tests run as root.
        ``settings`` add to :data:`SERVER_SETTINGS` (they apply only when this call starts it).
        ``watchdog=False`` leaves killed runs to the next run's sweep alone (tests use it).
        """
        _require_psycopg()
        from filelock import FileLock

        bindir = Path(bindir)
        if not _has_server_tools(bindir):
            raise PostgresUnavailable(f"no initdb and pg_ctl in {bindir}: {_ENABLE_HINT}")
        account = _server_account(system_user)
        shared_dir = Path(shared_dir)
        shared_dir.mkdir(parents=True, exist_ok=True)
        owner = _current_owner()
        with FileLock(str(shared_dir / SHARED_LOCK_NAME), timeout=_SHARED_LOCK_TIMEOUT):
            sweep_stale_servers()
            state = _join(shared_dir, owner)
            if state is None:
                state = _start(shared_dir, bindir, account, owner, settings or {}, watchdog)
        server = _server_info(state)
        try:
            return cls(
                {
                    "host": str(server.socket_dir),
                    "port": str(server.port),
                    "user": SUPERUSER,
                    "dbname": "postgres",
                },
                template=TEMPLATE,
                file_copy=True,
                server=server,
                owner_token=owner["id"],
            )
        except BaseException:
            _leave(server.root, owner["id"])
            raise

    @classmethod
    def external(cls, url: str, *, template: str = "template0") -> PostgresProvider:
        """Use an existing server: ``postgresql://user:password@host:port/dbname`` or a conninfo.

        The URL's database is the admin connection's (``postgres`` when there is none); the
        role needs CREATEDB. New databases copy ``template`` (``template0`` takes no
        connections, so copying it never fails on a busy server) and only they are dropped.
        """
        _require_psycopg()
        params = _parse_server_url(url)
        admin = dict(params)
        admin.setdefault("dbname", "postgres")
        admin.setdefault("connect_timeout", "10")
        try:
            provider = cls(admin, template=template, file_copy=False)
        except Exception as exc:
            raise PostgresSetupError(
                f"cannot connect to the PostgreSQL server at {_display(params)}: "
                f"{str(exc).strip()} (set by --racecheck-postgres-url, ini racecheck_postgres_url "
                "or RACECHECK_POSTGRES_URL)"
            ) from exc
        try:
            provider._check_can_create()
        except BaseException:
            provider.close()
            raise
        return provider

    @classmethod
    def from_config(
        cls, shared_dir: Path, *, url: str | None = None, bindir: str | None = None
    ) -> PostgresProvider:
        """The usual choice: ``url`` when given, else a throwaway server (``bindir`` or found)."""
        if url:
            return cls.external(url)
        found = find_bindir(bindir)
        if found is None:
            raise PostgresUnavailable(f"no PostgreSQL server binaries found: {_ENABLE_HINT}")
        return cls.throwaway(shared_dir, found)

    # per test

    def create_database(self) -> PostgresDatabase:
        """A new, empty database with a unique name, copied from the template.

        A copy takes 15 ms on an idle machine and 100+ ms on a busy one, so a spare is made in
        the background (its own connection, so lock polling never waits behind it) and the
        next call takes it at once.
        """
        self._check_open()
        with self._spare_lock:
            name = self._spare_names.pop(0) if self._spare_names else None
        if name is None:
            name = self._new_database(self._admin)
        db = PostgresDatabase(dsn=_make_conninfo("", **self._base, dbname=name), name=name)
        self._refill_spares()
        return db

    def drop_database(self, db: PostgresDatabase) -> None:
        """Drop a database this provider created, ending the sessions still connected to it."""
        self._check_open()
        if db.name not in self._created:
            raise ValueError(f"{db.name!r} was not created by this provider: not dropping it")
        db.close()
        self._drop(db.name)
        self._created.discard(db.name)

    def blocked_application_names(self, prefix: str) -> set[str]:
        """``application_name`` of sessions starting with ``prefix`` that wait on another's lock.

        A racer waiting inside the database has arrived wherever it was going: the controller
        counts it at the sync point so that correct locking never deadlocks a meeting. The
        prefix filter runs first (``OFFSET 0`` fences it) so ``pg_blocking_pids`` runs only
        on the race's own sessions.
        """
        self._check_open()
        rows = self._admin(
            "SELECT application_name FROM ("
            " SELECT pid, application_name FROM pg_stat_activity"
            " WHERE state = 'active' AND left(application_name, %s::int) = %s OFFSET 0"
            ") AS a WHERE cardinality(pg_blocking_pids(a.pid)) > 0",
            (len(prefix), prefix),
        )
        return {row[0] for row in rows}

    def close(self) -> None:
        """Drop what is left of this provider's databases; the last owner stops the server."""
        if self._closed or os.getpid() != self._pid:
            return  # a forked racer has a copy of this object: only its creator closes it
        self._closed = True
        _open_providers.discard(self)
        try:
            filler = self._spare_thread
            if filler is not None:
                filler.join(timeout=60)  # a copy in flight would be created after our drops
            for name in sorted(self._created):
                with contextlib.suppress(Exception):
                    self._drop(name)
            self._created.clear()
            self._spare_names.clear()
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            if self.server is not None and self._owner_token is not None:
                _leave(self.server.root, self._owner_token)

    def __enter__(self) -> PostgresProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"throwaway {self.server.root}" if self.server else _display(self._base)
        return f"<PostgresProvider {where}>"

    # internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _connect_admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(self.admin_dsn, autocommit=True, application_name="racecheck-admin")

    def _new_database(self, run: Callable[[Any], object]) -> str:
        """Create a database with ``run`` (a statement runner) and remember it as ours."""
        from psycopg import sql

        name = f"racecheck_{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.template)
        )
        if self._file_copy and self.server_version >= 150000:
            # Copying files is 3x faster than the WAL_LOG default; its checkpoints are cheap
            # with fsync off, and only a throwaway server has fsync off.
            query += sql.SQL(" STRATEGY FILE_COPY")
        self._created.add(name)  # before: close() must drop it even if we are interrupted
        try:
            run(query)
        except BaseException:
            self._created.discard(name)
            raise
        return name

    def _refill_spares(self) -> None:
        with self._spare_lock:
            if self.spares <= 0 or self._spare_thread is not None or self._closed:
                return
            self._spare_thread = threading.Thread(
                target=self._fill_spares, name="racecheck-postgres-spares", daemon=True
            )
            self._spare_thread.start()

    def _fill_spares(self) -> None:
        """Background: make databases until :attr:`spares` are ready. Errors are left to the
        next :meth:`create_database`, which then creates in the foreground and reports them."""
        import psycopg

        try:
            with psycopg.connect(
                self.admin_dsn, autocommit=True, application_name="racecheck-spares"
            ) as conn:
                while not self._closed and len(self._spare_names) < self.spares:
                    name = self._new_database(conn.execute)
                    with self._spare_lock:
                        self._spare_names.append(name)
        except Exception:
            pass
        finally:
            with self._spare_lock:
                self._spare_thread = None

    def _admin(self, query: Any, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run on the admin connection (one statement at a time: it is shared by threads)."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                conn = self._conn = self._connect_admin()
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def _drop(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        ident = sql.Identifier(name)
        if self.server_version >= 130000:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            return
        deadline = time.monotonic() + 10
        while True:
            self._admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                self._admin(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _check_can_create(self) -> None:
        rows = self._admin(
            "SELECT current_user, rolsuper OR rolcreatedb FROM pg_roles"
            " WHERE rolname = current_user"
        )
        if rows and not rows[0][1]:
            role = rows[0][0]
            raise PostgresSetupError(
                f"role {role!r} on {_display(self._base)} may not create databases, and every "
                f"test gets a database of its own: ALTER ROLE {role} CREATEDB, or use another role"
            )


# --- starting, joining and leaving a throwaway server ----------------------------------------


def _server_account(system_user: str) -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when we are not root.

    PostgreSQL refuses to run as root, and root is common in containers and CI.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        account = pwd.getpwnam(system_user)
    except KeyError:
        account = None
    if account is None or account.pw_uid == 0:
        raise PostgresUnavailable(
            f"the tests run as root, PostgreSQL refuses to, and there is no unprivileged "
            f"{system_user!r} user to run the throwaway server as: create one "
            f"(useradd --system --user-group --no-create-home {system_user}), run pytest as a "
            "non-root user, or point the tests at an existing server with "
            "--racecheck-postgres-url / RACECHECK_POSTGRES_URL"
        )
    return account


def _server_base() -> Path:
    """``/tmp``: short enough for a socket path and reachable by the server's user."""
    tmp = Path("/tmp")
    if tmp.is_dir() and os.access(tmp, os.W_OK | os.X_OK):
        return tmp
    return Path(tempfile.gettempdir())


def _pid_namespace() -> str | None:
    """Which pids we see: a /tmp shared between containers must not make their runs look dead."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _foreign(state: Mapping[str, Any]) -> bool:
    """Started where its owners' pids mean something else (another container sharing /tmp)."""
    return state.get("pid_namespace") != _pid_namespace()


def _current_owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"id": secrets.token_hex(8), "pid": pid, "start": _proc_start(pid)}


def _join(shared_dir: Path, owner: dict[str, Any]) -> dict[str, Any] | None:
    """Register ``owner`` with the server this run already has, if it is up and owned."""
    pointer = _read_json(shared_dir / SHARED_STATE_NAME)
    if pointer is None or pointer.get("kind") != _KIND:
        return None
    root = Path(pointer["root"])
    with _root_lock(root, timeout=60) as held:
        if not held:
            return None
        state = _read_state(root)
        if state is None or state.get("status") != "running":
            return None
        owners = _live_owners(state)
        if not owners or not _alive(state["pid"], state.get("pid_start")):
            _destroy(root, state)
            return None
        state["owners"] = [*owners, owner]
        _write_json(root / _STATE_NAME, state)
        return state


def _start(
    shared_dir: Path,
    bindir: Path,
    account: pwd.struct_passwd | None,
    owner: dict[str, Any],
    settings: Mapping[str, str],
    watchdog: bool,
) -> dict[str, Any]:
    """initdb, configure, start, make the template; on any failure leave nothing behind."""
    root = Path(tempfile.mkdtemp(prefix=SERVER_DIR_PREFIX, dir=_server_base()))
    socket = root / f".s.PGSQL.{_PORT}"
    if len(str(socket).encode()) > 100:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresSetupError(f"the socket path {socket} is too long for a unix socket")
    os.close(os.open(root / _LOCK_NAME, os.O_CREAT | os.O_WRONLY, 0o644))
    datadir = root / "data"
    state: dict[str, Any] = {
        "kind": _KIND,
        "status": "starting",
        "root": str(root),
        "datadir": str(datadir),
        "socket_dir": str(root),
        "port": _PORT,
        "bindir": str(bindir),
        "shared_dir": str(shared_dir),
        "pid": None,
        "pid_start": None,
        "watchdog": None,
        "owners": [owner],
        "created": time.time(),
        "pid_namespace": _pid_namespace(),
    }
    launch: subprocess.Popen[bytes] | None = None
    with _root_lock(root, timeout=10) as held:
        if not held:  # nobody else knows this directory yet
            raise PostgresSetupError(f"could not lock the new server directory {root}")
        try:
            _write_json(root / _STATE_NAME, state)
            _write_json(shared_dir / SHARED_STATE_NAME, _pointer(state))
            launch = _launch_watchdog(root) if watchdog else None
            if account is not None:
                os.chown(root, account.pw_uid, account.pw_gid)
            _run_server_tool(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                account,
                root,
            )
            _configure(datadir, root, {**SERVER_SETTINGS, **settings})
            _run_server_tool(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(datadir),
                    "-l",
                    str(root / _LOG_NAME),
                    "-w",
                    "-t",
                    "60",
                    "-s",
                ],
                account,
                root,
            )
            pid = _postmaster_pid(datadir)
            if pid is None:
                raise PostgresSetupError("pg_ctl start said yes but postmaster.pid has no pid")
            state.update(pid=pid, pid_start=_proc_start(pid))
            if launch is not None:
                wd = _watchdog_pid(launch)
                state["watchdog"] = {"pid": wd, "start": _proc_start(wd)}
            _make_template(root)
            state["status"] = "running"
            _write_json(root / _STATE_NAME, state)
        except BaseException as exc:
            log = _tail(root / _LOG_NAME)
            if launch is not None and launch.poll() is None:
                launch.kill()  # the watchdog's short-lived parent, if it has not exited yet
            _destroy(root, state)
            if launch is not None:
                launch.wait()
            if isinstance(exc, PostgresSetupError) and log:
                raise PostgresSetupError(f"{exc}\nserver log:\n{log}") from exc
            raise
    return state


def _configure(datadir: Path, socket_dir: Path, settings: Mapping[str, str]) -> None:
    """Socket only, in our own directory, trusted; everything else from ``settings``."""
    lines = [
        "",
        "# pytest-racecheck: a throwaway server, reachable through its unix socket only",
        "listen_addresses = ''",
        f"unix_socket_directories = {_conf_quote(str(socket_dir))}",
        f"port = {_PORT}",
        *(f"{key} = {_conf_quote(value)}" for key, value in settings.items()),
        "",
    ]
    with open(datadir / "postgresql.conf", "a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    (datadir / "pg_hba.conf").write_text(
        "# pytest-racecheck: only the unix socket, in a directory only the server's user and\n"
        "# root can enter\nlocal all all trust\n",
        encoding="utf-8",
    )


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _make_template(root: Path) -> None:
    import psycopg

    dsn = _make_conninfo("", host=str(root), port=str(_PORT), user=SUPERUSER, dbname="postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f"CREATE DATABASE {TEMPLATE} IS_TEMPLATE true{strategy}")


def _run_server_tool(cmd: Sequence[str], account: pwd.struct_passwd | None, cwd: Path) -> None:
    """Run initdb or pg_ctl, as ``account`` when given, in a session of its own.

    A session of its own: Ctrl-C in the terminal must not reach the server before we stop it.
    Output goes to a file, not a pipe, because the postmaster outlives pg_ctl.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    extra: dict[str, Any] = {}
    if account is not None:
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    what = Path(cmd[0]).name
    with tempfile.TemporaryFile() as out:
        try:
            done = subprocess.run(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                start_new_session=True,
                check=False,
                **extra,
            )
        except PermissionError as exc:
            if account is None:
                raise PostgresSetupError(f"cannot run {what}: {exc}") from exc
            raise PostgresUnavailable(
                f"cannot run {what} as the {account.pw_name!r} user ({exc}): run pytest as a "
                "non-root user, or point the tests at an existing server with "
                "--racecheck-postgres-url / RACECHECK_POSTGRES_URL"
            ) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresSetupError(f"{what} failed: {exc}") from exc
        if done.returncode != 0:
            out.seek(0)
            text = out.read().decode(errors="replace").strip()
            who = f" as {account.pw_name!r}" if account is not None else ""
            raise PostgresSetupError(
                f"{what}{who} failed with exit status {done.returncode}: {' '.join(cmd)}\n{text}"
            )


def _leave(root: Path, token: str) -> None:
    """Unregister an owner; the last one stops the server and removes its directory."""
    with _root_lock(root, timeout=_SHARED_LOCK_TIMEOUT) as held:
        if not held:
            return
        state = _read_state(root)
        if state is None:
            return
        owners = [o for o in _live_owners(state) if o["id"] != token]
        if owners:
            state["owners"] = owners
            _write_json(root / _STATE_NAME, state)
        else:
            _destroy(root, state)


def sweep_stale_servers(base: Path | None = None) -> list[Path]:
    """Stop and remove throwaway servers whose owners are all dead; return their directories.

    These are what runs killed before they could close leave behind, when their watchdog
    could not clean up either. Servers being started or closed right now are left alone.
    """
    removed: list[Path] = []
    for root in sorted((base or _server_base()).glob(SERVER_DIR_PREFIX + "*")):
        if not _exists(root / _LOCK_NAME):
            continue  # not ours, or not ours to enter
        state = _read_state(root)
        if state is not None and (_foreign(state) or _live_owners(state)):
            continue
        with _root_lock(root, timeout=0) as held:
            if not held:
                continue
            state = _read_state(root)
            if state is None:
                try:
                    age = time.time() - root.stat().st_mtime
                except OSError:
                    continue
                if age < _ORPHAN_DIR_AGE:
                    continue  # being created right now
            elif _foreign(state) or _live_owners(state):
                continue
            _destroy(root, state)
            removed.append(root)
    return removed


def _destroy(root: Path, state: Mapping[str, Any] | None) -> None:
    """Stop everything running from ``root`` and delete it. Call with the root lock held.

    Immediate shutdown (SIGQUIT) first: the postmaster ends its backends and frees its shared
    memory. Then SIGKILL for whatever is left (initdb, pg_ctl, a stuck server); a killed
    postmaster's System V segment is removed by hand.
    """
    datadir = root / "data"
    shm = _postmaster_shm(datadir)
    postmaster = _postmaster_pid(datadir)
    recorded = state or {}
    if postmaster is None and recorded.get("pid"):
        postmaster = recorded["pid"] if _alive(recorded["pid"], recorded.get("pid_start")) else None
    if postmaster is not None and not _mentions(postmaster, str(root)):
        postmaster = None  # a stale postmaster.pid, and the number now belongs to another
    me = os.getpid()
    others = [p for p in _pids_mentioning(str(root)) if p not in (me, postmaster)]
    if state is not None and state.get("watchdog"):
        wd = state["watchdog"]
        if wd["pid"] != me and wd["pid"] not in others and _alive(wd["pid"], wd.get("start")):
            others.append(wd["pid"])
    if postmaster is not None:
        _signal(postmaster, signal.SIGQUIT)
    for pid in others:
        is_server = _program(pid) in ("postgres", "postmaster")
        _signal(pid, signal.SIGQUIT if is_server else signal.SIGTERM)
    everyone = [p for p in [postmaster, *others] if p is not None]
    if not _wait_gone(everyone, 10):
        for pid in everyone:
            _signal(pid, signal.SIGKILL)
        _wait_gone(everyone, 5)
        if postmaster is not None and shm is not None:
            _wait_gone(_session_members(postmaster), 5)
            _remove_shm(shm)
    shutil.rmtree(root, ignore_errors=True)
    if state is not None and state.get("shared_dir"):
        pointer_path = Path(state["shared_dir"]) / SHARED_STATE_NAME
        pointer = _read_json(pointer_path)
        if pointer is not None and pointer.get("root") == str(root):
            with contextlib.suppress(OSError):
                pointer_path.unlink()


def _pointer(state: Mapping[str, Any]) -> dict[str, Any]:
    """What shared_dir holds: where this run's server is (its owners are in its own state)."""
    keys = ("kind", "root", "datadir", "socket_dir", "port")
    return {k: state[k] for k in keys}


def _server_info(state: Mapping[str, Any]) -> ThrowawayServer:
    wd = state.get("watchdog")
    return ThrowawayServer(
        root=Path(state["root"]),
        datadir=Path(state["datadir"]),
        socket_dir=Path(state["socket_dir"]),
        port=int(state["port"]),
        pid=int(state["pid"]),
        watchdog_pid=int(wd["pid"]) if wd else None,
        log_file=Path(state["root"]) / _LOG_NAME,
    )


# --- the watchdog -----------------------------------------------------------------------------


# Loads only this module and base.py: the package's __init__ imports the whole harness, which a
# process that just polls pids does not need (and must not be broken by).
_WATCHDOG_CODE = (
    "import sys,types\n"
    "b=sys.argv[1]\n"
    "for n,p in (('pytest_racecheck',b+'/..'),('pytest_racecheck.backends',b)):\n"
    " m=types.ModuleType(n);m.__path__=[p];sys.modules[n]=m\n"
    "from pytest_racecheck.backends.postgres import _watchdog_main;_watchdog_main(sys.argv[2:])"
)


def _launch_watchdog(root: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog; it runs detached, so ending the pytest process cannot end it.

    Started before initdb, so that a run killed while the server starts is covered too; its pid
    is read after the server is up (see :func:`_watchdog_pid`), in parallel with initdb.
    """
    backends = str(Path(__file__).resolve().parent)
    return subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCHDOG_CODE, backends, str(root), str(WATCHDOG_INTERVAL)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        start_new_session=True,
    )


def _watchdog_pid(launch: subprocess.Popen[bytes]) -> int:
    """The watchdog's pid, which its short-lived parent prints before it exits."""
    out, err = launch.communicate(timeout=60)
    try:
        return int(out)
    except ValueError:
        raise PostgresSetupError(
            "the throwaway server's watchdog did not start: "
            + (err.decode(errors="replace").strip() or f"exit status {launch.returncode}")
        ) from None


def _watchdog_main(argv: Sequence[str]) -> None:
    """Entry point of the watchdog process: ``<server root> <interval>``.

    It forks once more and the parent exits, so nobody is left with a child to reap and the
    watchdog belongs to init. It returns once the server directory is gone, whoever removed it.
    """
    root, interval = Path(argv[0]), float(argv[1])
    pid = os.fork()
    if pid:
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        _watch(root, interval)
    finally:
        os._exit(0)


def _watch(root: Path, interval: float) -> None:
    """Stop the server once none of its owners is alive; return when its directory is gone."""
    while _exists(root):
        time.sleep(interval)
        state = _read_state(root)
        if state is not None and _live_owners(state):
            continue
        with _root_lock(root, timeout=0) as held:
            if not held:
                continue  # being started, joined or closed right now: look again later
            state = _read_state(root)
            if state is None or not _live_owners(state):
                _destroy(root, state)
                return


# --- processes, without psutil ----------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, ..."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return data[data.rindex(")") + 2 :].split()


def _proc_start(pid: int) -> str | None:
    """The process's start time, which tells a pid from the same number reused later."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None else None


def _alive(pid: int, start: str | None = None) -> bool:
    """Whether that process runs (a zombie has ended; a reused pid is another process)."""
    if Path("/proc/self/stat").exists():
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start is None or fields[19] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_owners(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [o for o in state.get("owners", []) if _alive(o["pid"], o.get("start"))]


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _program(pid: int) -> str:
    argv = _cmdline(pid)
    return Path(argv[0]).name if argv else ""


def _mentions(pid: int, text: str) -> bool:
    return any(text in arg for arg in _cmdline(pid))


def _pids_mentioning(text: str) -> list[int]:
    """Live processes of ours whose command line names ``text``: servers, initdb, watchdogs."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        argv = _cmdline(int(entry))
        if not argv or not any(text in arg for arg in argv):
            continue
        ours = Path(argv[0]).name in _SERVER_PROGRAMS or any("_watchdog_main" in a for a in argv)
        if ours and _alive(int(entry)):
            found.append(int(entry))
    return found


def _session_members(sid: int) -> list[int]:
    """Processes in session ``sid``: a postmaster's backends, which pg_ctl put in its session."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _proc_stat(int(entry))
                if fields is not None and fields[3] == str(sid) and fields[0] not in ("Z", "X"):
                    found.append(int(entry))
    return found


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        first = (datadir / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def _postmaster_shm(datadir: Path) -> int | None:
    """The postmaster's System V shared memory id (line 7 of postmaster.pid: key, id)."""
    try:
        line = (datadir / "postmaster.pid").read_text().splitlines()[6]
        return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _remove_shm(shmid: int) -> None:
    """``ipcrm -m``: a SIGKILLed postmaster cannot free its segment itself."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmctl(shmid, 0, None)  # IPC_RMID


# --- files and locks --------------------------------------------------------------------------


@contextlib.contextmanager
def _root_lock(root: Path, timeout: float) -> Iterator[bool]:
    """Hold the server directory's lock; yields False when it could not be taken in time or the
    directory is gone.

    Not filelock: that recreates a missing directory, and a removed server directory must stay
    removed. The lock file exists exactly as long as the directory.
    """
    import fcntl

    try:
        fd = os.open(root / _LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + timeout
        held = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
        # The previous holder may have removed the directory while we waited.
        yield held and _exists(root / _LOCK_NAME)
    finally:
        os.close(fd)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_state(root: Path) -> dict[str, Any] | None:
    state = _read_json(root / _STATE_NAME)
    return state if state is not None and state.get("kind") == _KIND else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write whole or not at all: readers without the lock must never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _tail(path: Path, size: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


# --- connection strings -----------------------------------------------------------------------


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable(
            f"PostgreSQL tests need psycopg 3 ({exc}): pip install 'pytest-racecheck[postgres]'"
        ) from exc


def _parse_conninfo(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}


def _make_conninfo(dsn: str, **params: Any) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, **{k: str(v) for k, v in params.items()})


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _parse_server_url(url: str) -> dict[str, str]:
    """Parse and check a server URL (SQLAlchemy's ``+driver`` is accepted and dropped)."""
    import psycopg

    text = (url or "").strip()
    shown = _mask(text)
    source = "(from --racecheck-postgres-url, ini racecheck_postgres_url or RACECHECK_POSTGRES_URL)"
    example = "postgresql://user:password@host:5432/dbname"
    if not text:
        raise PostgresSetupError(f"the PostgreSQL URL is empty {source}: use {example}")
    match = _SCHEME.match(text)
    if match is not None:
        scheme = match.group(1).lower().partition("+")[0]
        if scheme not in ("postgresql", "postgres"):
            raise PostgresSetupError(f"{shown!r} is not a PostgreSQL URL {source}: use {example}")
        text = "postgresql" + text[match.end(1) :]
    elif "=" not in text:
        raise PostgresSetupError(
            f"{shown!r} is neither a PostgreSQL URL nor a libpq connection string {source}: "
            f"use {example}"
        )
    try:
        return _parse_conninfo(text)
    except psycopg.Error as exc:
        raise PostgresSetupError(
            f"invalid PostgreSQL URL {shown!r} {source}: {str(exc).strip()}; use {example}"
        ) from exc


def _mask(text: str) -> str:
    """The URL with its password hidden, for messages."""
    text = re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)


def _display(params: Mapping[str, str]) -> str:
    shown = dict(params)
    if "password" in shown:
        shown["password"] = "***"
    return _url(shown, "postgresql")


def _url(params: Mapping[str, str], scheme: str) -> str:
    """A URL for ``params``; a socket directory goes in the query, as SQLAlchemy wants it."""
    rest = dict(params)
    user, password = rest.pop("user", ""), rest.pop("password", "")
    host, port, dbname = rest.pop("host", ""), rest.pop("port", ""), rest.pop("dbname", "")
    netloc = ""
    if user:
        netloc = quote(user, safe="")
        if password:
            netloc += ":" + quote(password, safe="*")  # sub-delims may stay; *** reads better
        netloc += "@"
    query: dict[str, str] = {}
    if host.startswith("/") or host.startswith("@") or "," in host:
        query["host"] = host
        if port:
            query["port"] = port
    elif host:
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    query.update(sorted(rest.items()))
    path = "/" + quote(dbname, safe="") if dbname else "/"
    return f"{scheme}://{netloc}{path}" + ("?" + urlencode(query, safe="/") if query else "")


def _close_all_at_exit() -> None:
    """A process that ends without closing still leaves its server as the last close would."""
    for provider in list(_open_providers):
        with contextlib.suppress(Exception):
            provider.close()


atexit.register(_close_all_at_exit)
