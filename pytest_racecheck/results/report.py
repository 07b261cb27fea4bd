"""Reports for machines and CI pages: the session's JSON document, the summary table's rows.

The plugin collects one row per race, ``(test id, verdict, summary)``, where the summary is
:meth:`RaceResult.summary` (plain data that crossed pytest-xdist's wire). Everything here works
on those rows only, so the terminal table, the GitHub step summary and the JSON report agree,
and this module needs neither pytest nor a race to be tested. The JSON layout is documented by
``docs/report.schema.json``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

FORMAT = "pytest-racecheck-report"
VERSION = 1
"""Raised when a field changes meaning or goes away; new fields do not raise it."""

Row = tuple[str, str, dict[str, Any]]
"""A race as the plugin saw it: test id, the test's verdict, the race's summary."""

COLUMNS = ("test", "verdict", "rounds", "racers", "time", "most frequent outcome")


def _plugin_version() -> str | None:
    try:
        return importlib.metadata.version("pytest-racecheck")
    except importlib.metadata.PackageNotFoundError:
        return None


def top_outcome(verdict: str, race: dict[str, Any]) -> str:
    """The outcome to show for a race: for a race that did not pass, its most frequent
    failing outcome, since a passing one would hide why it failed."""
    failing = race.get("failing_histogram") or []
    if verdict != "passed" and failing:
        key, n = failing[0]
        return f"{key}  ({n}x, fails)"
    hist = race.get("histogram") or []
    if not hist:
        return "-"
    key, n = hist[0]
    return f"{key}  ({n}x)"


def rounds_cell(race: dict[str, Any]) -> str:
    """Rounds run of those asked for; an explored race says what its search covered."""
    budget = race.get("budget_s")
    ran = (
        f"{race['rounds']} in {budget:g}s"
        if budget
        else f"{race['rounds']}/{race['rounds_requested']}"
    )
    if race.get("mode") != "explore":
        return ran
    unreduced = race.get("without_reduction")
    saved = f" ({unreduced} without reduction)" if unreduced else ""
    if race.get("exhausted"):
        return f"{race['rounds']} interleavings, exhausted{saved}"
    parts = [f"{ran} interleavings{saved}"]
    if race.get("every_order"):
        parts.append("every order")
    if race.get("timing_dependent"):
        parts.append(f"{race['timing_dependent']} timing-dependent")
    parts.append(f"seed {race.get('seed')}")
    return ", ".join(parts)


def shared_prefix(test_ids: Sequence[str]) -> str:
    """The directory part every test id shares, cut at a "/" (ids are not paths)."""
    shared = os.path.commonprefix(list(test_ids))  # noqa: RUF071 - ids are not paths
    return shared[: shared.rfind("/", 0, max(shared.find("::"), 0) or None) + 1]


def table_rows(rows: Iterable[Row], shared: str = "") -> list[tuple[str, ...]]:
    """The summary table's cells, header first: one line per race."""
    table: list[tuple[str, ...]] = [COLUMNS]
    for test_id, verdict, race in rows:
        shown = verdict
        if race.get("status") == "broke down":
            shown = f"{verdict} (race broke down)"
        elif race.get("status") == "interrupted":
            shown = "interrupted"
        table.append(
            (
                test_id[len(shared) :],
                shown,
                rounds_cell(race),
                str(race["processes"]),
                f"{race['elapsed_s']:.2f}s",
                top_outcome(verdict, race),
            )
        )
    return table


def markdown(rows: Sequence[Row]) -> str:
    """The summary table in GitHub-flavoured Markdown (for ``$GITHUB_STEP_SUMMARY``)."""
    shared = shared_prefix([r[0] for r in rows])
    table = table_rows(rows, shared)

    def line(cells: Sequence[str]) -> str:
        escaped = (c.replace("|", "\\|").replace("\n", " ") for c in cells)
        return "| " + " | ".join(escaped) + " |"

    lines = [f"### racecheck summary {shared}".rstrip(), "", line(table[0])]
    lines.append("|" + "|".join("---" for _ in table[0]) + "|")
    lines.extend(line([f"`{r[0]}`", *r[1:]]) for r in table[1:])
    return "\n".join(lines) + "\n"


