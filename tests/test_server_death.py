"""A throwaway PostgreSQL server that dies mid-race (issue 28): the race stops in the round it
died, with ServerDied, and nothing the server owned is left: processes, socket, directory,
System V and POSIX shared memory.

Before, the race ran all its remaining rounds of failures before it said the server died, a
killed postmaster left two ``/dev/shm/PostgreSQL.*`` segments (about 1 MB), and a crashed
backend made the server restart under the race.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from pytest_racecheck.backends.postgres import PostgresServer, find_bindir
from pytest_racecheck.backends.postgres.state import postmaster_pid, server_processes

SHM = "/dev/shm/PostgreSQL."


def posix_segments_mapped(pids: list[int]) -> set[str]:
    """The ``/dev/shm/PostgreSQL.*`` segments these processes map, read here from /proc."""
    found = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except OSError:
            continue
        found |= {line[line.index(SHM) :].split()[0] for line in lines if SHM in line}
    return found


def sysv_segment_ids() -> set[str]:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()
    at = lines[0].split().index("shmid")
    return {line.split()[at] for line in lines[1:]}


DIES = """
import json, os, pathlib, signal, time

from pytest_racecheck import current_racer
from pytest_racecheck.backends.postgres.state import postmaster_pid, server_processes

SHM = "/dev/shm/PostgreSQL."
calls = 0


def posix_segments_mapped(pids):
    found = set()
    for pid in pids:
        try:
            lines = pathlib.Path(f"/proc/{{pid}}/maps").read_text().splitlines()
        except OSError:
            continue
        found |= {{line[line.index(SHM):].split()[0] for line in lines if SHM in line}}
    return found


def attempt(db, root, victim, out):
    global calls
    calls += 1
    with db.connect() as conn:
        conn.execute("SELECT 1")
        if current_racer() == 0 and calls == 3:
            root = pathlib.Path(root)
            datadir = root / "data"
            shmid = (datadir / "postmaster.pid").read_text().splitlines()[6].split()[1]
            postmaster = postmaster_pid(datadir)
            segments = posix_segments_mapped(server_processes(root))
            pathlib.Path(out).write_text(json.dumps(
                {{"root": str(root), "shmid": shmid, "segments": sorted(segments)}}))
            os.kill(postmaster if victim == "postmaster" else conn.info.backend_pid,
                    signal.SIGKILL)
            # The crash reaches the postmaster before this round ends (a round that ends
            # first is seen at the next statement, reset or check: a round later).
            deadline = time.monotonic() + 5
            while os.path.exists(f"/proc/{{postmaster}}") and time.monotonic() < deadline:
                time.sleep(0.01)
        conn.execute("SELECT 1")
    return "ok"


def test_a_server_dies(race, postgres_db, postgres_server):
    race(attempt, postgres_db, str(postgres_server.server.root), {victim!r}, {out!r},
         processes=2, rounds=10, timeout=60)


def test_later_tests_get_a_new_server(race, postgres_db):
    def visit(db):
        return db.scalar("SELECT 1")

    race(visit, postgres_db, processes=2, rounds=2).assert_outcomes([1])
"""


@pytest.mark.parametrize("victim", ["postmaster", "backend"])
def test_a_server_killed_mid_race_stops_it_in_that_round_and_leaves_nothing(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    run_tag: str,
    tmp_path: Path,
    victim: str,
) -> None:
    """SIGKILL of the postmaster, or of a backend, in round 3 of 10: the race fails with
    ServerDied after round 3; no process, directory or shared memory of that server is left
    (run_tag checks the processes), and the next test races on a new server."""
    monkeypatch.delenv("RACECHECK_POSTGRES_URL", raising=False)
    out = tmp_path / "server.json"
    pytester.makepyfile(DIES.format(victim=victim, out=str(out)))
    result = pytester.runpytest_subprocess("--racecheck-require-postgres")
    result.assert_outcomes(failed=1, passed=1, errors=0)
    result.stdout.fnmatch_lines(
        [
            "E   *ServerDied: race of attempt, after 3 complete round(s): the throwaway "
            "PostgreSQL server died: its postmaster (pid *) is gone*",
        ]
    )
    server = json.loads(out.read_text())
    assert server["segments"] == [], "the server kept dynamic shared memory in /dev/shm"
    assert not Path(server["root"]).exists()
    assert server["shmid"] not in sysv_segment_ids(), "its System V segment was left"


@pytest.fixture
def bindir() -> Path:
    found = find_bindir()
    if found is None:
        pytest.skip("no PostgreSQL server binaries")
    return found


def test_a_crashed_backend_is_a_dead_server_at_once(bindir: Path, tmp_path: Path) -> None:
    """Asked while the postmaster is still ending the other processes after a backend's crash,
    server_died() waits for it and says it died (restart_after_crash is off): the race stops
    in that round instead of running on a server restarting under it."""
    provider = PostgresServer.throwaway(tmp_path, bindir, watchdog=False)
    try:
        server = provider.server
        assert server is not None
        db = provider.create_database()
        conn = psycopg.connect(db.dsn)
        os.kill(conn.info.backend_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while b"terminating any other active server processes" not in server.log_file.read_bytes():
            assert time.monotonic() < deadline, server.log_file.read_text()
            time.sleep(0.005)
        why = provider.server_died()
        assert why is not None and "the throwaway PostgreSQL server died" in why
        assert not server.root.exists()
        conn.close()
    finally:
        provider.close()


def test_a_server_told_to_use_dev_shm_leaves_none_of_it(bindir: Path, tmp_path: Path) -> None:
    """A server whose settings put its dynamic shared memory back in /dev/shm (``posix``) and
    that restarted after a crash: its segments, from before the crash and after, which its
    immediate shutdown leaves, are removed with it."""
    provider = PostgresServer.throwaway(
        tmp_path,
        bindir,
        watchdog=False,
        settings={"dynamic_shared_memory_type": "posix", "restart_after_crash": "on"},
    )
    segments: set[str] = set()
    try:
        server = provider.server
        assert server is not None
        db = provider.create_database()
        conn = psycopg.connect(db.dsn)
        conn.execute("SELECT 1")
        segments = posix_segments_mapped([server.pid, conn.info.backend_pid])
        os.kill(conn.info.backend_pid, signal.SIGKILL)
        conn.close()
        deadline = time.monotonic() + 60
        while True:  # the restarted server takes connections again
            try:
                with psycopg.connect(db.dsn) as conn:
                    conn.execute("SELECT 1")
                    segments |= posix_segments_mapped(
                        [postmaster_pid(server.datadir) or 0, conn.info.backend_pid]
                    )
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert segments, "a posix server maps segments in /dev/shm"
        assert server_processes(server.root)
    finally:
        provider.close()
    assert [s for s in segments if os.path.exists(s)] == []
