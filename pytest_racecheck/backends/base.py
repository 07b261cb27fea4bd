"""The handle API shared by every backend.

A handle carries only an address (a path, a connection string), so it pickles into racer
processes; every process opens its own connections from it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

_shared: dict[tuple[int, int, Database], Any] = {}
"""One open connection per process, thread and database, for the convenience methods.

Opening a connection per call costs more than the statement (SQLite checkpoints its WAL when
the last connection closes); the handle itself stays a plain address, so it still pickles.
"""


class Database(ABC):
    """A database that every racer and the test process can reach.

    The convenience methods share one autocommit connection per process: they are meant for
    schema set-up, ``reset`` and ``check``, not for the code under test, which opens its own.
    """

    backend: ClassVar[str]

    @property
    @abstractmethod
    def url(self) -> str:
        """SQLAlchemy-style URL, for code under test that takes one."""

    @abstractmethod
    def connect(self) -> Any:
        """A new connection in autocommit mode: transactions are begun explicitly."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (an empty list for statements without rows)."""
        cur = self.shared_connection().execute(sql, params)
        rows = cur.fetchall() if cur.description is not None else []
        return [tuple(row) for row in rows]

    def shared_connection(self) -> Any:
        """This process's connection for the convenience methods, opened on first use."""
        key = (os.getpid(), threading.get_ident(), self)
        conn = _shared.get(key)
        if conn is None:
            conn = _shared[key] = self.connect()
        return conn

    def close(self) -> None:
        """Close this process's shared connections, if any (fixtures do at teardown)."""
        pid = os.getpid()
        for key in [k for k in _shared if k[0] == pid and k[2] == self]:
            conn = _shared.pop(key)
            # sqlite3 refuses a close from another thread; the garbage collector closes it.
            with contextlib.suppress(Exception):
                conn.close()

    @abstractmethod
    def executescript(self, sql: str) -> None:
        """Run several statements separated by semicolons (a schema, say)."""

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None
