"""Linux namespaces through libc: what a simulated host is made of.

A simulated host (see :mod:`pytest_racecheck.processes.replicas`) is three namespaces: a mount
namespace (its own ``/tmp``, ``/run``...), a UTS namespace (its own hostname) and a PID
namespace (its own process IDs). Python has ``os.unshare`` and ``os.setns`` only from 3.12,
so these call libc. Standard library only: :mod:`.anchor` runs in an interpreter that has
nothing else.
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
HOST_NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

PR_SET_PDEATHSIG = 1

UNAVAILABLE = (errno.EPERM, errno.ENOSYS, errno.EINVAL, errno.EACCES, errno.EUSERS, errno.ENOSPC)
"""What unshare(2) answers where a kernel, a container or a missing privilege forbids it."""

_libc: ctypes.CDLL | None = None


def _call(name: str, *args: object) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    _call("unshare", ctypes.c_int(flags))


def setns(fd: int, nstype: int) -> None:
    _call("setns", ctypes.c_int(fd), ctypes.c_int(nstype))


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _call(
        "mount",
        source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )


def die_with_parent(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent ends."""
    _call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signum), 0, 0, 0)


def own_user_namespace() -> None:
    """Unprivileged: a user namespace of this process's own, in which it may make the others
    (where the kernel lets unprivileged users make user namespaces). Its user and group stay
    what they are outside."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER)
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as out:
            out.write(text)


_KINDS = (
    ("user", CLONE_NEWUSER),
    ("mnt", CLONE_NEWNS),
    ("uts", CLONE_NEWUTS),
    ("pid", CLONE_NEWPID),
)


def enter_host(ns_dir: str) -> None:
    """Move this process into the host at ``ns_dir`` (``/proc/PID/ns`` of its init): its user
    namespace if it has one of its own, its mount and UTS namespaces, and its PID namespace
    for the children this process forks next. Single-threaded only (a forked child); its
    root and working directory become the host's root."""
    # All opened first: once inside, /proc is the host's, with other process IDs.
    fds = []
    try:
        for kind, nstype in _KINDS:
            path = os.path.join(ns_dir, kind)
            if kind == "user" and os.stat(path).st_ino == os.stat("/proc/self/ns/user").st_ino:
                continue  # made by root: no user namespace of its own
            fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), nstype))
        for fd, nstype in fds:
            setns(fd, nstype)
    finally:
        for fd, _ in fds:
            os.close(fd)
