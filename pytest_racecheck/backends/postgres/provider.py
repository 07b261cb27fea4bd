"""Databases for one pytest process: on this run's throwaway server, or on an existing server.

Each pytest process (or xdist worker) makes one :class:`PostgresServer`; the plugin asks it for
a fresh database per test and for which racers wait on a lock (``pg_blocking_pids``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_racecheck.backends.postgres import server as srv
from pytest_racecheck.backends.postgres import state as st
from pytest_racecheck.backends.postgres.binaries import has_server_tools
from pytest_racecheck.backends.postgres.errors import (
    ENABLE_HINT,
    PostgresSetupError,
    PostgresUnavailable,
)
from pytest_racecheck.backends.postgres.handle import (
    URL_SOURCE,
    PostgresDatabase,
    describe,
    display,
    make_conninfo,
    parse_server_url,
    require_psycopg,
    scrub,
    secrets_in,
)

if TYPE_CHECKING:
    import psycopg


_counter = itertools.count(1)
_open_providers: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


class PostgresServer:
    """The server one pytest process makes its test databases on: a throwaway or an existing one.

    The ``postgres_server`` fixture's value, and what a conftest override may return.

    Make one per process (pytest, or each xdist worker) with :meth:`throwaway` or
    :meth:`external`, call :meth:`create_database` / :meth:`drop_database` per test and
    :meth:`close` at the end. It keeps one admin connection, for quick polling, and
    :attr:`spares` databases made ahead (set it to 0 to make each one on demand).
    """

    admin_dsn: str
    template: str
    server: srv.ThrowawayServer | None
    server_version: int

    def __init__(
        self,
        admin_params: Mapping[str, str],
        *,
        template: str,
        file_copy: bool,
        server: srv.ThrowawayServer | None = None,
        owner_token: str | None = None,
        spares: int = 1,
    ) -> None:
        """Use :meth:`throwaway` or :meth:`external`; this connects the admin connection."""
        self._base = {k: v for k, v in admin_params.items() if k != "dbname"}
        self.admin_dsn = make_conninfo("", **admin_params)
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
        self._throwaway: tuple[Path, Path, str, bool, Mapping[str, str] | None] | None = None
        """How :meth:`throwaway` made this server, to make another if it dies."""
        self._lost: set[str] = set()
        """Databases that went with a server that died: nothing to drop."""
        self._log_seen = 0
        """How far :meth:`server_died` has read the throwaway server's log for a crash."""
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
        system_user: str = srv.SYSTEM_USER,
        watchdog: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> PostgresServer:
        """Join this run's throwaway server, starting it if this process is the first.

        ``shared_dir`` is the same for every xdist worker of one run; a lock there makes sure
        only one of them starts the server. ``system_user`` runs it when the tests run as root.
        ``settings`` add to :data:`srv.SERVER_SETTINGS` (they apply only when this call starts it).
        ``watchdog=False`` leaves killed runs to the next run's sweep alone (tests use it).
        """
        require_psycopg()
        from filelock import FileLock

        bindir = Path(bindir)
        if not has_server_tools(bindir):
            raise PostgresUnavailable(f"no initdb and pg_ctl in {bindir}: {ENABLE_HINT}")
        account = srv.server_account(system_user)
        shared_dir = Path(shared_dir)
        shared_dir.mkdir(parents=True, exist_ok=True)
        owner = st.current_owner()
        with FileLock(str(shared_dir / st.SHARED_LOCK_NAME), timeout=srv.SHARED_LOCK_TIMEOUT):
            st.sweep_stale_servers()
            state = srv.join(shared_dir, owner)
            if state is None:
                state = srv.start(shared_dir, bindir, account, owner, settings or {}, watchdog)
        server = srv.server_info(state)
        try:
            provider = cls(
                {
                    "host": str(server.socket_dir),
                    "port": str(server.port),
                    "user": srv.SUPERUSER,
                    "dbname": "postgres",
                },
                template=srv.TEMPLATE,
                file_copy=True,
                server=server,
                owner_token=owner["id"],
            )
        except BaseException:
            srv.leave(server.root, owner["id"])
            raise
        provider._throwaway = (shared_dir, bindir, system_user, watchdog, settings)
        return provider

    @classmethod
    def external(
        cls, url: str, *, template: str = "template0", source: str = URL_SOURCE
    ) -> PostgresServer:
        """Use an existing server: ``postgresql://user:password@host:port/dbname`` or a conninfo.

        The URL's database is the admin connection's (``postgres`` when there is none); the
        role needs CREATEDB. New databases copy ``template`` (``template0`` takes no
        connections, so copying it never fails on a busy server) and only they are dropped.
        Errors are :class:`PostgresSetupError` with a one-paragraph message naming the server
        (password hidden) and ``source``, where the URL was set.
        """
        require_psycopg()
        params = parse_server_url(url, source)
        admin = dict(params)
        admin.setdefault("dbname", "postgres")
        admin.setdefault("connect_timeout", "10")
        hidden = secrets_in(url) | {params.get("password", "")} - {""}
        provider: PostgresServer | None = None
        problem = ""
        try:
            provider = cls(admin, template=template, file_copy=False)
        except Exception as exc:
            # Not chained: the driver's exception and its frames hold the connection string.
            problem = scrub(" ".join(str(exc).split()), hidden) or type(exc).__name__
        if provider is None:
            raise PostgresSetupError(
                f"cannot connect to the PostgreSQL server ({describe(admin)}; {source}): {problem}"
            )
        try:
            provider._check_can_create()
        except BaseException:
            provider.close()
            raise
        return provider

    # per test

    def create_database(self) -> PostgresDatabase:
        """A new, empty database with a unique name, copied from the template.

        A copy takes 15 ms on an idle machine and 100+ ms on a busy one, so a spare is made in
        the background (its own connection, so lock polling never waits behind it) and the
        next call takes it at once.
        """
        self._check_open()
        if self.server_died() is not None:
            self._replace_dead_server()
        with self._spare_lock:
            name = self._spare_names.pop(0) if self._spare_names else None
        if name is None:
            name = self._new_database(self._admin)
        db = PostgresDatabase(dsn=make_conninfo("", **self._base, dbname=name), name=name)
        self._refill_spares()
        return db

    def drop_database(self, db: PostgresDatabase) -> None:
        """Drop a database this provider created, ending the sessions still connected to it."""
        self._check_open()
        if db.name in self._lost or (db.name in self._created and self.server_died()):
            db.close()  # it went with its server
            self._created.discard(db.name)
            self._lost.add(db.name)
            return
        if db.name not in self._created:
            raise ValueError(f"{db.name!r} was not created by this provider: not dropping it")
        db.close()
        self._drop(db.name)
        self._created.discard(db.name)

    def server_died(self) -> str | None:
        """None while the throwaway server runs (or for an existing server, which is not
        ours to watch); once its postmaster is gone, why, in a sentence for a test failure.

        The first call that sees it dead tears the dead server down at once (its shared
        memory, its directory): nothing of it is left on the machine, even if the session
        goes on; the next :meth:`create_database` starts a new server.
        """
        server = self.server
        if server is None:
            return None
        if not server.died():
            crashed, self._log_seen = server.crashed_since(self._log_seen)
            if not crashed:
                return None
            # A backend crashed: the postmaster is ending the others, then itself.
            st.wait_gone([server.pid], srv.CRASH_EXIT_S)
            if not server.died():
                return None  # restart_after_crash was turned back on: it recovers
        log = [ln for ln in st.tail(server.log_file, 600).splitlines() if ln.strip()][-2:]
        srv.bury(server.root)
        said = f"; its log ends: {' | '.join(log)}" if log else ""
        return (
            f"the throwaway PostgreSQL server died: its postmaster (pid {server.pid}) is gone, "
            f"killed or crashed, and every connection to it with it{said}. Its shared memory "
            "and directory were removed; later tests get a new server"
        )

    def _replace_dead_server(self) -> None:
        """Start (or join) a new throwaway server in place of the dead one, keeping this
        object: the fixtures and probes that hold it carry on. Raises PostgresSetupError,
        naming the death, when no new server can be had."""
        died = self.server_died()
        if self._throwaway is None or died is None:
            return
        filler = self._spare_thread
        if filler is not None:
            filler.join(timeout=60)
        self._lost |= self._created
        self._created.clear()
        self._spare_names.clear()
        shared_dir, bindir, system_user, watchdog, settings = self._throwaway
        try:
            fresh = PostgresServer.throwaway(
                shared_dir, bindir, system_user=system_user, watchdog=watchdog, settings=settings
            )
        except Exception as exc:
            raise PostgresSetupError(
                f"{died.split('. ')[0]}, and no new server could be started: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        # Take over the new server; the object made to start it is emptied, never closed.
        _open_providers.discard(fresh)
        fresh._closed = True
        old, self._conn = self._conn, fresh._conn
        fresh._conn = None
        self.server, self._owner_token = fresh.server, fresh._owner_token
        self._log_seen = 0
        self._base, self.admin_dsn = fresh._base, fresh.admin_dsn
        self.server_version = fresh.server_version
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

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
            for name in sorted(self._created) if self.server_died() is None else ():
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
                srv.leave(self.server.root, self._owner_token)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"throwaway {self.server.root}" if self.server else display(self._base)
        return f"<PostgresServer {where}>"

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
                f"role {role!r} on {display(self._base)} may not create databases, and every "
                f"test gets a database of its own: ALTER ROLE {role} CREATEDB, or use another role"
            )


def _close_all_at_exit() -> None:
    """A process that ends without closing still leaves its server as the last close would."""
    for provider in list(_open_providers):
        with contextlib.suppress(Exception):
            provider.close()


atexit.register(_close_all_at_exit)
