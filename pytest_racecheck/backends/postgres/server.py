"""A throwaway server's life: starting a server, joining it, leaving it.

The first process of a run (pytest, or the first xdist worker) runs ``initdb`` and ``pg_ctl``
into a new directory under ``/tmp`` (unix socket only, durability off) and starts the watchdog;
the others join it. Each registers as an owner in the directory's state (:mod:`.state`), and the
last to :func:`leave` stops the server. When the tests run as root, the server runs as an
unprivileged user, because PostgreSQL refuses root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_racecheck.backends.postgres import state as st
from pytest_racecheck.backends.postgres.errors import (
    PostgresSetupError,
    PostgresUnavailable,
)
from pytest_racecheck.backends.postgres.handle import make_conninfo
from pytest_racecheck.backends.postgres.watchdog_launch import (
    WatchdogLaunch,
    launch_watchdog,
    watchdog_pid,
)
from pytest_racecheck.linux import procfs

if TYPE_CHECKING:
    import pwd

SUPERUSER = "postgres"
"""The throwaway server's database superuser (``initdb -U``)."""
SYSTEM_USER = "postgres"
"""The operating-system user that runs the throwaway server when the tests run as root."""
TEMPLATE = "racecheck_template"
"""Every per-test database on a throwaway server is a copy of this one."""

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
    # Dynamic shared memory in files of the data directory (pg_dynshmem/), not POSIX segments
    # in /dev/shm: a postmaster killed with SIGKILL cannot remove its segments, and nothing
    # names their owner afterwards; the data directory is removed with the server.
    "dynamic_shared_memory_type": "mmap",
    # A backend that crashes (SIGKILL, a segfault) ends the server instead of a crash restart
    # that drops every connection: the race stops there with ServerDied, and the next test
    # gets a new server.
    "restart_after_crash": "off",
}

_PORT = 5432
CRASH_LINE = b"terminating any other active server processes"
"""What the postmaster logs when a server process crashed (the message of every version since
8.x, in the C locale that initdb's ``--no-locale`` gives the log)."""
CRASH_EXIT_S = 10.0
"""How long a postmaster ending its processes after a crash gets to exit."""
SHARED_LOCK_TIMEOUT = 300.0
"""Seconds to wait for another process of the run starting, joining or leaving the server."""


# --- starting, joining and leaving ----------------------------------------------------------


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
    pid_start: str | None = None
    """The postmaster's start time (:func:`procfs.start_time`): tells it from a reused pid."""

    def died(self) -> bool:
        """Whether the postmaster is gone (killed, crashed): the server cannot serve again."""
        return not st.alive(self.pid, self.pid_start)

    def crashed_since(self, offset: int) -> tuple[bool, int]:
        """Whether the server log, from byte ``offset`` on, says a server process crashed and
        the postmaster is ending every other one (it then exits: ``restart_after_crash`` is
        off); and the offset to look from next time. A stat per call while nothing is logged.
        """
        try:
            size = self.log_file.stat().st_size
        except OSError:
            return False, offset
        if size <= offset:
            return False, size if size < offset else offset
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                text = f.read(size - offset)
        except OSError:
            return False, offset
        # Look again from the last line: it may be half written.
        cut = text.rfind(b"\n") + 1
        return CRASH_LINE in text, offset + cut


def server_account(system_user: str) -> pwd.struct_passwd | None:
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


def join(shared_dir: Path, owner: dict[str, Any]) -> dict[str, Any] | None:
    """Register ``owner`` with the server this run already has, if it is up and owned."""
    pointer = st.read_json(shared_dir / st.SHARED_STATE_NAME)
    if pointer is None or pointer.get("kind") != st.KIND:
        return None
    root = Path(pointer["root"])
    with st.root_lock(root, timeout=60) as held:
        if not held:
            return None
        state = st.read_state(root)
        if state is None or state.get("status") != "running":
            return None
        owners = st.live_owners(state)
        if not owners or not st.alive(state["pid"], state.get("pid_start")):
            st.destroy(root, state)
            return None
        state["owners"] = [*owners, owner]
        st.write_json(root / st.STATE_NAME, state)
        return state


def start(
    shared_dir: Path,
    bindir: Path,
    account: pwd.struct_passwd | None,
    owner: dict[str, Any],
    settings: Mapping[str, str],
    watchdog: bool,
) -> dict[str, Any]:
    """initdb, configure, start, make the template; on any failure leave nothing behind."""
    root = _new_server_dir()
    state = _starting_state(root, bindir, shared_dir, owner)
    launch: WatchdogLaunch | None = None
    with st.root_lock(root, timeout=10) as held:
        if not held:  # nobody else knows this directory yet
            raise PostgresSetupError(f"could not lock the new server directory {root}")
        try:
            st.write_json(root / st.STATE_NAME, state)
            st.write_json(shared_dir / st.SHARED_STATE_NAME, st.pointer(state))
            launch = launch_watchdog(root) if watchdog else None
            _bring_up(root, bindir, account, settings, state, launch)
        except BaseException as exc:
            log = _undo_start(root, state, launch)
            if isinstance(exc, PostgresSetupError) and log:
                raise PostgresSetupError(f"{exc}\nserver log:\n{log}") from exc
            raise
    return state


