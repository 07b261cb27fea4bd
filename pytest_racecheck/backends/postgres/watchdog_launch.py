"""Starting the throwaway server's watchdog (:mod:`.watchdog`) and learning its pid.

Apart from :mod:`.watchdog` itself: that module runs in the watchdog process, which imports only
:mod:`.state`, :mod:`pytest_racecheck.linux.procfs` and the standard library, and must not be
imported by the package (``-m`` would then find a second copy). This side runs in pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_racecheck.backends.postgres import state as st
from pytest_racecheck.backends.postgres.errors import PostgresSetupError


@dataclass
class WatchdogLaunch:
    """A watchdog being started: the command's short-lived parent, and how it was run."""

    root: Path
    process: subprocess.Popen[bytes]
    isolated: bool


def launch_watchdog(root: Path, *, isolated: bool = True) -> WatchdogLaunch:
    """Start the watchdog (:mod:`.watchdog`); it runs detached, so ending pytest cannot end it.

    Started before initdb, so that a run killed while the server starts is covered too; its pid
    is read after the server is up (see :func:`watchdog_pid`), in parallel with initdb.
    ``isolated=False`` is the fall-back for a package that an isolated interpreter cannot import:
    the same module, with ``PYTHONPATH`` naming where this package was imported from.
    """
    cmd = [sys.executable, "-I", "-m", st.WATCHDOG_MODULE, str(root), str(st.WATCHDOG_INTERVAL)]
    env: dict[str, str] | None = None
    if not isolated:
        here = Path(__file__).resolve().parents[3]  # the directory holding pytest_racecheck/
        cmd.remove("-I")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH=str(here), PYTHONSAFEPATH="1", PYTHONNOUSERSITE="1")
    process = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=env,
        start_new_session=True,
    )
    return WatchdogLaunch(root, process, isolated)


def watchdog_pid(launch: WatchdogLaunch) -> int:
    """The watchdog's pid, which its short-lived parent prints before it exits."""
    out, err = launch.process.communicate(timeout=60)
    try:
        return int(out)
    except ValueError:
        pass
    text = err.decode(errors="replace").strip()
    if launch.isolated and f"No module named {st.WATCHDOG_MODULE.split('.')[0]!r}" in text:
        return watchdog_pid(launch_watchdog(launch.root, isolated=False))
    raise PostgresSetupError(
        "the throwaway server's watchdog did not start: "
        + (text or f"exit status {launch.process.returncode}")
    )
