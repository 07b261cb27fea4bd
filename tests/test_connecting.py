"""A racer waiting for its PostgreSQL server is not blocked by another racer.

Under load a server may take many milliseconds to accept a connection or to pick up a query.
A racer asleep on its socket meanwhile looks, to the kernel, exactly like one waiting for a
lock held by another racer. Counting it as blocked let a schedule run on without it, so a
replay could skip a step on a loaded machine. So a racer says when it starts to connect
(``Connecting``) and reports its backend pid as soon as the connection exists, and the idle
probe leaves a racer on its socket to the database.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pytest_racecheck import statements
from pytest_racecheck.controller.blocking import IdleProbe, RacerView
from pytest_racecheck.linux.procfs import available as procfs_available

psycopg = pytest.importorskip("psycopg")


def test_connect_announces_itself_and_reports_the_pid_before_any_statement(
    postgres_db, rec
) -> None:
    with psycopg.connect(postgres_db.dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT 1")
    assert rec.events == ["connecting", pid, "SELECT"]


def test_async_connect_too(postgres_db, rec) -> None:
    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(postgres_db.dsn, autocommit=True) as c:
            await c.execute("SELECT 1")
            return c.info.backend_pid

    pid = asyncio.run(run())
    assert rec.events == ["connecting", pid, "SELECT"]


def test_uninstall_restores_connect() -> None:
    def current() -> tuple[object, ...]:
        return (
            vars(psycopg.Connection)["connect"],
            vars(psycopg.AsyncConnection)["connect"],
            vars(psycopg)["connect"],
        )

    originals = current()
    statements.install()
    try:
        assert all(a is not b for a, b in zip(current(), originals, strict=True))
    finally:
        statements.uninstall()
    assert current() == originals


@pytest.fixture
def waiting_for_a_server() -> Iterator[int]:
    """A real process whose psycopg connect waits on a server that accepts and never answers
    (what a server too busy to answer looks like from the client)."""
    if not procfs_available():
        pytest.skip("needs Linux /proc")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            "import psycopg, sys\n"
            "psycopg.connect(host='127.0.0.1', port=int(sys.argv[1]), user='u', dbname='d',"
            " connect_timeout=120)\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code, str(port)])
        try:
            conn, _ = listener.accept()  # it connected: now it waits for our answer
            with conn:
                yield child.pid
        finally:
            child.kill()
            child.wait()


def _verdicts(view: RacerView, probe: IdleProbe, seconds: float = 0.3) -> set[bool]:
    """Every answer the probe gives about ``view`` over ``seconds`` of looking."""
    answers: set[bool] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        answers.add(view.index in probe.blocked([view]))
        time.sleep(0.005)
    return answers


def test_a_racer_waiting_for_its_server_is_left_to_the_database(waiting_for_a_server) -> None:
    pid = waiting_for_a_server
    # The negative control: nothing says it talks to PostgreSQL, so it looks blocked.
    assert True in _verdicts(RacerView(0, pid), IdleProbe())
    # While it connects, it waits for the server, not for a racer.
    assert _verdicts(RacerView(0, pid, connecting=True), IdleProbe()) == {False}
    # With known backends, the database judges it where a probe asks that server...
    known = RacerView(0, pid, backend_pids=frozenset({4242}))
    assert _verdicts(known, IdleProbe(postgres_judges=True)) == {False}
    # ...and the idle probe still does where none does (a database the race was not given).
    assert True in _verdicts(known, IdleProbe(postgres_judges=False))
