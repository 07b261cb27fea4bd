"""The throwaway server's watchdog: stops it once no owner is alive, even after a SIGKILL.

Run as ``python -I -m pytest_racecheck.backends.postgres.watchdog ROOT INTERVAL``. It forks once
and the parent prints the child's pid and exits, so the watchdog belongs to init and nobody has
a child to reap; the child writes its pid and start time to ``ROOT/watchdog.json`` (so whoever
tears the server down finds it by that file and the state, never by its command line), then
looks at the owners every INTERVAL seconds and, once none is alive, takes the directory's lock
and tears the server down as the last owner would (:func:`.state.destroy`). It exits when the
directory is gone, whoever removed it.

Why a module run with ``-m`` and ``-I``. The watchdog outlives pytest, so it must not depend on
anything of the test run: ``-I`` keeps the project's working directory, ``PYTHONPATH`` and user
site-packages out of its ``sys.path``. ``-m`` runs this file as what it is, a module of the
installed package, so it imports its siblings normally. ``-m`` first imports the packages around
it: ``pytest_racecheck/__init__.py`` (which loads the harness only when one of its names is
used), ``pytest_racecheck/backends/__init__.py`` (``sqlite3``) and the ``postgres`` package's
``__init__`` (modules that import psycopg and filelock only inside functions). This module itself
imports only :mod:`.state`, :mod:`pytest_racecheck.linux.procfs` and the standard library; a test
checks that neither psycopg, filelock, dill nor multiprocess is loaded in the watchdog.

When the package is importable only through ``PYTHONPATH`` or a user site-packages (an isolated
interpreter cannot see it), the launcher runs the same module without ``-I``, with ``PYTHONPATH``
naming the directory the running package came from (see :func:`.watchdog_launch.launch_watchdog`).
The package's ``__init__`` does not import this module, so ``-m`` runs its only copy.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_racecheck.backends.postgres import state as st
from pytest_racecheck.linux import procfs


def main(argv: Sequence[str]) -> None:
    """``ROOT INTERVAL``: detach, record this process, watch until the directory is gone."""
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
        me = os.getpid()
        if st.exists(root):
            st.write_json(root / st.WATCHDOG_NAME, {"pid": me, "start": procfs.start_time(me)})
        watch(root, interval)
    finally:
        os._exit(0)


def watch(root: Path, interval: float) -> None:
    """Stop the server once none of its owners is alive; return when its directory is gone."""
    while st.exists(root):
        time.sleep(interval)
        state = st.read_state(root)
        if state is not None and st.live_owners(state):
            continue
        with st.root_lock(root, timeout=0) as held:
            if not held:
                continue  # being started, joined or closed right now: look again later
            state = st.read_state(root)
            if state is None or not st.live_owners(state):
                st.destroy(root, state)
                return


if __name__ == "__main__":
    main(sys.argv[1:])
