"""The handle API shared by every backend.

A handle carries only an address (a path, a connection string), so it pickles into racer
processes; every process opens its own connections from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar


class Database(ABC):
    """A database that every racer and the test process can reach.

    The convenience methods open a short-lived autocommit connection per call: they are meant
    for schema set-up, ``reset`` and ``check``, not for the code under test.
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
        conn = self.connect()
        try:
            cur = conn.execute(sql, params)
            rows = cur.fetchall() if cur.description is not None else []
            return [tuple(row) for row in rows]
        finally:
            conn.close()

    @abstractmethod
    def executescript(self, sql: str) -> None:
        """Run several statements separated by semicolons (a schema, say)."""

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None
