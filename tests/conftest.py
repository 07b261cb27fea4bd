"""Shared helpers for the plugin's own tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TAG_VAR = "RACECHECK_TEST_TAG"
LEFTOVER_WAIT_S = 15.0
SUITE_TAG_VAR = "RACECHECK_SUITE_TAG"
"""Set once per run of this suite; every PostgreSQL server the run starts (also in pytester
runs and xdist workers) inherits it: what tells the run's servers from other runs'."""
SHM_PREFIX = "/dev/shm/PostgreSQL."
SHM_LOOK_EVERY_S = 0.25


class ShmWatch:
    """Which ``/dev/shm/PostgreSQL.*`` segments the servers of this run mapped, looked up every
    SHM_LOOK_EVERY_S in the maps of ``postgres`` processes that carry this run's tag. Other
    runs on the machine make segments too: only this run's servers' are its to clean up."""

    def __init__(self, tag: str) -> None:
        self.tag = f"{SUITE_TAG_VAR}={tag}".encode()
        self.seen: dict[str, int] = {}  # segment: the server process that mapped it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shm-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SHM_LOOK_EVERY_S):
            self.look()

    def look(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/comm", "rb") as f:
                    if f.read().strip() != b"postgres":
                        continue
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if self.tag not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry.name}/maps") as f:
                    maps = f.read()
            except OSError:
                continue
            for line in maps.splitlines():
                at = line.find(SHM_PREFIX)
                if at >= 0:
                    self.seen.setdefault(line[at:].split()[0], int(entry.name))

    def left(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return sorted(s for s in self.seen if os.path.exists(s))


_shm_watch: ShmWatch | None = None
_shm_left: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """The run's tag, and its watch, in the process that runs the session (not in xdist
    workers, which inherit the tag and whose servers the watch sees)."""
    global _shm_watch
    if hasattr(config, "workerinput") or not Path("/proc/self/maps").exists():
        return
    tag = os.environ.setdefault(SUITE_TAG_VAR, uuid.uuid4().hex)
    _shm_watch = ShmWatch(tag)


@pytest.hookimpl(trylast=True)  # after the session's fixtures (and servers) are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a PostgreSQL server it started left POSIX shared memory behind."""
    global _shm_watch
    if _shm_watch is None:
        return
    _shm_watch.look()
    _shm_left[:] = _shm_watch.left()
    _shm_watch = None
    if _shm_left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _shm_left:
        terminalreporter.write_sep("=", "POSIX shared memory left by this run's servers", red=True)
        for segment in _shm_left:
            terminalreporter.write_line(f"{segment} (remove it: rm {segment})")


def gone(pid: int) -> bool:
    """The process has ended (or is a zombie, which its parent has yet to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_gone(pids: list[int], what: str) -> None:
    """Wait for every one of ``pids`` to end; fail saying ``what`` after a generous bound."""
    deadline = time.monotonic() + 60
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline, f"{what}: {[p for p in pids if not gone(p)]}"
        time.sleep(0.05)


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """Processes whose environment carries ``tag``: everything a tagged run started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if f"{TAG_VAR}={tag}".encode() not in environ.split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), cmdline))
    return found


def _own_child(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[1] == str(os.getpid())


@pytest.fixture
def run_tag(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tag the processes a pytester subprocess run starts; fail if any survives the test."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG_VAR, tag)
    yield tag
    # This test process's own multiprocess resource tracker and spare racers (started in the
    # background after an earlier race, they may have inherited the tag) end with it: only what
    # the tagged run started must be gone, its resource tracker included. Processes killed as
    # the run ended get a few seconds to be gone (a loaded machine schedules them late).
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        left = [p for p in tagged_processes(tag) if p[0] != os.getpid() and not _own_child(p[0])]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"processes left behind by the run: {left}"


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester whose runs see this checkout's package first (racers import it too)."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester


class PointRecorder:
    """Stands in for a racer's points (duck-typed like ``points.RacerPoints``) and its channel:
    the names reached, the backend pids and connection starts reported, in order, by the thread
    that made it (the PostgreSQL fixture prepares databases in another)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sqls: list[str | None] = []  # each point's text, as the reports keep it
        self.last: str | None = None
        self.pids: list[int] = []
        self.pids_seen_at: list[int] = []
        self.events: list[object] = []  # the SQL of each point, each pid, each "connecting"
        self.thread = threading.get_ident()

    def _mine(self) -> bool:
        return threading.get_ident() == self.thread

    def reach(
        self,
        name: str,
        statement: bool = False,
        sql: str | None = None,
        conn: int = 0,
        info: object = None,
    ) -> None:
        if self._mine():
            self.names.append(name)
            self.sqls.append(sql)
            self.pids_seen_at.append(len(self.pids))
            self.last = name
            self.events.append(name.split(" @ ")[0])

    def backend_pid(self, pid: int) -> None:
        if self._mine():
            self.pids.append(pid)
            self.events.append(pid)

    def connecting(self) -> None:
        if self._mine():
            self.events.append("connecting")


@pytest.fixture
def rec() -> Iterator[PointRecorder]:
    """Statements are points in this process, recorded instead of held."""
    from pytest_racecheck import statements
    from pytest_racecheck.instrument import points

    recorder = PointRecorder()
    statements.install(on_backend_pid=recorder.backend_pid, on_connect=recorder.connecting)
    points.activate(recorder)  # type: ignore[arg-type]
    try:
        yield recorder
    finally:
        points.activate(None)
        statements.uninstall()


def signal_state(pid: int) -> str:
    """What the kernel says of a process's and its threads' signals (pending, blocked,
    ignored, caught), for a test whose Ctrl-C went unanswered."""
    keys = ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
    lines = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            status = (task / "status").read_text().splitlines()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = [line.replace("\t", " ") for line in status if line.startswith(keys)]
        lines.append(f"thread {task.name} ({name}): {', '.join(fields)}")
    return "\n".join(lines) or f"process {pid} is gone"


PYTEST_ANSWERING_CTRL_C = [
    sys.executable,
    "-c",
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.main(sys.argv[1:]))",
]
"""How a test starts a pytest it will Ctrl-C: with Python's own SIGINT handler, as in a
terminal. A child inherits an ignored SIGINT, and Python then installs none: a suite started
as a background job of a non-interactive shell (``cmd &``, where SIGINT and SIGQUIT are
ignored) would otherwise see its Ctrl-C tests hang."""


def interrupt(proc: subprocess.Popen[bytes], out: Path) -> int:
    """Ctrl-C to a pytest started by a test; its exit status, or a failure that says what the
    kernel knew of its signals if it does not end within 120 s."""
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    try:
        return proc.wait(120)
    except subprocess.TimeoutExpired:
        state = signal_state(proc.pid)
        proc.kill()
        proc.wait(10)
        pytest.fail(
            f"pytest did not end within 120 s of Ctrl-C (sent {time.monotonic() - sent:.0f} s "
            f"ago):\n{state}\n{out.read_text()}"
        )