def _new_server_dir() -> Path:
    """A fresh directory with its lock file; refused when the socket's path would not fit in
    a unix socket address (about 100 bytes), which initdb would only report much later."""
    root = Path(tempfile.mkdtemp(prefix=st.SERVER_DIR_PREFIX, dir=st.server_base()))
    socket = root / f".s.PGSQL.{_PORT}"
    if len(str(socket).encode()) > 100:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresSetupError(f"the socket path {socket} is too long for a unix socket")
    os.close(os.open(root / st.LOCK_NAME, os.O_CREAT | os.O_WRONLY, 0o644))
    return root


def _starting_state(
    root: Path, bindir: Path, shared_dir: Path, owner: dict[str, Any]
) -> dict[str, Any]:
    """The state written before anything runs, so that a run killed while the server starts
    leaves a directory the watchdog and later sweeps know how to clean up."""
    return {
        "kind": st.KIND,
        "status": "starting",
        "root": str(root),
        "datadir": str(root / "data"),
        "socket_dir": str(root),
        "port": _PORT,
        "bindir": str(bindir),
        "shared_dir": str(shared_dir),
        "pid": None,
        "pid_start": None,
        "watchdog": None,
        "owners": [owner],
        "created": time.time(),
        "pid_namespace": procfs.pid_namespace(),
    }


def _bring_up(
    root: Path,
    bindir: Path,
    account: pwd.struct_passwd | None,
    settings: Mapping[str, str],
    state: dict[str, Any],
    launch: WatchdogLaunch | None,
) -> None:
    """initdb, configure, start, make the template, recording each pid in ``state`` as soon as
    it is known, so that a failure at any later step can still stop what already runs."""
    datadir = root / "data"
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    initdb = [str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "--auth=trust"]
    initdb += ["--encoding=UTF8", "--no-locale", "--no-sync"]
    _run_server_tool(initdb, account, root)
    _configure(datadir, root, {**SERVER_SETTINGS, **settings})
    pg_ctl = [str(bindir / "pg_ctl"), "start", "-D", str(datadir), "-l", str(root / st.LOG_NAME)]
    pg_ctl += ["-w", "-t", "60", "-s"]
    _run_server_tool(pg_ctl, account, root)
    pid = st.postmaster_pid(datadir)
    if pid is None:
        raise PostgresSetupError("pg_ctl start said yes but postmaster.pid has no pid")
    state.update(pid=pid, pid_start=procfs.start_time(pid))
    if launch is not None:
        wd_pid = watchdog_pid(launch)
        state["watchdog"] = {"pid": wd_pid, "start": procfs.start_time(wd_pid)}
    _make_template(root)
    state["status"] = "running"
    st.write_json(root / st.STATE_NAME, state)


def _undo_start(root: Path, state: dict[str, Any], launch: WatchdogLaunch | None) -> str:
    """Tear down a half-started server; return its log's tail, read first because the
    teardown removes it: it holds the server's own reason for failing."""
    log = st.tail(root / st.LOG_NAME)
    if launch is not None and launch.process.poll() is None:
        launch.process.kill()  # the watchdog's short-lived parent, if it has not exited yet
    st.destroy(root, state)
    if launch is not None:
        launch.process.wait()
    return log


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

    dsn = make_conninfo("", host=str(root), port=str(_PORT), user=SUPERUSER, dbname="postgres")
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


def leave(root: Path, token: str) -> None:
    """Unregister an owner; the last one stops the server and removes its directory."""
    with st.root_lock(root, timeout=SHARED_LOCK_TIMEOUT) as held:
        if not held:
            return
        state = st.read_state(root)
        if state is None:
            return
        owners = [o for o in st.live_owners(state) if o["id"] != token]
        if owners:
            state["owners"] = owners
            st.write_json(root / st.STATE_NAME, state)
        else:
            st.destroy(root, state)


def bury(root: Path) -> None:
    """Tear down a server whose postmaster died, whoever still owns it: remove what it left
    (backends finishing, its shared memory segment, its directory) now, not at session end."""
    with st.root_lock(root, timeout=SHARED_LOCK_TIMEOUT) as held:
        if held:
            st.destroy(root, st.read_state(root))


def server_info(state: Mapping[str, Any]) -> ThrowawayServer:
    wd = state.get("watchdog")
    return ThrowawayServer(
        root=Path(state["root"]),
        datadir=Path(state["datadir"]),
        socket_dir=Path(state["socket_dir"]),
        port=int(state["port"]),
        pid=int(state["pid"]),
        watchdog_pid=int(wd["pid"]) if wd else None,
        log_file=Path(state["root"]) / st.LOG_NAME,
        pid_start=state.get("pid_start"),
    )
