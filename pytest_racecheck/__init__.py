"""pytest-racecheck: cross-process race conditions, made testable."""

from pytest_racecheck.points import point

__all__ = ["point"]
