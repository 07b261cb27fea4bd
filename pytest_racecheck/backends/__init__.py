"""Database handles that racers can share: picklable addresses, never open connections."""

from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase

__all__ = ["Database", "SqliteDatabase"]
