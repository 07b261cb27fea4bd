"""Sync points: named places in code under test where the controller can hold a racer."""

from __future__ import annotations


def point(name: str) -> None:
    """Mark a sync point. Outside a race this returns at once and does nothing."""
