"""The program that makes one simulated host and keeps it alive.

Run as ``python -I -S -c ...`` with one JSON argument (``hostname``, ``private`` paths,
``keep`` paths), it makes new mount, UTS and PID namespaces, mounts an empty tmpfs on each
private path, binds back the kept paths that lie inside them (the code, the test's
temporary directory, the databases: shared by every host), names the host, and forks the
host's init: process 1 of the new PID namespace, which mounts the host's own ``/proc`` and
reaps orphans. It then prints ``{"init": PID}`` (or ``{"unavailable": why}`` where the
kernel or container forbids namespaces, ``{"error": why}`` otherwise) and waits for its
standard input to close, at race end or when the test process dies. Then it kills init,
and with it, by the kernel's rule for PID namespaces, every process left on the host; the
mounts go with the last process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys

from pytest_racecheck.linux import namespaces as ns
from pytest_racecheck.linux.descendants import reap_children


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")


def _bind_back(path: str, fd: int) -> None:
    """Make ``path`` (inside a fresh tmpfs) show the original, opened as ``fd`` before."""
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    ns.mount(f"/proc/self/fd/{fd}", path, None, ns.MS_BIND | ns.MS_REC, None)


def make_host(hostname: str, private: list[str], keep: list[str]) -> None:
    """In this process: the namespaces, the private mounts, the kept paths, the name."""
    if os.geteuid() != 0:
        ns.own_user_namespace()
    ns.unshare(ns.HOST_NAMESPACES)
    ns.mount("none", "/", None, ns.MS_REC | ns.MS_PRIVATE, None)
    inside = [k for k in keep if any(_under(k, p) for p in private) and os.path.exists(k)]
    opened = {k: os.open(k, os.O_PATH | os.O_CLOEXEC) for k in inside}
    # Shallower first: a kept path under /tmp is bound after /tmp is covered, and a private
    # path under a kept one is covered after the kept one is bound back.
    steps = sorted(
        [(p, True) for p in private] + [(k, False) for k in inside],
        key=lambda s: (_depth(s[0]), s[1] is False),
    )
    for path, is_private in steps:
        if is_private:
            os.makedirs(path, exist_ok=True)
            ns.mount("tmpfs", path, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=1777")
        else:
            _bind_back(path, opened[path])
    for fd in opened.values():
        os.close(fd)
    socket.sethostname(hostname)


def _under(path: str, root: str) -> bool:
    return path != root and (path + "/").startswith(root.rstrip("/") + "/")


def _init(ready: int) -> None:
    """Process 1 of the host: its own /proc, then reap whatever is left to it."""
    ns.die_with_parent(signal.SIGKILL)
    ns.mount("proc", "/proc", "proc", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, None)
    os.write(ready, b"1")
    os.close(ready)

    signal.signal(signal.SIGCHLD, lambda signum, frame: reap_children())
    while True:
        signal.pause()


_HINTS = {
    errno.ENOSPC: ": a limit in /proc/sys/user/max_*_namespaces is 0 or reached",
    errno.EPERM: ": not root, and no user namespaces for other users here",
}


def _say(**message: object) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the test process ends the host
    plan = json.loads(sys.argv[1])
    try:
        make_host(plan["hostname"], plan["private"], plan["keep"])
    except OSError as exc:
        unshare_refused = exc.errno in ns.UNAVAILABLE and (
            "unshare" in str(exc) or "_map" in str(exc) or "setgroups" in str(exc)
        )
        why = f"{exc}{_HINTS.get(exc.errno or 0, '') if unshare_refused else ''}"
        _say(**{"unavailable" if unshare_refused else "error": why})
        sys.exit(1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            _init(write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    if os.read(read_end, 1) != b"1":
        _say(error="the host's init could not mount its /proc")
        sys.exit(1)
    _say(init=pid)
    try:
        sys.stdin.buffer.read()  # until the test process closes it, or dies
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
