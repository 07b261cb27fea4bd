"""What a process started ahead of a race takes from the test process when the race begins.

A racer spawned for a race inherits the test process's environment, working directory and
``sys.path`` of that moment. A process started earlier (a spare, or a racer host and the racer
it forks) gets the same three things here, so that the racer sees what one spawned now would.
Both sides live in this module, which the racer, the spares and the hosts import; none of them
imports another for it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

PRELOAD = ("pytest", "sqlite3", "psycopg", "psycopg2", "sqlalchemy.orm", "django.db.models")
"""Modules a process started ahead imports while it waits, if the test process has imported
them: most racers need them, and no racer code has run when they are imported. Each is one
that imports no database driver's connection code and starts no thread at import (a host
forks, and a fork keeps only the forking thread); the ORMs are here because importing them is
most of a racer's start-up (0.3 s of CPU for SQLAlchemy's, per racer per race)."""


@dataclass(frozen=True)
class HostPlace:
    """A simulated host a racer runs on: its name and its namespaces (``/proc/PID/ns``)."""

    name: str
    ns_dir: str


@dataclass(frozen=True)
class Assignment:
    """The test process's context at race time, handed to a process started earlier."""

    environ: dict[str, str]
    cwd: str
    sys_path: list[str]
    place: HostPlace | None = None
    """The simulated host to fork the racer into (``replicas=``), None for this one."""

    @classmethod
    def now(cls) -> Assignment:
        return cls(dict(os.environ), os.getcwd(), list(sys.path))

    def apply(self) -> None:
        """In the racer: take the context as a racer spawned at race time would have it."""
        os.environ.clear()
        os.environ.update(self.environ)
        with contextlib.suppress(OSError):
            os.chdir(self.cwd)
        sys.path[:] = self.sys_path
        importlib.invalidate_caches()


def interpreter_env(environ: Any = None) -> dict[str, str]:
    """The variables read when an interpreter starts (``PYTHONHASHSEED``...): a process
    started under others is not what a racer started now would be."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith("PYTHON")}


def preload_names() -> tuple[str, ...]:
    """The test process's side: which of :data:`PRELOAD` to import ahead."""
    return tuple(name for name in PRELOAD if name in sys.modules)


def preload(names: tuple[str, ...]) -> None:
    """The waiting process's side: import them, ignoring any that fails (the racer will say)."""
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
