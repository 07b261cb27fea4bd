"""Hermitage's anomaly catalogue, with the weakest PostgreSQL level that prevents each.

:mod:`pytest_racecheck.results.anomaly` names an anomaly by its shape; this module gives its
code in M. Kleppmann's Hermitage (github.com/ept/hermitage) and the level that would have
prevented it, or says that no level can (the statements were not in one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_racecheck.wire.isolation import LEVELS, READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE


@dataclass(frozen=True)
class Anomaly:
    code: str
    name: str
    prevented_by: str
    """The weakest PostgreSQL level that prevents it (Hermitage's PostgreSQL column)."""


HERMITAGE: tuple[Anomaly, ...] = (
    Anomaly("G0", "write cycles (dirty write)", READ_COMMITTED),
    Anomaly("G1a", "aborted reads (dirty read)", READ_COMMITTED),
    Anomaly("G1b", "intermediate reads (dirty read)", READ_COMMITTED),
    Anomaly("G1c", "circular information flow (dirty read)", READ_COMMITTED),
    Anomaly("OTV", "observed transaction vanishes", READ_COMMITTED),
    Anomaly("PMP", "predicate-many-preceders", REPEATABLE_READ),
    Anomaly("P4", "lost update", REPEATABLE_READ),
    Anomaly("G-single", "read skew (single anti-dependency cycle)", REPEATABLE_READ),
    Anomaly("G2-item", "write skew", SERIALIZABLE),
    Anomaly("G2", "anti-dependency cycles (phantom, predicate write skew)", SERIALIZABLE),
)
"""M. Kleppmann's Hermitage (github.com/ept/hermitage): PostgreSQL prevents G0 to OTV at
every level, PMP, P4 and G-single from repeatable read, G2-item and G2 only at serializable."""
BY_CODE = {a.code: a for a in HERMITAGE}

# The names anomaly.py gives, in Hermitage's words.
FOR_NAME = {
    "lost update": "P4",
    "write skew": "G2-item",
    "phantom": "G2",
    "stale read": "G-single",
}


def hermitage(name: str, one_transaction: bool) -> dict[str, Any]:
    """Hermitage's code for an anomaly anomaly.py named, and the weakest PostgreSQL level
    that prevents it. ``one_transaction``: the reads and writes that make it were, racer by
    racer, in one transaction; if not, no isolation level can help (each statement is a
    transaction of its own), and ``prevented_by`` says what does."""
    code = FOR_NAME.get(name)
    if code is None:
        return {"hermitage": None, "prevented_by": None}
    if not one_transaction:
        return {
            "hermitage": code,
            "prevented_by": "no isolation level: the reads and writes are in separate "
            "transactions; make them one transaction (or take a lock)",
        }
    return {"hermitage": code, "prevented_by": BY_CODE[code].prevented_by}


def hermitage_line(anomaly: dict[str, Any]) -> str:
    """The terminal's line under a named anomaly: its code and what prevents it; "" when
    Hermitage has no code for it."""
    if not anomaly.get("hermitage"):
        return ""
    prevented = anomaly["prevented_by"]
    if prevented in LEVELS:
        prevented = f"prevented by {prevented} on PostgreSQL (or a lock)"
    return f"\nHermitage {anomaly['hermitage']}: {prevented}"
