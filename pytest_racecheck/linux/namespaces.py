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


def _join(ns_dir: str, kind: str, nstype: int) -> None:
    fd = os.open(os.path.join(ns_dir, kind), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, nstype)
    finally:
        os.close(fd)


def children_join(ns_dir: str) -> int:
    """Have this process's next children start in the PID namespace at ``ns_dir``
    (``/proc/PID/ns``); a descriptor of its own, for :func:`children_return`."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _join(ns_dir, "pid", CLONE_NEWPID)
    except BaseException:
        os.close(own)
        raise
    return own


def children_return(own: int) -> None:
    """Undo :func:`children_join`: next children start in this process's PID namespace."""
    try:
        setns(own, CLONE_NEWPID)
    finally:
        os.close(own)


def enter_host(ns_dir: str) -> None:
    """Move this process into the host's mount and UTS namespaces (single-threaded only: a
    forked child). Its root and working directory become the host's root."""
    # Both opened first: the host's /proc, seen once inside, has other process IDs.
    fds = [
        (os.open(os.path.join(ns_dir, k), os.O_RDONLY | os.O_CLOEXEC), t)
        for k, t in (("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS))
    ]
    try:
        for fd, nstype in fds:
            setns(fd, nstype)
    finally:
        for fd, _ in fds:
            os.close(fd)
