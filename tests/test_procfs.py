"""pytest_racecheck.linux.procfs: what it reads from /proc, and what it says where there is none."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from pytest_racecheck.linux import procfs

needs_proc = pytest.mark.skipif(not procfs.available(), reason="reads Linux's /proc")


@needs_proc
def test_all_threads_sees_another_thread_run_and_sleep() -> None:
    """An idle racer is one none of whose threads runs: aiosqlite's thread runs the statement
    its main thread waits for. A spinning thread shows as ``R`` and a sleeping one as ``S``."""
    me = os.getpid()
    stop, spinning = threading.Event(), threading.Event()

    def spin() -> None:
        spinning.set()
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        spinning.wait()
        deadline = time.monotonic() + 5
        while (found := procfs.all_threads(me)) is not None and "R" not in found[0]:
            assert time.monotonic() < deadline, found  # a loaded machine may not run it at once
            time.sleep(0.001)
    finally:
        stop.set()
        worker.join()
    sleeper = threading.Thread(target=stop.wait, args=(1,))
    stop.clear()
    sleeper.start()
    try:
        deadline = time.monotonic() + 5
        while (found := procfs.all_threads(me)) is not None and found[0] != {"S"}:
            assert time.monotonic() < deadline, found
            time.sleep(0.001)
        assert found is not None and found[1] >= (procfs.cpu_time_ns(me) or 0)
    finally:
        stop.set()
        sleeper.join()
    assert procfs.all_threads(-1) is None


@needs_proc
def test_this_process() -> None:
    me = os.getpid()
    assert procfs.state(me) == "R"  # it is reading its own stat file
    assert procfs.thread_state(me) == "R"
    assert procfs.session_id(me) == os.getsid(me)
    assert procfs.start_time(me) is not None and procfs.start_time(me) == procfs.start_time(me)
    assert "python" in Path(procfs.cmdline(me)[0]).name
    assert me in procfs.pids()
    assert procfs.pid_namespace() is not None
    # The kernel adds a running thread's CPU time up at scheduler ticks, not on every read:
    # spin until it moves (a tick is a few ms), or fail after a second.
    before = procfs.cpu_time_ns(me)
    assert before is not None
    after, deadline = before, time.monotonic() + 1
    while after == before and time.monotonic() < deadline:
        sum(range(20_000))
        after = procfs.cpu_time_ns(me) or before
    assert after > before


@needs_proc
def test_a_sleeping_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while procfs.thread_state(child.pid) != "S" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.thread_state(child.pid, child.pid) == "S"
        assert procfs.cmdline(child.pid)[-1] == "import time; time.sleep(30)"
        number = procfs.syscall_number(child.pid)
        # Unreadable without ptrace rights on some kernels; a number when readable.
        assert number is None or number >= 0
        assert child.pid in procfs.session_members(os.getsid(0))
    finally:
        child.kill()
        child.wait()
    assert procfs.state(child.pid) is None
    assert procfs.cmdline(child.pid) == []
    assert procfs.cpu_time_ns(child.pid) is None
    assert procfs.syscall_number(child.pid) is None


def test_without_proc_everything_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procfs, "PROC", "/nonexistent-proc")
    me = os.getpid()
    assert not procfs.available()
    assert procfs.stat_fields(me) is None and procfs.thread_state(me) is None
    assert procfs.start_time(me) is None and procfs.session_id(me) is None
    assert procfs.cmdline(me) == [] and procfs.pids() == [] and procfs.session_members(1) == []
    assert procfs.syscall_number(me) is None and procfs.cpu_time_ns(me) is None
    assert procfs.pid_namespace() is None


def test_a_lost_feature_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procfs, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        procfs.warn_unavailable("telling X", "Y is used instead")
        procfs.warn_unavailable("telling X", "Y is used instead")
    assert [str(w.message) for w in caught] == [
        "pytest-racecheck: telling X needs Linux's /proc, which this system does not have; "
        "Y is used instead"
    ]
