"""``replicas=`` as a user meets it: the option, the ini key and the marker; schedules and the
virtual clock across hosts; bad input; a racer that dies on a host; a killed test run.

Every verdict here is fixed: the racers report where they ran (hostname, PID namespace), the
clock is virtual, and the schedule orders the racers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from host_leftovers import left_in

from pytest_racecheck import point
from pytest_racecheck.controller.errors import RacerDied


def where() -> tuple[str, str]:
    return socket.gethostname(), os.readlink("/proc/self/ns/pid")


RACE_TEST = """
import socket
def where():
    return socket.gethostname()

def test_hosts(race):
    result = race(where, processes=4, rounds=2{args})
    names = {{o.value for r in result.rounds for o in r.outcomes}}
    assert names == {expected!r}, names
"""


@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("argument", ", replicas=2"),
        ("option", ""),
        ("ini", ""),
        ("marker", ""),
    ],
)
def test_replicas_from_each_place(pytester: pytest.Pytester, how: str, args: str) -> None:
    source = RACE_TEST.format(args=args, expected={"replica-0", "replica-1"})
    if how == "marker":
        source = source.replace("def test_hosts", "@pytest.mark.race(replicas=2)\ndef test_hosts")
        source = "import pytest\n" + source
    pytester.makepyfile(source)
    if how == "ini":
        pytester.makeini("[pytest]\nracecheck_replicas = 2\n")
    cli = ["--racecheck-replicas=2"] if how == "option" else []
    pytester.runpytest_subprocess(*cli).assert_outcomes(passed=1)


def test_one_host_is_this_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RACE_TEST.format(args="", expected={socket.gethostname()}))
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"replicas": "2"}, "replicas must be an int"),
        ({"replicas": 3, "processes": 2}, "replicas=3 is more hosts than racers"),
        ({"replicas": 2, "start_method": "fork"}, "needs start_method='spawn'"),
        ({"replicas": 2, "fresh_racers": True}, "fresh_racers=False"),
        ({"replicas": 2, "host_paths": ["var/lock"]}, "host_paths takes absolute"),
        ({"replicas": 2, "host_paths": "/var/lock"}, None),
    ],
)
def test_bad_input_is_named(race: Any, kwargs: dict[str, Any], message: str | None) -> None:
    kwargs = {"processes": 2, "rounds": 1, **kwargs}
    if message is None:  # one path as a string is one path
        result = race(where, **kwargs)
        assert {o.value[0] for o in result.rounds[0].outcomes} == {"replica-0", "replica-1"}
        return
    with pytest.raises((TypeError, ValueError), match=message):
        race(where, **kwargs)


def test_bad_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--racecheck-replicas=two")
    assert "--racecheck-replicas must be an integer, got 'two'" in result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_database_in_a_private_path_is_refused(race: Any) -> None:
    from pytest_racecheck import database

    path = Path("/tmp") / f"racecheck-{os.getpid()}.sqlite3"
    db = database(path)
    try:
        with pytest.raises(ValueError, match=r"every host its own /tmp.*put it in tmp_path"):
            race(_touch, db, processes=2, rounds=1, replicas=2)
    finally:
        path.unlink(missing_ok=True)


def _touch(db: Any) -> None:
    db.execute("SELECT 1")


def ordered() -> str:
    point("first")
    return socket.gethostname()


def test_schedule_orders_racers_on_two_hosts(race: Any) -> None:
    """The schedule lets racer 1 (replica-1) through its point before racer 0 (replica-0)."""
    result = race(ordered, processes=2, rounds=3, replicas=2, schedule=["1:first", "0:first"])
    for rnd in result.rounds:
        ends = {o.racer: o.ended_ns for o in rnd.outcomes}
        assert ends[1] < ends[0]
        assert [o.value for o in sorted(rnd.outcomes, key=lambda o: o.racer)] == [
            "replica-0",
            "replica-1",
        ]


def sleep_an_hour() -> float:
    start = time.time()
    time.sleep(3600)
    return time.time() - start


def test_virtual_clock_is_shared_by_hosts(race: Any) -> None:
    """Each host reads the one virtual clock: an hour's sleep ends at once and lasts an hour."""
    started = time.monotonic()
    result = race(sleep_an_hour, processes=2, rounds=2, replicas=2, clock="virtual", timeout=60)
    assert time.monotonic() - started < 60
    assert all(3600 <= o.value < 3700 for r in result.rounds for o in r.outcomes)


def dies_on_second_host() -> str:
    if socket.gethostname() == "replica-1":
        os._exit(3)
    return "ok"


def test_dead_racer_is_named_with_its_host(race: Any) -> None:
    with pytest.raises(RacerDied, match=r"racer 1 \(pid \d+, host replica-1\)"):
        race(dies_on_second_host, processes=2, rounds=1, replicas=2)


KILLED_RUN = """
import os, time
from pytest_racecheck.linux import procfs

def note_and_wait(path):  # the host: its PID namespace and its init's start time
    with open(path, "a") as out:
        out.write(f"{{os.readlink('/proc/self/ns/pid')}}@{{procfs.start_time(1)}}\\n")
    time.sleep(600)

def test_long(race):
    race(note_and_wait, {path!r}, processes=4, rounds=1, replicas=2, timeout=600)
"""