def race_entry(test_id: str, verdict: str, race: dict[str, Any]) -> dict[str, Any]:
    """One race in the JSON report."""
    return {
        "test_id": test_id,
        "verdict": verdict,
        "status": race.get("status", "ran"),
        "fn": race.get("fn"),
        "rounds_run": race["rounds"],
        "rounds_requested": race["rounds_requested"],
        "racers": race["processes"],
        "replicas": race.get("replicas", 1),
        "start_method": race.get("start_method"),
        "mode": race.get("mode", "stress"),
        "seed": race.get("seed"),
        "search": race.get("search"),
        "exhausted": bool(race.get("exhausted", False)),
        "without_reduction": race.get("without_reduction"),
        "explored": race.get("explored"),
        "every_order": bool(race.get("every_order", False)),
        "timing_dependent": race.get("timing_dependent", 0),
        "overlaps_held": race.get("overlaps_held", 0),
        "unheld_points": race.get("unheld_points", 0),
        "budget_s": race.get("budget_s"),
        "histogram": [{"outcome": k, "rounds": n} for k, n in race.get("histogram") or []],
        "distinct_outcomes": race.get("distinct_outcomes", len(race.get("histogram") or [])),
        "failing_histogram": [
            {"outcome": k, "rounds": n} for k, n in race.get("failing_histogram") or []
        ],
        "failing_rounds": race.get("failing_rounds", 0),
        "first_failure": race.get("first_failure"),
        "failing_schedule": race.get("failing_schedule"),
        "targets_reached": race.get("targets_reached") or {},
        "isolation": race.get("isolation"),
        "timings": race.get("timings") or {"elapsed_s": race.get("elapsed_s", 0.0)},
    }


def build(rows: Iterable[Row], now: datetime.datetime | None = None) -> dict[str, Any]:
    """The session's report: every race, and how many races each verdict got."""
    races = [race_entry(*row) for row in rows]
    verdicts: dict[str, int] = {}
    for race in races:
        verdicts[race["verdict"]] = verdicts.get(race["verdict"], 0) + 1
    created = now or datetime.datetime.now(datetime.timezone.utc)
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": created.isoformat(timespec="seconds"),
        "plugin_version": _plugin_version(),
        "verdicts": verdicts,
        "races": races,
    }


def write(path: Path, report: dict[str, Any]) -> None:
    """Write the report whole or not at all: a reader never sees half a file."""
    write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a file whole or not at all (the JSON report, the HTML page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def flat_properties(race: dict[str, Any], number: int) -> list[tuple[str, Any]]:
    """``racecheck_*`` JUnit properties with plain values (``racecheck_2_*`` for a test's
    second race): what CI pages show from a JUnit XML file."""
    prefix = "racecheck_" if number == 1 else f"racecheck_{number}_"
    hist = race.get("histogram") or []
    failing = race.get("failing_histogram") or []
    values: dict[str, Any] = {
        "fn": race.get("fn"),
        "status": race.get("status"),
        "racers": race["processes"],
        "rounds": race["rounds"],
        "rounds_requested": race["rounds_requested"],
        "start_method": race.get("start_method"),
        "mode": race.get("mode"),
        "seed": race.get("seed"),
        "search": race.get("search"),
        "exhausted": race.get("exhausted") if race.get("mode") == "explore" else None,
        "every_order": race.get("every_order") if race.get("mode") == "explore" else None,
        "timing_dependent": (
            race.get("timing_dependent") if race.get("mode") == "explore" else None
        ),
        "budget_s": race.get("budget_s"),
        "elapsed_s": race.get("elapsed_s"),
        "startup_s": race.get("startup_s"),
        "most_frequent_outcome": hist[0][0] if hist else None,
        "most_frequent_failing_outcome": failing[0][0] if failing else None,
        "failing_rounds": race.get("failing_rounds") or None,
        "failing_schedule": (
            json.dumps(race["failing_schedule"]) if race.get("failing_schedule") else None
        ),
    }
    return [(prefix + k, v) for k, v in values.items() if v is not None]
