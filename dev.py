#!/usr/bin/env python3
"""The project's two jobs, on a fresh clone with nothing but Python 3.10+.

    python3 dev.py examples   race the examples and print the result table
    python3 dev.py test       run the whole test suite (tests/ and examples/)

Each sets up what it needs first: a virtual environment in .venv with the package, its
PostgreSQL extra and the dev tools. Where PostgreSQL's server binaries are found (or
RACECHECK_POSTGRES_URL is set), PostgreSQL tests are required to run rather than skip.
Extra arguments go to pytest.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import venv
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("examples", "test"):
        print(__doc__)
        return 2
    job, extra = argv[0], argv[1:]
    ensure_environment()
    args = [str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider"]
    if postgres_present():
        args.append("--racecheck-require-postgres")
    if job == "examples":
        args += ["examples", "-q"]
    else:
        args += ["tests", "examples", "-n", "2", "-q"]
    return subprocess.call([*args, *extra], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
