"""What a race's racers did at its isolation level: the levels their code named itself, the
transactions the database refused, as report data and as lines of a failure's message.

The level itself is set by :mod:`pytest_racecheck.controller.isolation`, which records it on
the result (:attr:`RaceResult.isolation`); names and refusals are
:mod:`pytest_racecheck.wire.isolation`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pytest_racecheck.wire.isolation import REFUSALS, refusal

if TYPE_CHECKING:
    from pytest_racecheck.results.result import RaceResult

_NAMED = re.compile(
    r"\b(?:BEGIN|START\s+TRANSACTION|SET\s+(?:SESSION\s+CHARACTERISTICS\s+AS\s+)?TRANSACTION)"
    r"\b[^;]*?\bISOLATION\s+LEVEL\s+(READ\s+UNCOMMITTED|READ\s+COMMITTED|REPEATABLE\s+READ|"
    r"SERIALIZABLE)",
    re.IGNORECASE,
)
_DEFAULT_SET = re.compile(
    r"\bSET\s+(?:SESSION\s+)?default_transaction_isolation\s*(?:=|TO)\s*'?([a-z ]+)",
    re.IGNORECASE,
)


def levels_named(sql: str | None) -> list[str]:
    """The isolation levels a statement names for its own transactions."""
    if not sql:
        return []
    found = [" ".join(m.group(1).lower().split()) for m in _NAMED.finditer(sql)]
    found += [" ".join(m.group(1).lower().split()) for m in _DEFAULT_SET.finditer(sql)]
    return found


def named_in(rounds: Iterable[Any]) -> list[str]:
    """Every level the racers' statements named, in the rounds whose steps were kept."""
    seen: list[str] = []
    for rnd in rounds:
        for outcome in rnd.outcomes:
            for step in outcome.steps:
                for level in levels_named(step.sql):
                    if level not in seen:
                        seen.append(level)
    return seen


def refused_counts(rounds: Iterable[Any]) -> tuple[dict[str, int], int]:
    """How many racers the database refused, per kind, and in how many rounds."""
    counts: dict[str, int] = {}
    in_rounds = 0
    for rnd in rounds:
        kinds = [k for o in rnd.outcomes if (k := refusal(o.error)) is not None]
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
        in_rounds += bool(kinds)
    return counts, in_rounds


def summary(result: RaceResult) -> dict[str, Any] | None:
    """The race's isolation data for the JSON report: the level set (or None), the levels the
    code named itself, and what the database refused."""
    rounds = list(result._rounds)
    counts, in_rounds = refused_counts(rounds)
    info = dict(result.isolation or {})
    if not info and not counts:
        return None
    return {
        "level": info.get("level"),
        "source": info.get("source"),
        "databases": info.get("databases", []),
        "note": info.get("note"),
        "named_by_code": info.get("named_by_code", []),
        "statements_seen": info.get("statements_seen", False),
        "refused": counts,
        "refused_rounds": in_rounds,
        "wrong_result_rounds": sum(1 for r in rounds if not r.check_held),
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def failure_text(result: RaceResult) -> str:
    """Lines for a failed assertion's message: the level, the levels the code named itself,
    and the racers the database refused apart from the wrong results."""
    data = summary(result)
    if data is None:
        return ""
    lines = []
    if data["level"] is not None:
        where = ", ".join(data["databases"])
        where = f" on {where}" if where else (f"; {data['note']}" if data["note"] else "")
        lines.append(f"isolation: {data['level']} (set by {data['source']}{where})")
    if data["named_by_code"]:
        lines.append(
            "isolation named by the code itself, which keeps it: "
            + ", ".join(data["named_by_code"])
        )
    if data["refused"]:
        kinds = ", ".join(
            f"{_plural(n, kind)} (SQLSTATE {REFUSALS[kind]})"
            for kind, n in sorted(data["refused"].items())
        )
        lines.append(
            f"refused by the database: the code needs a retry loop: {kinds} in "
            f"{_plural(data['refused_rounds'], 'round')}; wrong results (check() did not "
            f"hold): {_plural(data['wrong_result_rounds'], 'round')}. Allow them with "
            "allowed=[pytest_racecheck.SerializationFailure] (or DeadlockDetected, "
            "RefusedByDatabase) once the code retries"
        )
    return "".join("\n" + line for line in lines)


def recorded(rounds: Iterable[Any], plan: dict[str, Any], mode: str) -> dict[str, Any]:
    """The race's level for :attr:`RaceResult.isolation`: the plan's level, source and
    databases, with the levels its code named itself where its statements were seen (explore
    mode, schedules, sync points; stress rounds see none)."""
    rounds = list(rounds)
    seen = any(o.steps for r in rounds for o in r.outcomes)
    return {
        **plan,
        "named_by_code": named_in(rounds) if seen else [],
        "statements_seen": seen,
        "mode": mode,
    }
