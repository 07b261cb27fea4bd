#!/usr/bin/env python3
"""The project's two jobs, on a fresh clone with nothing but Python 3.10+.

    python3 dev.py examples   race the examples and print the result table
    python3 dev.py test       run the whole test suite (tests/ and examples/)

    python3 dev.py test --hogs   the same beside two CPU hogs per core (a loaded CI runner)
    python3 dev.py stress [N]    the whole suite N times in a row (default 3) with the hogs,
                                 stopping at the first failing run; prints each run's time

Each sets up what it needs first: a virtual environment in .venv with the package, its
PostgreSQL extra and the dev tools. Where PostgreSQL's server binaries are found (or
RACECHECK_POSTGRES_URL is set), PostgreSQL tests are required to run rather than skip.
Extra arguments go to pytest.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".racecheck-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py may be run by any python3)
        sys.exit(f"pytest-racecheck needs Python 3.10 or newer, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pyproject = ROOT / "pyproject.toml"
    if not STAMP.exists() or STAMP.stat().st_mtime < pyproject.stat().st_mtime:
        print("dev.py: installing pytest-racecheck[postgres,dev] into .venv", flush=True)
        pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--editable", f"{ROOT}[postgres,dev]"], check=True)
        STAMP.touch()


def postgres_present() -> bool:
    if os.environ.get("RACECHECK_POSTGRES_URL"):
        return True
    return bool(shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))


HOGS_PER_CORE = 2
HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"
"""A busy loop that ends with the dev.py that started it, even if dev.py is killed."""


@contextlib.contextmanager
def cpu_hogs(per_core: int = HOGS_PER_CORE) -> Iterator[int]:
    """Busy processes beside the suite, ``per_core`` per CPU: verdicts must not change on a
    loaded machine (a CI runner shared with other jobs)."""
    count = per_core * (os.cpu_count() or 1)
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        yield count
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def run_suite(extra: list[str]) -> int:
    args = [str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider"]
    if postgres_present():
        args.append("--racecheck-require-postgres")
    args += ["tests", "examples", "-n", "2", "-q"]
    return subprocess.call([*args, *extra], cwd=ROOT)


def stress(runs: int, extra: list[str]) -> int:
    """The suite ``runs`` times in a row beside the hogs; the first failing run ends it."""
    with cpu_hogs() as count:
        for run in range(1, runs + 1):
            started = time.monotonic()
            code = run_suite(extra)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(
                f"dev.py stress: run {run}/{runs} with {count} CPU hogs: exit {code}, "
                f"{time.monotonic() - started:.0f} s, load average {load}",
                flush=True,
            )
            if code != 0:
                return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("examples", "test", "stress"):
        print(__doc__)
        return 2
    job, extra = argv[0], argv[1:]
    ensure_environment()
    if job == "stress":
        runs = int(extra.pop(0)) if extra and extra[0].isdigit() else 3
        return stress(runs, extra)
    if job == "test":
        hogs = "--hogs" in extra
        extra = [a for a in extra if a != "--hogs"]
        with cpu_hogs() if hogs else contextlib.nullcontext():
            return run_suite(extra)
    args = [str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider"]
    if postgres_present():
        args.append("--racecheck-require-postgres")
    return subprocess.call([*args, "examples", "-q", *extra], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