def test_killed_run_leaves_no_host_behind(pytester: pytest.Pytester) -> None:
    """SIGKILL of the test process mid-race: each host's anchor sees its pipe close and ends
    the host's init, and with it every process on the host. (The notes are written in the
    run's working directory, which the hosts share.)"""
    notes = pytester.path / "namespaces"
    pytester.makepyfile(KILLED_RUN.format(path=str(notes)))
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(pytester.path)],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if notes.exists() and len(notes.read_text().split()) == 4:
                break
            time.sleep(0.1)
        hosts = set(notes.read_text().split())
        assert len(hosts) == 2
        assert len(left_in(hosts)) == 2  # the check sees both hosts' inits while they run
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 10
    while left_in(hosts) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left_in(hosts)


HOSTS_TEST = """
import socket

def where():
    return socket.gethostname()

def test_hosts(race):
    result = race(where, processes=2, rounds=1, replicas=2)
    assert {o.value for o in result.rounds[0].outcomes} == {"replica-0", "replica-1"}
"""

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switches to another user")


def _no_mount_namespaces() -> None:
    """In the child, before it runs pytest: a user namespace of its own where no mount
    namespace may be made (the limit is per user namespace)."""
    from pytest_racecheck.linux import namespaces

    namespaces.own_user_namespace()
    Path("/proc/sys/user/max_mnt_namespaces").write_text("0")


@root_only
def test_skips_where_namespaces_cannot_be_made(pytester: pytest.Pytester) -> None:
    """Never a silent run on one host: the race skips, and says why."""
    pytester.makepyfile(HOSTS_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(pytester.path)],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        preexec_fn=_no_mount_namespaces,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert "cannot make Linux namespaces" in run.stdout
    assert "max_*_namespaces" in run.stdout


NOBODY = 65534


def _as_nobody(*argv: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        env={**os.environ, "HOME": cwd},
        timeout=180,
    )


@root_only
def test_unprivileged_user_gets_hosts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """An unprivileged user's race runs on two hosts where the kernel lets such a user make a
    user namespace (this machine's answer is probed first), and skips with the reason
    where it does not."""
    import tempfile

    work = tempfile.mkdtemp(prefix="racecheck-nobody-")
    try:
        os.chmod(work, 0o777)
        Path(work, "test_hosts.py").write_text(HOSTS_TEST)
        probe = _as_nobody(
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from pytest_racecheck.linux import namespaces; namespaces.own_user_namespace()",
            str(Path(__file__).resolve().parents[1]),
            cwd=work,
        )
        run = _as_nobody(
            "-m",
            "pytest",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"--basetemp={work}/tmp",
            work,
            cwd=work,
        )
        if probe.returncode == 0:
            assert "1 passed" in run.stdout, run.stdout + run.stderr
        else:
            assert "1 skipped" in run.stdout and "user namespaces" in run.stdout, run.stdout
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def leave_marks(shared: str, private: str) -> list[str]:
    name = socket.gethostname()
    Path(shared, name).touch()
    Path(private, name).touch()
    return sorted(os.listdir(private))


def test_host_path_inside_tmp_path_is_the_hosts_own(race: Any, tmp_path: Path) -> None:
    """tmp_path is shared by the hosts; a host path declared inside it is each host's own,
    empty at the start and gone afterwards."""
    shared, private = tmp_path / "shared", tmp_path / "lock"
    shared.mkdir()
    private.mkdir()
    result = race(
        leave_marks,
        str(shared),
        str(private),
        processes=2,
        rounds=1,
        replicas=2,
        host_paths=[private],
    )
    assert sorted(os.listdir(shared)) == ["replica-0", "replica-1"]
    assert {tuple(o.value) for o in result.rounds[0].outcomes} == {("replica-0",), ("replica-1",)}
    assert os.listdir(private) == []


def test_imported_packages_stay_shared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A package found by an editable install's finder is on no sys.path entry; its directory
    must still be shared, or a racer's later import of a submodule fails on the host (as it
    did in CI, with the checkout under /tmp)."""
    import pytest_racecheck
    from pytest_racecheck.controller.replicas import shared_paths
    from pytest_racecheck.controller.spec import RaceSpec

    package = Path(pytest_racecheck.__file__).resolve().parent
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if Path(p or ".").resolve() != package.parent]
    )
    monkeypatch.chdir(tmp_path)
    kept = shared_paths(RaceSpec(fn=print, processes=2, replicas=2), ["/tmp"], [])
    assert any(package == Path(k) or Path(k) in package.parents for k in kept), kept


def what_the_host_shows() -> tuple[int, list[int]]:
    return os.getpid(), sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def test_a_host_shows_only_its_own_processes(race: Any) -> None:
    """Its own process IDs and /proc: init is 1, its racers are small numbers, and nothing of
    this machine (the test process, the other host) is listed."""
    result = race(what_the_host_shows, processes=4, rounds=1, replicas=2)
    for outcome in result.rounds[0].outcomes:
        pid, listed = outcome.value
        assert listed[0] == 1 and pid in listed and len(listed) <= 8, listed
        assert os.getpid() not in listed or os.getpid() < 10
