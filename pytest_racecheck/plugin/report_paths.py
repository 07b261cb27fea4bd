"""Where the session's report files go: the option's path from where pytest started, the ini
key's from the ini file, checked before any test runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def report_path(config: pytest.Config, name: str = "report") -> Path | None:
    """Where to write the JSON report (``name="html"``: the HTML page): the option's path is
    taken from the directory pytest was started in, the ini key's from the ini file's
    directory (as pytest does for paths)."""
    cli = config.getoption(f"racecheck_{name}")
    if cli:
        return config.invocation_params.dir / cli
    ini = config.getini(f"racecheck_{name}")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return base / str(ini)
    return None


def check_report_path(config: pytest.Config, name: str = "report") -> Path | None:
    """The report's path (``name="html"``: the HTML page's), checked before any test runs: a
    run of an hour must not learn at its end that its report cannot be written. A UsageError
    names the setting and the path."""
    path = report_path(config, name)
    if path is None:
        return None
    source = (
        f"--racecheck-{name}" if config.getoption(f"racecheck_{name}") else f"ini racecheck_{name}"
    )
    problem = report_path_problem(path)
    if problem is not None:
        raise pytest.UsageError(
            f"{source}={path}: the report cannot be written there: {problem}; "
            "give a file path in a writable directory"
        )
    return path


def report_path_problem(path: Path) -> str | None:
    """Why the report could not be written to ``path`` (its directory is made if missing),
    or None."""
    if path.is_dir():
        return "it is a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            return f"no part of {path.parent} exists"
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the directory {parent} is not writable"
    return None
