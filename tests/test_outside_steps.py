"""Which acts of a racer become steps of their own after its start (explore mode)."""

from __future__ import annotations

import os
import subprocess
import sys

from pytest_racecheck.instrument.start_effects import shares


def test_writing_creating_renaming_and_locking_are_steps() -> None:
    assert shares("open", ("/tmp/x/claimed", "w", os.O_WRONLY | os.O_CREAT)) == "open claimed"
    assert shares("open", ("/tmp/x/claimed", None, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    assert shares("os.rename", ("/tmp/x/a", "/tmp/x/b", -1, -1)) == "os.rename a"
    assert shares("fcntl.flock", (5, 2)) == "fcntl.flock"


def test_reads_and_private_files_are_not() -> None:
    assert shares("open", ("/tmp/x/claimed", "r", os.O_RDONLY)) is None
    assert shares("open", ("/srv/app/__pycache__/m.cpython-311.pyc", None, os.O_CREAT)) is None
    assert shares("open", ("/proc/self/stat", "w", os.O_WRONLY)) is None
    assert shares("os.stat", ("/tmp/x/claimed",)) is None


def test_a_racer_that_never_explores_gets_no_audit_hook() -> None:
    """The hook runs on every audit event of the process: a stress racer must not carry it."""
    code = (
        "from pytest_racecheck.instrument import start_effects as s\n"
        "s.hold_steps(None)\n"
        "assert not s._installed\n"
        "s.hold_steps(print)\n"
        "assert s._installed\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
