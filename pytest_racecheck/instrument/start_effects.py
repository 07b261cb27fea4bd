"""What a racer did outside its process between its release and its first point.

In explore mode a round begins with every racer held at its start; the search lets them go one
at a time, each to its first point. What a racer does on the way (take a ``FileLock``, ``flock``
a file, connect, read a file) is ordered by that choice; whether the order can matter is told by
Python's audit events (PEP 578), raised by the interpreter itself for every file opened, lock
taken, socket connected and process started, whatever library does it. A start that raised none
of them acted only on the racer's own memory, and commutes with everything; one that did is
explored in every order against the other such starts (see docs/explore.md, "The round's
start").

Work done in C without Python's involvement (libpq connecting, SQLite opening its file) raises
no event; connecting through ``sqlite3.connect`` or a Python socket does.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

OUTSIDE_EVENTS = frozenset(
    {
        "open", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.link", "os.symlink",
        "os.truncate", "os.chmod", "os.chown", "os.utime", "os.kill", "os.killpg",
        "os.posix_spawn", "os.fork", "os.exec", "os.system", "os.spawn", "subprocess.Popen",
        "fcntl.fcntl", "fcntl.flock", "fcntl.lockf", "socket.connect", "socket.bind",
        "socket.sendto", "sqlite3.connect", "mmap.__new__",
    }
)  # fmt: skip
"""Audit events that act on something another process can see."""
OUTSIDE_PREFIXES = ("shutil.",)

MAX_KEPT = 8
"""Events kept per start (for the report); whether there was any is what the search reads."""

_seen: list[str] | None = None
_thread = 0
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    seen = _seen
    if seen is None or len(seen) >= MAX_KEPT or threading.get_ident() != _thread:
        return  # other threads of the racer are never ordered by the search anyway
    outside = event in OUTSIDE_EVENTS or event.startswith(OUTSIDE_PREFIXES)
    if outside and event not in seen:
        seen.append(event)


def watch() -> None:
    """Start recording (the racer was just let go from its start)."""
    global _seen, _installed, _thread
    _thread = threading.get_ident()
    if not _installed:  # an audit hook cannot be removed: one per process, idle when not watching
        sys.addaudithook(_hook)
        _installed = True
    _seen = []


def collect() -> tuple[str, ...] | None:
    """Stop recording; the events seen since :func:`watch` (None: it was not watching)."""
    global _seen
    seen, _seen = _seen, None
    return tuple(seen) if seen is not None else None
