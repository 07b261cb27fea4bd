"""Temporary SQLite databases.

SQLite is opened with ``isolation_level=None`` so that Python's ``sqlite3`` never begins or
commits on its own: what the code writes (``BEGIN IMMEDIATE``, ``COMMIT``) is what SQLite does.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pytest_racecheck.backends.base import Database

JOURNAL_MODES = ("delete", "truncate", "persist", "memory", "wal", "off")


@dataclass(frozen=True)
class SqliteDatabase(Database):
    """A SQLite database file; ``busy_timeout`` (seconds) applies to every connection it opens."""

    path: str
    busy_timeout: float = 5.0
    journal_mode: str = "wal"

    backend: ClassVar[str] = "sqlite"

    @classmethod
    def create(cls, path: Path | str, *, journal_mode: str = "wal", busy_timeout: float = 5.0):
        """Make a new, empty database file with the given journal mode."""
        mode = journal_mode.lower()
        if mode not in JOURNAL_MODES:
            raise ValueError(
                f"unknown SQLite journal mode {journal_mode!r}: "
                f"use one of {', '.join(JOURNAL_MODES)}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        db = cls(path=str(path), busy_timeout=busy_timeout, journal_mode=mode)
        conn = db.connect()
        try:
            conn.execute(f"PRAGMA journal_mode={mode}")
        finally:
            conn.close()
        return db

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)

    def executescript(self, sql: str) -> None:
        self.shared_connection().executescript(sql)

    def files(self) -> list[Path]:
        """The database file and its journal or WAL companions, where present."""
        base = Path(self.path)
        candidates = [base, *(base.with_name(base.name + s) for s in ("-wal", "-shm", "-journal"))]
        return [p for p in candidates if p.exists()]
