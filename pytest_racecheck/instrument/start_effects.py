"""What a racer does outside its process: between its release and its first point, and after.

In explore mode a round begins with every racer held at its start; the search lets them go one
at a time, each to its first point. What a racer does on the way (take a ``FileLock``, ``flock``
a file, connect, read a file) is ordered by that choice; whether the order can matter is told by
Python's audit events (PEP 578), raised by the interpreter itself for every file opened, lock
taken, socket connected and process started, whatever library does it. A start that raised none
of them acted only on the racer's own memory, and commutes with everything; one that did is
explored in every order against the other such starts (see docs/explore.md, "The round's
start").

After its first point, an act that another process can see (a file opened to write or create,
a rename or removal, a file lock taken or let go: :func:`shares`) is a step of its own: the
racer is held just before it, like before a statement, so the search orders it against the
other racers' such steps. A ``stat`` or ``os.path.exists`` raises no event: a check of a file
is not seen, only the act that follows it.

Work done in C without Python's involvement (libpq connecting, SQLite opening its file) raises
no event; connecting through ``sqlite3.connect`` or a Python socket does.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
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

STEP_EVENTS = frozenset(
    {
        "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.link", "os.symlink",
        "os.truncate", "fcntl.flock", "fcntl.lockf",
    }
)  # fmt: skip
"""Besides opening a file to write or create it: the acts that become steps after the start."""
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PRIVATE = ("__pycache__", "/proc/", "/dev/")

_seen: list[str] | None = None
_thread = 0
_installed = False
_on_step: Callable[[str], None] | None = None
_in_step = False


def shares(event: str, args: tuple[Any, ...]) -> str | None:
    """A name for the act when another process could see it (a step), else None."""
    if event == "open":
        path, mode, flags = (*tuple(args), None, None, None)[:3]
        writes = any(c in mode for c in "wxa+") if isinstance(mode, str) and mode else False
        writes = writes or (isinstance(flags, int) and bool(flags & _WRITING) and not mode)
        if not writes or not isinstance(path, (str, bytes, os.PathLike)):
            return None
    elif event not in STEP_EVENTS:
        return None
    target = args[0] if args else ""
    if isinstance(target, (str, bytes, os.PathLike)):
        text = os.fsdecode(target)
        if any(p in text for p in _PRIVATE):
            return None
        return f"{event} {os.path.basename(text) or text}"
    return event


def hold_steps(on_step: Callable[[str], None] | None) -> None:
    """From now on (None: no longer) call ``on_step`` before each shared act of this thread."""
    global _on_step, _thread, _installed
    _on_step = on_step
    if on_step is None:
        return  # a racer that never explores never gets the hook: it would run on every event
    _thread = threading.get_ident()
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


def _hook(event: str, args: tuple[Any, ...]) -> None:
    global _in_step
    seen = _seen
    if seen is None:
        step = _on_step
        if step is None or _in_step or threading.get_ident() != _thread:
            return
        name = shares(event, args)
        if name is not None:
            _in_step = True  # what holding does (a pipe, a pickle) is no step of its own
            try:
                step(name)
            finally:
                _in_step = False
        return
    if len(seen) >= MAX_KEPT or threading.get_ident() != _thread:
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
