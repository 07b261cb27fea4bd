"""A racer's channel to the controller across machines: a TCP connection, both ends.

The remote host (:mod:`~pytest_racecheck.processes.remote_host`) opens it for each racer of a
race (:func:`connect_back`) and hands it to the racer host that forks the racer; the controller
(:mod:`~pytest_racecheck.processes.gateways`) takes the connections of a race's racers
(:func:`accept_racers`). Both sides prove the session's key (``multiprocess.connection``'s
challenge, each way); the racer's first message names its number and its race's token.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import multiprocess as _multiprocess
import multiprocess.connection

multiprocess: Any = _multiprocess  # an untyped package


def connect_back(host: str, port: int, authkey: bytes) -> Any:
    """A racer's channel: a TCP connection to the controller, authenticated, without Nagle's
    delay (a held racer's ``At`` and the controller's ``Pass`` are small and urgent)."""
    conn = multiprocess.connection.Client((host, port), family="AF_INET", authkey=authkey)
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    with contextlib.closing(sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def controller_host(given: str | None) -> str:
    """Where the controller listens: the address it gave, or for an ``ssh`` gateway (the
    controller listens on every interface) the address this machine sees the ssh client at."""
    if given:
        return given
    client = os.environ.get("SSH_CLIENT", "").split()
    if not client:
        raise OSError("the controller gave no address and this is no ssh session (no SSH_CLIENT)")
    return client[0]


def accept_racers(
    listener: socket.socket,
    authkey: bytes,
    token: str,
    expected: set[int],
    deadline: float,
    look: Callable[[], None],
) -> dict[int, Any]:
    """The racers' connections, by racer number; others (a stray client, an earlier race's)
    are closed."""
    found: dict[int, Any] = {}
    while len(found) < len(expected):
        look()
        if time.monotonic() >= deadline:
            missing = sorted(expected - set(found))
            raise TimeoutError(f"racers {missing} on gateways did not connect in time")
        if not select.select([listener], [], [], 0.05)[0]:
            continue
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = multiprocess.connection.Connection(sock.detach())
        try:
            multiprocess.connection.deliver_challenge(conn, authkey)
            multiprocess.connection.answer_challenge(conn, authkey)
            hello = conn.recv()
        except (OSError, EOFError, multiprocess.AuthenticationError):
            conn.close()
            continue
        if (
            isinstance(hello, tuple)
            and len(hello) == 3
            and hello[2] == token
            and hello[1] in expected
            and hello[1] not in found
        ):
            found[hello[1]] = conn
        else:
            conn.close()
    return found
